"""The search space: malformed files get one clear line (exit 2), ints and logs map fairly."""
from __future__ import annotations

import math
import os
import re
import socket
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from autofinetune.errors import SpaceError
from autofinetune import space as space_module
from autofinetune.space import NAME_RULE, SearchSpace, load_space
from conftest import run_cli

GOOD = {"name": "lr", "type": "float", "init_value": 0.01, "greater_than": 0.001, "lower_than": 0.1}

# (case id, yaml text, words the one-line error must contain)
MALFORMED = [
    ("missing_param_list", "params:\n- name: lr\n", ["param_list", "missing"]),
    ("not_a_list", "param_list: {name: lr}\n", ["param_list", "must be a list"]),
    ("empty_list", "param_list: []\n", ["param_list", "empty"]),
    ("missing_field", "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: 0.001}\n", ["param_list[0]", "(lr)", "lower_than", "missing"]),
    ("missing_name", "param_list:\n- {type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1}\n", ["param_list[0]", "'name'"]),
    ("unknown_type", "param_list:\n- {name: lr, type: double, init_value: 0.01, greater_than: 0.001, lower_than: 0.1}\n", ["(lr)", "'type'", "double", "int, float"]),
    ("non_numeric_bound", "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: low, lower_than: 0.1}\n", ["(lr)", "greater_than", "number"]),
    ("bounds_reversed", "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: 0.1, lower_than: 0.001}\n", ["(lr)", "greater_than", "lower_than", "below"]),
    ("bounds_equal", "param_list:\n- {name: n, type: int, init_value: 3, greater_than: 3, lower_than: 3}\n", ["(n)", "greater_than", "below"]),
    ("init_outside", "param_list:\n- {name: lr, type: float, init_value: 0.5, greater_than: 0.001, lower_than: 0.1}\n", ["(lr)", "init_value", "outside"]),
    ("duplicate_names", "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1}\n- {name: lr, type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1}\n", ["param_list[1]", "(lr)", "duplicates"]),
    ("invalid_name", "param_list:\n- {name: 'learning rate', type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1}\n", ["param_list[0]", "name", "not a valid option name"]),
    ("dash_name", "param_list:\n- {name: '--lr', type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1}\n", ["param_list[0]", "not a valid option name"]),
    ("reserved_name", "param_list:\n- {name: saved_params_dir, type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1}\n", ["saved_params_dir", "reserved"]),
    ("yaml_syntax", "param_list:\n- name: lr\n  type: [float\n  init_value: 1\n", ["YAML syntax error", "line"]),
    ("entry_not_mapping", "param_list:\n- lr\n", ["param_list[0]", "mapping"]),
    ("int_fractional_bound", "param_list:\n- {name: n, type: int, init_value: 3, greater_than: 1.5, lower_than: 9}\n", ["(n)", "greater_than", "whole number"]),
    ("bool_bound", "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: true, lower_than: 0.1}\n", ["(lr)", "greater_than", "number"]),
    ("log_nonpositive", "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: 0, lower_than: 0.1, log: true}\n", ["(lr)", "log", "> 0"]),
    ("log_not_bool", "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1, log: yes please}\n", ["(lr)", "'log'", "true or false"]),
    ("choice_without_values", "param_list:\n- {name: opt, type: choice, init_value: adam}\n", ["(opt)", "values", "missing"]),
    ("choice_init_not_listed", "param_list:\n- {name: opt, type: choice, init_value: rmsprop, values: [adam, sgd]}\n", ["(opt)", "init_value", "not one of"]),
    ("choice_empty_values", "param_list:\n- {name: opt, type: choice, init_value: adam, values: []}\n", ["(opt)", "values", "non-empty"]),
    ("choice_with_bounds", "param_list:\n- {name: opt, type: choice, init_value: adam, values: [adam, sgd], lower_than: 3}\n", ["(opt)", "lower_than", "does not apply"]),
    ("unknown_field", "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1, upper: 3}\n", ["(lr)", "unknown field", "upper"]),
]


