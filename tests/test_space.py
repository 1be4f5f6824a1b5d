"""The search space: malformed files get one clear line (exit 2), ints and logs map fairly."""
from __future__ import annotations

import math
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from autofinetune.errors import SpaceError
from autofinetune.space import SearchSpace
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
