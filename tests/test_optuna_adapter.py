"""Optuna's samplers through the strategy plugin registry (docs/optuna.md).

The adapters are registered by entry points in autofinetune's own pyproject.toml, so these
tests need the package installed (``pip install -e ".[test]"`` brings optuna and cmaes); they
skip with the reason when Optuna is missing. Searches run the real CLI with real train.py
subprocesses, locally and on a real Dask cluster on 127.0.0.1.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

pytest.importorskip("optuna", reason="Optuna is not installed: pip install -e \".[test]\" (or \"autofinetune[optuna]\")")

from autofinetune.errors import ConfigError  # noqa: E402
from autofinetune.strategies import available, check_strategy, make_strategy  # noqa: E402
from autofinetune.testing.strategies import StrategyTestCase, determinism_run, quadratic, run_rounds  # noqa: E402
from conftest import run_cli  # noqa: E402

needs_cmaes = pytest.mark.skipif(importlib.util.find_spec("cmaes") is None, reason="cmaes is not installed (pip install cmaes)")
needs_gp = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "scipy")),
    reason="optuna.gp needs torch and scipy, not installed here (docs/optuna.md)",
)
if "optuna.tpe" not in available():
    pytest.skip("the optuna.* entry points are not installed: pip install -e . after changing pyproject.toml",
                allow_module_level=True)

# -- the conformance suite (autofinetune/testing/strategies.py) -------------------------------


class TestOptunaTPE(StrategyTestCase):
    strategy_name = "optuna.tpe"


@needs_cmaes
class TestOptunaCmaEs(StrategyTestCase):
    strategy_name = "optuna.cmaes"


# -- the registry -----------------------------------------------------------------------------


def test_listed_apart_from_the_builtins_and_described_without_importing_optuna() -> None:
    script = textwrap.dedent("""
        import json, sys
        from autofinetune.strategies import available, check_strategy
        infos = available()
        print(json.dumps({
            "plugins": sorted(n for n, i in infos.items() if not i.builtin),
            "async": sorted(n for n, i in infos.items() if n.startswith("optuna.") and i.supports_async),
            "tpe": check_strategy("optuna.tpe", 1, 4, {"n_startup_trials": "3"}, asynchronous=True),
            "cmaes": check_strategy("optuna.cmaes", 2, 4),
            "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("optuna", "cmaes", "torch", "scipy")
                             or m == "autofinetune.contrib.optuna_adapter"),
        }))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"optuna.tpe", "optuna.cmaes", "optuna.gp"} <= set(report["plugins"])
    assert report["async"] == ["optuna.cmaes", "optuna.gp", "optuna.tpe"]
    assert report["tpe"] == {"n_startup_trials": 3.0} and report["cmaes"] == {}
    assert report["loaded"] == []
    assert "skipped" not in done.stderr  # no plugin warning


@pytest.mark.parametrize("args, expected", [
    (("optuna.tpe", 2, 4, {"n_startup_trials": "2.5"}),
     "--strategy_option n_startup_trials=2.5 is out of range: Optuna TPE's n_startup_trials (random trials before the TPE "
     "model takes over, Optuna's n_startup_trials) must be a number in [0, 10000], a whole number"),
    (("optuna.cmaes", 1, 4), "--tuning_strategy=optuna.cmaes: Optuna CMA-ES needs two or more hyperparameters, the search space has 1; "
                             "use --tuning_strategy=pshe2"),
    (("optuna.cmaes", 2, 4, {"sigma0": 0.2}), "--strategy_option sigma0=...: Optuna CMA-ES (--tuning_strategy=optuna.cmaes) has no option"),
])
def test_bad_requests_are_refused_before_anything_is_built(args: tuple, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_strategy(*args)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_the_first_candidate_is_the_init_point_and_failures_are_failed_trials() -> None:
    """The user's init_value is evaluated first; a failure reaches Optuna as FAIL, not as a made-up loss."""
    import optuna

    init = np.array([0.25, 0.75])
    strategy = make_strategy("optuna.tpe", 2, init, 3, 0)
    first = strategy.ask()
    np.testing.assert_array_equal(first[0], init)
    assert not np.array_equal(first[1], init)
    strategy.tell([0.5, None, float("nan")])
    trials = strategy._study.get_trials(deepcopy=False)
    states = [t.state for t in trials[:3]]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.FAIL]
    assert [t.state for t in trials[3:]] == [optuna.trial.TrialState.RUNNING] * 3  # the next round, asked at tell


def test_optunas_own_verbosity_is_left_as_it_was(capfd: pytest.CaptureFixture) -> None:
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        run_rounds(make_strategy("optuna.tpe", 2, np.full(2, 0.5), 2, 0), 2)
        assert "A new study created" not in capfd.readouterr().err  # the tuner's output stays its own
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(before)