@pytest.mark.parametrize("case, text, words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_yaml_one_line_exit_2(tmp_path: Path, case: str, text: str, words: list):
    (tmp_path / "hparam.yaml").write_text(text)
    (tmp_path / "train.py").write_text("print('never run')\n")
    result = run_cli(["train.py", "--param_file=hparam.yaml", f"--output_dir={tmp_path / 'out'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "hparam.yaml" in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "out").exists(), "nothing may be written for a bad space"


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    path = tmp_path / "h.yaml"
    path.write_text("param_list:\n- name: lr\n  type: float\n  init_value: [0.01\n")
    with pytest.raises(SpaceError, match=r"line [45]"):
        SearchSpace.from_yaml(path)


def test_missing_param_file(tmp_path: Path):
    (tmp_path / "train.py").write_text("")
    result = run_cli(["train.py", "--param_file=nope.yaml"], cwd=tmp_path)
    assert result.returncode == 2 and "nope.yaml" in result.stderr and "no such file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_integer_equally_reachable_including_upper_bound():
    space = SearchSpace.from_list([{"name": "n", "type": "int", "init_value": 30, "greater_than": 30, "lower_than": 40}])
    grid = np.linspace(0.0, 1.0, 110001)
    counts = Counter(space.decode([u])["n"] for u in grid)
    assert sorted(counts) == list(range(30, 41))
    assert max(counts.values()) - min(counts.values()) <= 2
    assert all(isinstance(v, int) for v in counts)


def test_round_trip_of_each_type():
    space = SearchSpace.from_list([
        {"name": "lr", "type": "float", "init_value": 0.01, "greater_than": 1e-5, "lower_than": 1.0, "log": True},
        {"name": "bs", "type": "int", "init_value": 64, "greater_than": 8, "lower_than": 512, "log": True},
        {"name": "layers", "type": "int", "init_value": 2, "greater_than": 1, "lower_than": 6},
        {"name": "opt", "type": "choice", "init_value": "sgd", "values": ["adam", "sgd", 0.5]},
        {"name": "wd", "type": "float", "init_value": 0.0, "greater_than": 0.0, "lower_than": 0.1},
    ])
    init = space.decode(space.init_unit())
    assert init["bs"] == 64 and init["layers"] == 2 and init["opt"] == "sgd" and init["wd"] == 0.0
    assert math.isclose(init["lr"], 0.01)
    for value in range(8, 513):
        assert space.params[1].from_unit(space.params[1].to_unit(value)) == value
    assert space.decode([1.0, 1.0, 1.0, 1.0, 1.0]) == {"lr": 1.0, "bs": 512, "layers": 6, "opt": 0.5, "wd": 0.1}
    assert space.decode([0.0] * 5) == {"lr": 1e-5, "bs": 8, "layers": 1, "opt": "adam", "wd": 0.0}


def test_log_float_is_log_uniform():
    param = SearchSpace.from_list([{"name": "lr", "type": "float", "init_value": 0.01, "greater_than": 1e-4, "lower_than": 1.0, "log": True}]).params[0]
    assert math.isclose(param.from_unit(0.5), 1e-2)
    assert math.isclose(param.from_unit(0.25), 1e-3)


def test_argv_formats_values():
    space = SearchSpace.from_list([GOOD, {"name": "opt", "type": "choice", "init_value": "adam", "values": ["adam", "sgd"]}])
    assert space.argv({"lr": 0.01, "opt": "sgd"}) == ["--lr=0.01", "--opt=sgd"]


def test_old_files_unchanged_fingerprint_and_types():
    text = textwrap.dedent("""
        param_list:
        - name : learning_rate
          init_value : 0.001
          type : float
          lower_than : 0.05
          greater_than : 0.000005
        - name : batch_size
          init_value : 32
          type : int
          lower_than : 40
          greater_than : 30
    """)
    import yaml
    space = SearchSpace.from_list(yaml.safe_load(text)["param_list"])
    assert [p.kind for p in space.params] == ["float", "int"]
    assert not any(p.log for p in space.params)
    assert space.decode(space.init_unit()) == {"learning_rate": 0.001, "batch_size": 32}


# ---- hostile input (issue 11): every class ends in one short line, exit 2, quickly, nothing written


def _assert_refused(result, tmp_path: Path, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert len(lines[0]) < 400, lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "out").exists(), "nothing may be written for a bad space"
    return lines[0]


def _run(tmp_path: Path, param_file: str):
    (tmp_path / "train.py").write_text("print('never run')\n")
    return run_cli(["train.py", f"--param_file={param_file}", f"--output_dir={tmp_path / 'out'}"], cwd=tmp_path, timeout=20)


def _fifo(tmp_path: Path) -> str:
    os.mkfifo(tmp_path / "h.yaml")  # nobody ever writes: a blocking open or read would hang
    return "h.yaml"


def _socket(tmp_path: Path) -> str:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "h.yaml"))
    return "h.yaml"


def _symlink_loop(tmp_path: Path) -> str:
    os.symlink("h.yaml", tmp_path / "h.yaml")
    return "h.yaml"


def _through_a_file(tmp_path: Path) -> str:
    (tmp_path / "h.yaml").write_text(OK_TEXT)
    return "h.yaml/inner.yaml"


def _too_big(tmp_path: Path) -> str:
    (tmp_path / "h.yaml").write_text(OK_TEXT + "#" * (2 << 20) + "\n")  # valid YAML, just too big
    return "h.yaml"


def _not_utf8(tmp_path: Path) -> str:
    (tmp_path / "h.yaml").write_bytes(OK_TEXT.encode() + b"# caf\xe9\n")
    return "h.yaml"


OK_TEXT = "param_list:\n- {name: lr, type: float, init_value: 0.01, greater_than: 0.001, lower_than: 0.1}\n"

UNREADABLE = [
    ("fifo", _fifo, ["h.yaml", "FIFO", "regular file"]),
    ("dev_zero", lambda tmp: "/dev/zero", ["/dev/zero", "character device", "regular file"]),
    ("directory", lambda tmp: ".", ["directory", "regular file"]),
    ("socket", _socket, ["h.yaml", "cannot be opened"]),
    ("name_too_long", lambda tmp: "x" * 300 + ".yaml", ["...", ".yaml", "cannot be opened"]),
    ("symlink_loop", _symlink_loop, ["h.yaml", "symbolic links"]),
    ("through_a_file", _through_a_file, ["h.yaml/inner.yaml", "Not a directory"]),
    ("too_big", _too_big, ["h.yaml", "too big"]),
    ("not_utf8", _not_utf8, ["h.yaml", "UTF-8", "line 3"]),
]


@pytest.mark.parametrize("case, make, words", UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_unreadable_param_file_refused_at_once(tmp_path: Path, case: str, make, words: list):
    param_file = make(tmp_path)
    started = time.monotonic()
    result = _run(tmp_path, param_file)
    assert time.monotonic() - started < 15
    _assert_refused(result, tmp_path, *words)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_permissions_refused(tmp_path: Path):
    path = tmp_path / "h.yaml"
    path.write_text(OK_TEXT)
    path.chmod(0)
    _assert_refused(_run(tmp_path, "h.yaml"), tmp_path, "h.yaml", "Permission denied")


def _bomb(levels: int = 9) -> str:
    """The 'billion laughs' file: a few hundred bytes that stand for 9**9 strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nparam_list: *a{levels - 1}\n"


def _entry(**fields) -> str:
    base = {"name": "x", "type": "float", "init_value": "0.5", "greater_than": "0.0", "lower_than": "1.0"}
    base.update(fields)
    return "- {" + ", ".join(f"{k}: {v}" for k, v in base.items() if v is not None) + "}\n"


def _choice(values: str, init: str = "a") -> str:
    return f"param_list:\n- {{name: c, type: choice, init_value: {init}, values: {values}}}\n"


HOSTILE = [
    # YAML that PyYAML would accept silently, or slowly
    ("duplicate_field", "param_list:\n- name: x\n  type: float\n  init_value: 0.5\n  greater_than: 0.0\n  lower_than: 1.0\n  lower_than: 2.0\n",
     ["duplicate key 'lower_than'", "line 7", "line 6"]),
    ("duplicate_field_flow", "param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0.0, lower_than: 1.0, lower_than: 2.0}\n",
     ["duplicate key 'lower_than'", "line 2"]),
    ("duplicate_param_list", OK_TEXT + OK_TEXT, ["duplicate key 'param_list'", "line 3"]),
    ("alias_bomb", _bomb(), ["alias", "line 2", "not accepted"]),
    ("one_alias", "base: &b 0.5\nparam_list:\n" + _entry(init_value="*b"), ["alias *b", "line 3"]),
    ("deep_nesting", _choice("[a, " + "[" * 200 + "]" * 200 + "]"), ["nested", "line 2"]),
    ("too_many_values", _choice("[a" + ", a" * 60000 + "]"), ["YAML values"]),
    ("int_5000_digits", "param_list:\n" + _entry(type="int", init_value="0", lower_than="9" * 5000), ["integer of 5000 characters", "line 2"]),
    ("base60_int", _choice("[a, " + "1:" * 100000 + "1]"), ["integer of", "line 2"]),
    # numbers
    ("exp_without_dot", "param_list:\n" + _entry(lower_than="1e30"), ["'lower_than'", "1.0e+30", "as text"]),
    ("exp_without_sign", "param_list:\n" + _entry(lower_than="1.0e3"), ["'lower_than'", "write it as 1000.0", "as text"]),
    ("exp_int", "param_list:\n" + _entry(type="int", init_value="1", lower_than="1e3"), ["'lower_than'", "write it as 1000"]),
    ("inf_bound", "param_list:\n" + _entry(lower_than=".inf"), ["'lower_than'", "finite"]),
    ("nan_init", "param_list:\n" + _entry(init_value=".nan"), ["'init_value'", "finite"]),
    ("int_400_digits", "param_list:\n" + _entry(type="int", init_value="0", lower_than="9" * 400), ["'lower_than'", "2**53", "digits"]),
    ("int_30_digits", "param_list:\n" + _entry(type="int", init_value="0", lower_than="1" + "0" * 29), ["'lower_than'", "2**53"]),
    ("float_1e308", "param_list:\n" + _entry(greater_than="-1.0e+308", lower_than="1.0e+308", init_value="0.0"), ["'greater_than'", "1.0e+300"]),
    ("float_huge_int_bound", "param_list:\n" + _entry(lower_than="1" + "0" * 400), ["'lower_than'", "1.0e+300"]),
    # choice values that cannot reach argv (or log_file.txt) intact
    ("nul_value", _choice('[a, "b\\0c"]'), ["(c)", "values[1]", "U+0000"]),
    ("newline_value", _choice('[a, "b\\nc"]'), ["(c)", "values[1]", "U+000A"]),
    ("line_separator_value", _choice('[a, "b\\u2028c"]'), ["values[1]", "U+2028"]),
    ("escape_value", _choice('[a, "\\e[31mred"]'), ["values[1]", "U+001B"]),
    ("huge_value", _choice("[a, " + "x" * 200_000 + "]"), ["values[1]", "200000 characters", "over 1000"]),
    ("int_equals_float", _choice("[1, 1.0]", init="1"), ["values[0]", "values[1]", "same option"]),
    ("int_equals_string", _choice("[1, '1']", init="1"), ["values[0]", "values[1]", "same option"]),
    ("float_equals_string", _choice("[0.5, '0.5']", init="0.5"), ["values[1]", "same option"]),
    ("date_value", _choice("[a, 2020-01-01]"), ["values[1]", "date", "quote"]),
    ("inf_value", _choice("[a, .inf]"), ["values[1]", "finite"]),
    ("argv_too_long", "param_list:\n" + "".join(f"- {{name: c{i}, type: choice, init_value: a, values: [a, {'v' * 900}]}}\n" for i in range(80)),
     ["command line", "over 65536"]),
    # names
    ("name_help", "param_list:\n" + _entry(name="help"), ["(help)", "help option"]),
    ("name_h", "param_list:\n" + _entry(name="h"), ["(h)", "help option"]),
    ("dash_underscore_twins", "param_list:\n" + _entry(name="batch_size") + _entry(name="batch-size"),
     ["param_list[1] (batch-size)", "param_list[0]", "'batch_size'", "one option"]),
    ("name_trailing_newline", "param_list:\n" + _entry(name='"lr\\n"'), ["param_list[0]", "not a valid option name", "letters, digits, '_', '-' and '.'"]),
    ("name_too_long", "param_list:\n" + _entry(name="x" * 5000), ["param_list[0]", "at most 100 characters"]),
    ("reserved_dashed", "param_list:\n" + _entry(name="saved-params-dir"), ["reserved"]),
    ("unknown_huge_field", "param_list:\n" + _entry(**{"y" * 900: "1"}), ["unknown field", "..."]),
]


@pytest.mark.parametrize("case, text, words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_param_file_one_short_line(tmp_path: Path, case: str, text: str, words: list):
    (tmp_path / "hparam.yaml").write_text(text)
    started = time.monotonic()
    result = _run(tmp_path, "hparam.yaml")
    assert time.monotonic() - started < 15
    _assert_refused(result, tmp_path, "hparam.yaml", *words)


def test_pure_python_loader_refuses_the_same(monkeypatch):
    """Without libyaml the pure-Python loader runs, and it accepts escapes libyaml refuses
    (a lone surrogate): the checks must not depend on which loader is installed."""
    import yaml

    monkeypatch.setattr(space_module, "_loader_base", lambda: yaml.SafeLoader)
    for text, word in [(_bomb(), "alias"), (OK_TEXT + OK_TEXT, "duplicate key 'param_list'"),
                       (_choice('[a, "b\\udc80"]'), "U+DC80"), (_choice("[a, " + "[" * 200 + "]" * 200 + "]"), "nested")]:
        with pytest.raises(SpaceError, match=re.escape(word)):
            SearchSpace.from_yaml(_write(text))


def _write(text: str) -> str:
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8")
    with handle:
        handle.write(text)
    return handle.name


class _Text(str):
    def __str__(self) -> str:
        return "sneaky\nvalue"


FROM_LIST = [
    ("nul", {"name": "c", "type": "choice", "init_value": "a", "values": ["a", "b\0"]}, "U+0000"),
    ("surrogate", {"name": "c", "type": "choice", "init_value": "a", "values": ["a", "b\udc80"]}, "U+DC80"),
    ("huge_string", {"name": "c", "type": "choice", "init_value": "a", "values": ["a", "x" * 10_000_000]}, "over 1000"),
    ("huge_int_value", {"name": "c", "type": "choice", "init_value": "a", "values": ["a", 10 ** 5000]}, "digits"),
    ("nested_value", {"name": "c", "type": "choice", "init_value": "a", "values": ["a", [[list(range(10 ** 6))]]]}, "values[1] is list"),
    ("object_value", {"name": "c", "type": "choice", "init_value": "a", "values": ["a", object()]}, "a object"),
    ("huge_int_bound", {"name": "n", "type": "int", "init_value": 0, "greater_than": 0, "lower_than": 10 ** 5000}, "2**53"),
    ("huge_float_bound_as_int", {"name": "x", "type": "float", "init_value": 0, "greater_than": 0, "lower_than": 10 ** 400}, "1.0e+300"),
    ("bool_name_key", {"name": "x", "type": "float", "init_value": 0, "greater_than": 0, "lower_than": 1, True: 1}, "unknown field True"),
    ("huge_unknown_key", {"name": "x", "type": "float", "init_value": 0, "greater_than": 0, "lower_than": 1, 10 ** 5000: 1}, "unknown field"),
    ("str_subclass", {"name": "c", "type": "choice", "init_value": "a", "values": ["a", _Text("b")]}, None),
    ("huge_name", {"name": "n" * 10_000_000, "type": "float", "init_value": 0, "greater_than": 0, "lower_than": 1}, "not a valid option name"),
    ("one_and_one_point_zero", {"name": "c", "type": "choice", "init_value": 1, "values": [1, 1.0]}, "same option"),
]


@pytest.mark.parametrize("case, entry, word", FROM_LIST, ids=[f[0] for f in FROM_LIST])
def test_python_api_gets_the_same_checks(case: str, entry: dict, word):
    started = time.monotonic()
    if word is None:  # accepted, but as what argv will really carry
        space = SearchSpace.from_list([entry])
        assert all(type(v) is str for v in space.params[0].values)
        assert space.argv({"c": space.params[0].values[1]}) == ["--c=b"]
        return
    with pytest.raises(SpaceError) as caught:
        SearchSpace.from_list([entry])
    message = str(caught.value)
    assert word in message, message
    assert len(message) < 400 and "\n" not in message, message
    assert time.monotonic() - started < 5


def test_python_api_refuses_what_is_not_a_list():
    for source in (5, None, {"name": "x"}, "".join):
        with pytest.raises(SpaceError, match="param_list"):
            load_space(source)
    looped: list = []
    looped.append(looped)
    with pytest.raises(SpaceError) as caught:
        load_space([{"name": "c", "type": "choice", "init_value": "a", "values": ["a", looped]}])
    assert len(str(caught.value)) < 400


EXTREMES = [
    {"name": "wide", "type": "float", "init_value": -1.0e300, "greater_than": -1.0e300, "lower_than": 1.0e300},
    {"name": "tiny", "type": "float", "init_value": 5e-324, "greater_than": 0.0, "lower_than": 5e-324},
    {"name": "logwide", "type": "float", "init_value": 1.0, "greater_than": 5e-324, "lower_than": 1.0e300, "log": True},
    {"name": "big", "type": "int", "init_value": 2 ** 53, "greater_than": -(2 ** 53), "lower_than": 2 ** 53},
    {"name": "logbig", "type": "int", "init_value": 1, "greater_than": 1, "lower_than": 2 ** 53, "log": True},
    {"name": "whole", "type": "int", "init_value": 3.0, "greater_than": -4.0, "lower_than": 9007199254740992.0},
]


def test_initial_point_finite_and_bounds_reached_at_the_extremes():
    space = SearchSpace.from_list(EXTREMES)
    unit = space.init_unit()
    assert np.all(np.isfinite(unit)) and np.all((unit >= 0) & (unit <= 1)), unit
    for p in space.params:
        for u in (0.0, 0.5, 1.0, unit[space.names.index(p.name)]):
            value = p.from_unit(u)
            assert math.isfinite(value) and p.low <= value <= p.high, (p.name, u, value)
        assert p.from_unit(0.0) == p.low and p.from_unit(1.0) == p.high
    assert isinstance(space.params[5].low, int) and space.params[5].high == 2 ** 53


def test_int_bounds_compared_exactly():
    """2**53 + 1 is not a float: compared through float it would pass as 2**53."""
    with pytest.raises(SpaceError, match=r"2\*\*53"):
        SearchSpace.from_list([{"name": "n", "type": "int", "init_value": 0, "greater_than": 0, "lower_than": 2 ** 53 + 1}])
    with pytest.raises(SpaceError, match="whole number"):
        SearchSpace.from_list([{"name": "n", "type": "int", "init_value": 0, "greater_than": 0, "lower_than": 10.5}])


def test_params_built_directly_keep_the_map_finite():
    from autofinetune.space import FloatParam, IntParam

    with pytest.raises(SpaceError, match="unit box"):
        FloatParam("x", 0.0, -1e308, 1e308)
    with pytest.raises(SpaceError, match="unit box"):
        IntParam("n", 0, 0, 2 ** 60)


def test_names_the_rule_allows_are_accepted():
    """The error message's rule and the pattern are one: what it lists works, the rest does not."""
    for name in ("learning_rate", "batch-size", "model.lr", "_x", "x" * 100):
        SearchSpace.from_list([dict(GOOD, name=name)])
    for name in ("1x", "-x", ".x", "x y", "x=y", "x\n", "x" * 101, ""):
        with pytest.raises(SpaceError, match=re.escape(NAME_RULE)):
            SearchSpace.from_list([dict(GOOD, name=name)])


def test_valid_space_fingerprint_unchanged():
    """Resume refuses a changed fingerprint: the stricter checks must not change it for a valid space."""
    space = SearchSpace.from_list([
        {"name": "lr", "type": "float", "init_value": 0.01, "greater_than": 1e-5, "lower_than": 1.0, "log": True},
        {"name": "batch-size", "type": "int", "init_value": 64, "greater_than": 8, "lower_than": 512},
        {"name": "opt", "type": "choice", "init_value": "sgd", "values": ["adam", "sgd", 0.5, 3]},
    ])
    assert space.fingerprint() == "953b50976483ec80"  # as computed by 0.1.0's space.py
