"""Command-line errors are one clear line with exit code 2; the trial-side import stays light."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import HPARAM_3, run_cli


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("import autofinetune\nautofinetune.report_final_result(0.5)\n")
    (tmp_path / "hparam.yaml").write_text(HPARAM_3)
    (tmp_path / "one.yaml").write_text("param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n")
    return tmp_path


@pytest.mark.parametrize("args, words", [
    (["train.py", "--param_file=hparam.yaml", "max_seq_len"], ["odd count", "max_seq_len"]),
    (["train.py", "--param_file=hparam.yaml", "--tuning_strategy=bayes"], ["--tuning_strategy", "bayes", "pshe2"]),
    (["train.py", "--param_file=hparam.yaml", "--evaluator=random"], ["--evaluator", "random", "fulltrail"]),
    (["train.py", "--param_file=hparam.yaml", "--popsize=0"], ["--popsize=0", "at least 1"]),
    (["train.py", "--param_file=hparam.yaml", "--round=0"], ["--round=0", "at least 1"]),
    (["missing.py", "--param_file=hparam.yaml"], ["missing.py", "not found"]),
    (["train.py"], ["--param_file"]),
    (["train.py", "--param_file=hparam.yaml", "--popsize=abc"], ["--popsize", "abc"]),
    (["train.py", "--param_file=hparam.yaml", "--gpu=0,,1"], ["--gpu", "comma-separated"]),
    (["train.py", "--param_file=hparam.yaml", "--workers=0"], ["--workers", "at least 1"]),
    (["train.py", "--param_file=one.yaml", "--tuning_strategy=hazero"], ["HAZero", "two or more", "pshe2"]),
    (["train.py", "--param_file=hparam.yaml", "--backend=ray"], ["--backend", "ray", "dask"]),
    (["train.py", "--param_file=hparam.yaml", "--scheduler_address=tcp://127.0.0.1:1"], ["--scheduler_address", "--backend=dask"]),
])
def test_bad_options_one_line(tree: Path, args, words):
    result = run_cli(args + [f"--output_dir={tree / 'out'}"], cwd=tree)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tree / "out").exists()


def test_refuses_non_empty_output_dir(tree: Path):
    (tree / "out").mkdir()
    (tree / "out" / "something").write_text("x")
    result = run_cli(["train.py", "--param_file=hparam.yaml", f"--output_dir={tree / 'out'}"], cwd=tree)
    assert result.returncode == 2 and "not empty" in result.stderr and "--resume" in result.stderr


def test_help_lists_every_option():
    result = subprocess.run([sys.executable, "-m", "autofinetune", "-h"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ["--param_file", "--gpu", "--popsize", "--round", "--output_dir", "--evaluator", "--tuning_strategy", "--workers", "--seed"]:
        assert option in result.stdout


def test_default_output_dir_is_timestamped(tree: Path):
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=1", "--round=1", "--workers=1"], cwd=tree)
    assert result.returncode == 0, result.stderr
    made = [p.name for p in tree.iterdir() if p.name.startswith("output_")]
    assert len(made) == 1 and len(made[0]) == len("output_YYYYmmddHHMMSS") and made[0][7:].isdigit()


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("autofinetune")
    assert exe.exists(), "pip install should create the autofinetune console script"
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "autofinetune" in result.stdout


def test_trial_side_import_is_standard_library_only():
    code = textwrap.dedent("""
        import sys
        before = set(sys.modules)
        import autofinetune
        autofinetune.report_final_result(0.5)
        heavy = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {'numpy', 'yaml', 'cma', 'visualdl', 'pynvml'})
        print(heavy)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "final result 0.5" in result.stdout  # standalone: prints and returns


def test_report_writes_atomically_with_token(tmp_path: Path):
    code = "import autofinetune; autofinetune.report_final_result(0.75); autofinetune.report_final_result(0.8)"
    path = tmp_path / "result.json"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "AUTOFINETUNE_RESULT_FILE": str(path), "AUTOFINETUNE_TRIAL_TOKEN": "abc"})
    assert result.returncode == 0, result.stderr
    import json
    record = json.loads(path.read_text())
    assert record["score"] == 0.8 and record["token"] == "abc"  # the last report wins
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp files left


def test_every_registered_strategy_builds_from_its_metadata():
    import numpy as np
    from autofinetune.errors import ConfigError
    from autofinetune.strategies import available, make_strategy

    built = []
    for name, info in available().items():
        dim = max(2, info.min_dim)
        try:
            strategy = make_strategy(name, dim, np.full(dim, 0.5), 4, 1)
        except ConfigError as error:  # an optional plugin whose library is not installed says how to get it
            assert not info.builtin and "fix: pip install" in str(error), error
            continue
        assert strategy.ask().shape == (4, dim)
        built.append(name)
    assert {"pshe2", "hazero"} <= set(built)


def test_python_api_returns_the_best_and_every_trial(tmp_path: Path, monkeypatch):
    import json as _json
    import autofinetune

    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import argparse, autofinetune
        p = argparse.ArgumentParser(); p.add_argument("--x", type=float); p.add_argument("--k", type=int)
        p.add_argument("--opt"); p.add_argument("--saved_params_dir"); a = p.parse_args()
        autofinetune.report_final_result(1 - (a.x - 0.2) ** 2 - (a.k - 3) ** 2 / 100 - (0.1 if a.opt == "sgd" else 0))
    """))
    monkeypatch.chdir(tmp_path)
    lines = []
    result = autofinetune.tune(
        "train.py",
        [{"name": "x", "type": "float", "init_value": 0.5, "greater_than": 0, "lower_than": 1},
         {"name": "k", "type": "int", "init_value": 5, "greater_than": 1, "lower_than": 8},
         {"name": "opt", "type": "choice", "init_value": "adam", "values": ["adam", "sgd"]}],
        popsize=3, rounds=2, workers=2, seed=4, output_dir=tmp_path / "api", evaluator="fulltrail", echo=lines.append,
    )
    assert len(result.trials) == 6 and result.seed == 4
    best = max(result.trials, key=lambda t: t.score)
    assert result.best_score == best.score and result.best_params == best.params
    assert isinstance(result.best_params["k"], int) and result.best_params["opt"] in ("adam", "sgd")
    assert result.best_model_dir == (tmp_path / "api" / "best_model").resolve()
    assert any(line.startswith("The final best eval score is") for line in lines)
    rows = _json.loads((tmp_path / "api" / "trials.json").read_text())
    assert sorted(r["score"] for r in rows) == sorted(t.score for t in result.trials)
    assert (tmp_path / "api" / "visualization").is_dir()  # the API writes the VisualDL logs too


def test_summary_and_plot_subcommands(tree: Path):
    out = tree / "out"
    assert run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", f"--output_dir={out}", "--workers=2"], cwd=tree).returncode == 0
    result = run_cli(["summary", str(out), "--format", "json"], cwd=tree)
    assert result.returncode == 0, result.stderr
    import json as _json
    summary = _json.loads(result.stdout)
    assert summary["best"]["score"] == 0.5
    result = run_cli(["summary", str(tree / "nowhere")], cwd=tree)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    result = run_cli(["plot", str(out), "--output", str(tree / "p.png")], cwd=tree)
    assert result.returncode == 0, result.stderr
    assert (tree / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
