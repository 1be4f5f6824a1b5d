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


def test_lazy_strategy_registry_matches_the_classes():
    from autofinetune.strategies import MIN_DIM, STRATEGIES
    assert set(MIN_DIM) == set(STRATEGIES)
    for name in STRATEGIES:
        assert STRATEGIES[name].min_dim == MIN_DIM[name]