@needs_gp
@pytest.mark.slow
def test_gp_replays_exactly_in_this_process_and_another() -> None:
    """GP fits a model with torch and scipy: replay must still give bit-identical candidates.

    Small (dimension 2, popsize 2, 2 random trials) because fitting costs seconds per round.
    """
    options = {"n_startup_trials": 2}
    original = make_strategy("optuna.gp", 2, np.full(2, 0.5), 2, 5, options)
    told = []
    for round_ in range(3):
        losses = [quadratic(p) for p in original.ask()]
        if round_ == 1:
            losses[1] = None
        told.append(losses)
        original.tell(losses)
    replayed = make_strategy("optuna.gp", 2, np.full(2, 0.5), 2, 5, options)
    for losses in told:
        replayed.tell(losses)
    np.testing.assert_array_equal(original.ask(), replayed.ask())
    args = dict(name="optuna.gp", dim=2, popsize=2, seed=5, options=options, rounds=3)
    code = "import json, sys; from autofinetune.testing.strategies import determinism_run; " \
           "print(json.dumps(determinism_run(**json.loads(sys.argv[1]))))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == determinism_run(**args)  # type: ignore[arg-type]


# -- through the CLI ----------------------------------------------------------------------------

TRAIN = textwrap.dedent("""
    import argparse, json, os, time
    import autofinetune
    p = argparse.ArgumentParser()
    p.add_argument("--x", type=float); p.add_argument("--y", type=float)
    p.add_argument("--saved_params_dir"); p.add_argument("--model_path"); p.add_argument("--epochs")
    p.add_argument("--ledger"); p.add_argument("--sleep", type=float, default=0.0)
    a = p.parse_args()
    key = "/".join(a.saved_params_dir.rstrip("/").split("/")[-2:])
    if a.ledger:
        with open(a.ledger, "a") as f:
            f.write(json.dumps({"key": key, "pid": os.getpid(), "model_path": a.model_path}) + "\\n")
    time.sleep(a.sleep)
    open(os.path.join(a.saved_params_dir, "w"), "w").write("x")
    autofinetune.report_final_result(1 - (a.x - 0.3) ** 2 - (a.y - 0.6) ** 2)
""")
SPACE = textwrap.dedent("""
    param_list:
    - {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}
    - {name: y, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}
""")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "hparam.yaml").write_text(SPACE)
    return tmp_path


def _args(out: Path, strategy: str = "optuna.tpe", *extra: str, popsize: int = 3, rounds: int = 3) -> List[str]:
    return ["train.py", "--param_file=hparam.yaml", f"--popsize={popsize}", f"--round={rounds}", f"--output_dir={out}",
            "--workers=2", "--seed=7", f"--tuning_strategy={strategy}", "--no_progress", *extra]


def _rows(out: Path) -> List[dict]:
    return json.loads((out / "trials.json").read_text())


def _candidates(out: Path) -> List[Tuple[int, int, float, float]]:
    return sorted((r["round"], r["index"], r["x"], r["y"]) for r in _rows(out))


def _ledger(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("evaluator", ["fulltrail", "populationbased"])
def test_cli_search_with_tpe(project: Path, evaluator: str) -> None:
    out = project / "out"
    result = run_cli(_args(out, "optuna.tpe", f"--evaluator={evaluator}", "--strategy_option", "n_startup_trials=3"), cwd=project)
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert len(rows) == 9 and all(r["status"] == "ok" for r in rows)
    first = min(rows, key=lambda r: (r["round"], r["index"]))
    assert (first["x"], first["y"]) == (0.5, 0.5)  # the init point is the first trial
    assert len({(r["x"], r["y"]) for r in rows}) == 9
    assert "The final best eval score is" in result.stdout
    assert "| strategy optuna.tpe |" in (out / "log_file.txt").read_text().splitlines()[0]
    start = json.loads((out / "journal.jsonl").read_text().splitlines()[0])
    assert start["config"]["strategy"] == "optuna.tpe" and start["config"]["strategy_options"] == {"n_startup_trials": 3.0}
    if evaluator == "populationbased":
        assert all(r["parent"] for r in rows if r["round"] > 0)
    # Same seed, same candidates: the journal's seed is what --resume replays.
    again = run_cli(_args(project / "again", "optuna.tpe", f"--evaluator={evaluator}", "--strategy_option", "n_startup_trials=3"),
                    cwd=project)
    assert again.returncode == 0, again.stderr
    assert _candidates(project / "again") == _candidates(out)


def test_cli_async_search_with_tpe_and_its_resume(project: Path) -> None:
    """--async: each candidate moves on alone; a SIGKILLed async search resumes by replaying the told order."""
    out, ledger = project / "out", project / "ledger.jsonl"
    args = _args(out, "optuna.tpe", "--async", "--evaluator=fulltrail", "--strategy_option", "n_startup_trials=2",
                 rounds=4) + ["ledger", str(ledger), "sleep", "0.3"]
    tuner = subprocess.Popen([sys.executable, "-m", "autofinetune", *args], cwd=project, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_ledger(ledger)) < 6 and tuner.poll() is None:
        time.sleep(0.02)
    tuner.kill()
    tuner.communicate()
    told = [l for l in (out / "journal.jsonl").read_text().splitlines() if '"told"' in l]
    assert told and tuner.returncode == -9, "the kill should land part-way, after some results were told"
    result = run_cli(args + ["--resume"], cwd=project)
    assert result.returncode == 0, result.stderr
    assert "did not reproduce" not in result.stderr  # the replay gave the journaled candidates
    rows = _rows(out)
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert sorted((r["round"], r["index"]) for r in rows) == [(r, i) for r in range(4) for i in range(3)]


@pytest.mark.parametrize("strategy", ["optuna.tpe", pytest.param("optuna.cmaes", marks=needs_cmaes)])
def test_sigkill_then_resume_gives_the_uninterrupted_candidates(project: Path, strategy: str) -> None:
    reference = project / "reference"
    result = run_cli(_args(reference, strategy, "--evaluator=fulltrail", rounds=4), cwd=project)
    assert result.returncode == 0, result.stderr
    expected = _candidates(reference)
    assert len(expected) == 12

    out, ledger = project / "out", project / "ledger.jsonl"
    # --round may grow on resume: one round, then a resume to four, SIGKILLed part-way.
    pairs = ["ledger", str(ledger), "sleep", "0.2"]  # a resume must repeat the trailing pairs
    first = run_cli(_args(out, strategy, "--evaluator=fulltrail", rounds=1) + pairs, cwd=project)
    assert first.returncode == 0, first.stderr
    args = _args(out, strategy, "--evaluator=fulltrail", rounds=4) + pairs + ["--resume"]
    tuner = subprocess.Popen([sys.executable, "-m", "autofinetune", *args], cwd=project, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_ledger(ledger)) < 7 and tuner.poll() is None:
        time.sleep(0.02)
    tuner.kill()
    _, stderr = tuner.communicate()
    assert tuner.returncode == -9, "the kill should land before the search ends: " + stderr
    result = run_cli(args, cwd=project)
    assert result.returncode == 0, result.stderr
    assert "did not reproduce" not in result.stderr
    assert _candidates(out) == expected
    assert "Resuming from journal.jsonl" in result.stdout


@pytest.mark.parametrize("blocked, strategy, fix", [
    ("optuna", "optuna.tpe", 'pip install "autofinetune[optuna]"'),
    ("cmaes", "optuna.cmaes", 'pip install "autofinetune[optuna]"'),
    ("torch", "optuna.gp", 'pip install "autofinetune[optuna]" torch scipy'),
])
def test_a_missing_dependency_is_one_line_naming_the_install_before_any_trial(project: Path, tmp_path: Path, blocked: str,
                                                                               strategy: str, fix: str) -> None:
    # The house way to make a module missing (tests/test_dask_backend.py): a package that fails to import.
    fake = tmp_path / "missing" / blocked
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{blocked}'\", name='{blocked}')\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))}
    ledger = project / "ledger.jsonl"
    result = run_cli(_args(project / "out", strategy, "--evaluator=fulltrail") + ["ledger", str(ledger)], cwd=project, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"autofinetune: error: --tuning_strategy={strategy}: needs the Python module '{blocked}'")
    assert line.endswith(f"fix: {fix}")
    assert not ledger.exists(), "no trial may run"
    assert not (project / "out").exists(), "nothing is written: the same command works once the module is installed"


def test_help_and_a_pshe2_search_do_not_import_optuna(project: Path) -> None:
    probe = textwrap.dedent("""
        import json, sys
        from autofinetune.cli import main
        try:
            code = main(sys.argv[1:])
        except SystemExit as stop:
            code = stop.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("optuna", "cmaes", "torch")
                       or m == "autofinetune.contrib.optuna_adapter")
        print(json.dumps({"code": code, "heavy": heavy}))
    """)
    for argv in (["--help"], _args(project / "out", "pshe2", "--evaluator=fulltrail", popsize=2, rounds=1)):
        done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=project, capture_output=True, text=True, timeout=120)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report == {"code": 0, "heavy": []}, done.stderr
    assert len(_rows(project / "out")) == 2


# -- on a real Dask cluster ---------------------------------------------------------------------


def test_tpe_search_on_a_local_dask_cluster(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="pip install 'autofinetune[dask]'")
    from test_dask_backend import Cluster

    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster", {"A": {"cuda": "5", "gpus": 1}, "B": {"cuda": "6", "gpus": 1}})
    try:
        out, ledger = project / "out", project / "ledger.jsonl"
        result = run_cli(_args(out, "optuna.tpe", "--backend=dask", f"--scheduler_address={cluster.address}", "--evaluator=fulltrail",
                               popsize=2, rounds=3) + ["ledger", str(ledger)], cwd=project, timeout=180)
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert {r["gpu"] for r in rows} <= {"5", "6"} and len(_ledger(ledger)) == 6
    first = min(rows, key=lambda r: (r["round"], r["index"]))
    assert (first["x"], first["y"]) == (0.5, 0.5)
