"""Intermediate results and pruning through the real CLI (docs/pruning.md).

Each trial here is a real train.py that reports a learning curve with
`autofinetune.report_intermediate_result`; the curve is chosen by the trial's index (read from
the model folder the tuner gives it) or by its hyperparameter, so the rung at which ASHA must
stop a trial can be worked out by hand. One slot runs the trials one after another, so the order
of reports, and with it every decision, is the same from run to run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from autofinetune.journal import replay
from autofinetune.pruners import make_pruner

from conftest import run_cli

PRUNE_TRAIN = textwrap.dedent(
    """
    import argparse, os, signal, sys, time
    import autofinetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=float, required=True)
    parser.add_argument("--saved_params_dir", required=True)
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--step_seconds", type=float, default=0.25)
    parser.add_argument("--levels", default="")  # "0.9,0.95,0.1": trial i's curve rises to levels[i]; else to x
    parser.add_argument("--ignore", default="")  # trial indexes that ignore the request to stop
    parser.add_argument("--silent", type=int, default=0)  # 1: never report an intermediate result
    args = parser.parse_args()
    index = int(os.path.basename(args.saved_params_dir).split("-")[1])
    levels = [float(v) for v in args.levels.split(",")] if args.levels else None
    ignore = {int(v) for v in args.ignore.split(",") if v}
    step = 0

    def on_term(signum, frame):
        print(f"got SIGTERM at step {step}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    score = 0.0
    for step in range(1, args.epochs + 1):
        time.sleep(args.step_seconds)
        level = levels[index] if levels else args.x
        score = level * (1 - 0.5 ** step)
        if not args.silent and autofinetune.report_intermediate_result(score, step) and index not in ignore:
            print(f"asked to stop at step {step}", flush=True)
            break
    print(f"ran {step} steps", flush=True)
    autofinetune.report_final_result(score)
    """
)

SPACE = textwrap.dedent(
    """
    param_list:
    - name : x
      init_value : 0.5
      type : float
      greater_than : 0.05
      lower_than : 1.0
    """
)

#: ASHA with rungs at steps 2, 4, 8 and promotion of the top half: hand-checkable.
ASHA_2 = ["--pruner=asha", "--pruner_option", "min_resource=2", "--pruner_option", "reduction_factor=2"]


@pytest.fixture
def curves(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(PRUNE_TRAIN)
    (tmp_path / "hparam.yaml").write_text(SPACE)
    return tmp_path


def _rows(out: Path) -> Dict[int, dict]:
    return {row["index"]: row for row in json.loads((out / "trials.json").read_text())}


def _search(project: Path, out: Path, *extra: str, popsize: int = 3, rounds: int = 1) -> subprocess.CompletedProcess:
    return run_cli(["train.py", "--param_file=hparam.yaml", f"--popsize={popsize}", f"--round={rounds}", f"--output_dir={out}",
                    "--workers=1", "--seed=7", "--evaluator=fulltrail", *extra], cwd=project, timeout=180)


def test_a_poor_curve_is_stopped_at_its_rung_and_marked_pruned(curves: Path):
    out = curves / "out"
    result = _search(curves, out, *ASHA_2, "--prune_grace=20", "levels", "0.9,0.95,0.1")
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    # trial 0 is alone at each rung, trial 1 beats it: both go on. Trial 2 is the worst of the
    # three values recorded at the first rung (step 2), where only the top 3 // 2 = 1 goes on.
    assert [rows[i]["status"] for i in range(3)] == ["ok", "ok", "pruned"]
    state = replay(out / "journal.jsonl")
    pruned = state.finished[(0, 2)]
    assert pruned.pruned_step == 2
    assert pruned.score == pytest.approx(0.1 * (1 - 0.5 ** 2))  # the score the pruner judged
    assert pruned.message == "stopped early by the pruner at step 2"
    log = (out / "round0" / "log-2.info").read_text()
    assert "asked to stop at step" in log and "ran 8 steps" not in log  # it heard the request and stopped
    assert (out / "round0" / "stop-2").exists() and not (out / "round0" / "stop-0").exists()
    assert [step for step, _ in state.curve(state.finished[(0, 0)])] == list(range(1, 9))
    assert "[round 0] trial 2 pruned at step 2" in result.stdout
    assert "The pruner stopped 1 of 3 trials early" in result.stdout
    # the best model and the strategy never take a pruned trial for a finished one
    assert state.best is not None and (state.best.round, state.best.index) == (0, 1)
    summary = json.loads(run_cli(["summary", str(out), "--format", "json"], cwd=curves).stdout)
    assert summary["counts"]["pruned"] == 1 and summary["counts"]["failed"] == 0 and summary["counts"]["ok"] == 2
    assert summary["pruning"]["trials"][0]["pruned_step"] == 2
    assert summary["pruning"]["saved_seconds"] > 0


def test_a_trial_that_ignores_the_request_is_terminated_after_the_grace(curves: Path):
    out = curves / "out"
    started = time.monotonic()
    result = _search(curves, out, *ASHA_2, "--prune_grace=1", "levels", "0.9,0.95,0.1", "ignore", "2", "epochs", "40")
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert rows[2]["status"] == "pruned"
    log = (out / "round0" / "log-2.info").read_text()
    assert "got SIGTERM at step" in log  # the tuner's SIGTERM, once the grace was over
    step = int(log.split("got SIGTERM at step")[1].split()[0])
    assert 2 < step < 40  # after the decision at step 2, long before the end of its 40 steps
    # the ignoring trial would have run 40 x 0.25 s = 10 s; the whole search (two full trials
    # of 10 s each included) ends well before the third would have
    assert rows[2]["duration"] < 8, rows[2]
    assert time.monotonic() - started < 60


def test_a_trial_that_never_reports_intermediates_is_never_pruned(curves: Path):
    out = curves / "out"
    result = _search(curves, out, *ASHA_2, "levels", "0.9,0.95,0.1", "silent", "1", "step_seconds", "0.02")
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert [rows[i]["status"] for i in range(3)] == ["ok", "ok", "ok"]
    assert '"intermediate"' not in (out / "journal.jsonl").read_text()
    assert not list(out.glob("round0/stop-*"))


def test_without_a_pruner_curves_are_recorded_and_nothing_is_stopped(curves: Path):
    out = curves / "out"
    result = _search(curves, out, "levels", "0.9,0.95,0.1", "step_seconds", "0.02")
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in _rows(out).values()] == ["ok", "ok", "ok"]
    state = replay(out / "journal.jsonl")
    curve = state.curve(state.finished[(0, 2)])
    assert [step for step, _ in curve] == list(range(1, 9))
    assert curve[-1][1] == pytest.approx(0.1 * (1 - 0.5 ** 8))
    # the learning curves in VisualDL: one tag per trial, the trial's own steps
    from visualdl import LogReader

    reader = LogReader(logdir=str(out / "visualization"))
    data = reader.get_log_data("scalar", str(out / "visualization"), "learning_curve%round0-trial2")
    assert [item[0] for item in data] == list(range(1, 9))
    assert data[-1][3] == pytest.approx(curve[-1][1], rel=1e-6)


def test_the_decisions_agree_with_the_pruner_fed_the_journaled_reports(curves: Path):
    """Plumbing check: the tuner asked the pruner in the order the trials reported."""
    out = curves / "out"
    result = _search(curves, out, "--pruner=median", "--pruner_option", "n_startup_trials=2", popsize=6,
                     *("step_seconds", "0.05", "epochs", "6"))
    assert result.returncode == 0, result.stderr
    state = replay(out / "journal.jsonl")
    pruner = make_pruner("median", {"n_startup_trials": 2})
    expected = {}
    for kind, attempt, value in state.pruner_history():
        if kind == "report":
            if pruner.report(attempt, *value) and attempt[:2] not in expected:
                expected[attempt[:2]] = value[0]
        else:
            pruner.finished(attempt, value)
    found = {key: t.pruned_step for key, t in state.finished.items() if t.status == "pruned"}
    assert found == expected


def _decisions(out: Path) -> Dict[Tuple[int, int], Tuple[str, object, float]]:
    state = replay(out / "journal.jsonl")
    return {key: (str(t.status), t.pruned_step, round(t.params["x"], 12)) for key, t in state.finished.items()}


def test_resume_after_sigkill_makes_the_same_decisions(curves: Path):
    args = ["train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=3", "--workers=1", "--seed=11",
            "--evaluator=populationbased", "--resume_epochs=6", "--pruner=asha", "--pruner_option", "min_resource=1",
            "--pruner_option", "reduction_factor=2", "--prune_grace=5", "step_seconds", "0.06"]
    reference = curves / "reference"
    done = run_cli([*args, f"--output_dir={reference}"], cwd=curves, timeout=180)
    assert done.returncode == 0, done.stderr
    expected = _decisions(reference)
    assert len(expected) == 12 and any(s == "pruned" for s, _, _ in expected.values())
    out = curves / "out"
    process = subprocess.Popen([sys.executable, "-m", "autofinetune", *args, f"--output_dir={out}"], cwd=curves,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        text = journal.read_text() if journal.exists() else ""
        if text.count('"event": "finish"') >= 5 and text.endswith("\n") and '"event": "intermediate"' in text.rsplit('"finish"', 1)[1]:
            break  # mid-trial: some reports of a trial that has not finished are journaled
        time.sleep(0.02)
    assert process.poll() is None, "the search ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate()
    resumed = run_cli([*args, f"--output_dir={out}", "--resume"], cwd=curves, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert _decisions(out) == expected
    # a pruned trial is never a parent under the population-based evaluator
    state = replay(out / "journal.jsonl")
    for trial in state.finished.values():
        if trial.parent:
            parent = state.finished[(trial.parent["round"], trial.parent["index"])]
            assert parent.status == "ok", (trial.round, trial.index, trial.parent)


def test_pruning_on_a_dask_worker_and_with_async(curves: Path):
    pytest.importorskip("distributed")
    out = curves / "out"
    # Dask may run a round's trials in any order; in round 1 the poor trial meets both of round
    # 0's values at the first rung whatever the order, and is the worst there.
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", f"--output_dir={out}",
                      "--backend=dask", "--workers=1", "--seed=7", "--evaluator=fulltrail", *ASHA_2, "--prune_grace=0.3",
                      "levels", "0.9,0.1", "ignore", "1", "epochs", "16", "step_seconds", "0.1"], cwd=curves, timeout=240)
    assert result.returncode == 0, result.stderr
    state = replay(out / "journal.jsonl")
    assert state.finished[(1, 1)].status == "pruned" and state.finished[(1, 1)].pruned_step == 2
    log = (out / "round1" / "log-1.info").read_text()
    assert "got SIGTERM at step" in log  # the worker enforced the grace
    assert 2 < int(log.split("got SIGTERM at step")[1].split()[0]) < 16
    out = curves / "async"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=3", "--round=2", f"--output_dir={out}", "--workers=1",
                      "--seed=7", "--evaluator=fulltrail", "--async", *ASHA_2, "levels", "0.9,0.95,0.1", "step_seconds", "0.1"],
                     cwd=curves, timeout=180)
    assert result.returncode == 0, result.stderr
    state = replay(out / "journal.jsonl")
    assert {key: str(t.status) for key, t in state.finished.items() if key[1] == 2} == {(0, 2): "pruned", (1, 2): "pruned"}


def test_pruner_options_are_checked_before_anything_runs(curves: Path):
    out = curves / "out"
    result = _search(curves, out, "--pruner=asha", "--pruner_option", "reduction_factor=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "reduction_factor" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    result = _search(curves, out, "--pruner_option", "min_resource=2")
    assert result.returncode == 2 and "--pruner=" in result.stderr and not out.exists()
    result = _search(curves, out, "--pruner=hyperband")
    assert result.returncode == 2 and "none, median, asha" in result.stderr
    # a resume may not change the pruner
    assert _search(curves, out, *ASHA_2, "levels", "0.9,0.95,0.1", "step_seconds", "0.01").returncode == 0
    result = _search(curves, out, "--pruner=median", "--resume", "levels", "0.9,0.95,0.1", "step_seconds", "0.01")
    assert result.returncode == 2 and "--pruner differs" in result.stderr


def test_standalone_the_report_prints_and_never_asks_to_stop(tmp_path: Path):
    """The same train.py runs without the tuner: the call prints and returns False; it imports
    only the standard library, as the final report does."""
    script = tmp_path / "alone.py"
    script.write_text(textwrap.dedent("""
        import sys, autofinetune
        answers = [autofinetune.report_intermediate_result(0.25 * step) for step in range(1, 4)]
        answers.append(autofinetune.report_intermediate_result(0.9, step=10))
        print(answers, sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "yaml", "cma", "visualdl")))
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFINETUNE_")}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [f"autofinetune: intermediate result {0.25 * s} at step {s} (not running under the tuner; nothing recorded)"
                         for s in (1, 2, 3)] + ["autofinetune: intermediate result 0.9 at step 10 (not running under the tuner; nothing recorded)"]
    assert lines[4] == "[False, False, False, False] []"


def test_plot_draws_the_learning_curves_with_the_pruned_ones_marked(curves: Path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from autofinetune.views.plot import plot_search

    pruned, silent = curves / "pruned", curves / "silent"
    assert _search(curves, pruned, *ASHA_2, "levels", "0.9,0.95,0.1", "step_seconds", "0.05").returncode == 0
    assert _search(curves, silent, "levels", "0.9,0.95,0.1", "silent", "1", "step_seconds", "0.01").returncode == 0
    with_curves, without = imread(str(plot_search(pruned))), imread(str(plot_search(silent)))
    # one more row of panels: the learning curves (3.2 inches at 100 dpi)
    assert with_curves.shape[0] - without.shape[0] == 320 and with_curves.shape[1] == without.shape[1]
    # the pruned trial's curve is drawn in red (matplotlib's tab:red, #d62728) in that panel
    panel = with_curves[without.shape[0] // 2: without.shape[0] // 2 + 320]
    red = (abs(panel[..., 0] - 0xd6 / 255) < 0.02) & (abs(panel[..., 1] - 0x27 / 255) < 0.02) & (abs(panel[..., 2] - 0x28 / 255) < 0.02)
    assert red.sum() > 20


def test_lines_that_are_not_the_trials_reports_are_ignored_and_said_once(curves: Path):
    """Another trial's line (wrong token), a step that is not a whole number, a broken line: none
    counts, the trial's own reports still do, and the tuner says so once (docs/pruning.md)."""
    (curves / "noisy.py").write_text(textwrap.dedent("""
        import argparse, json, os, autofinetune
        parser = argparse.ArgumentParser()
        parser.add_argument("--x", type=float)
        parser.add_argument("--saved_params_dir")
        parser.parse_args()
        with open(os.environ["AUTOFINETUNE_INTERMEDIATE_FILE"], "a") as handle:
            handle.write(json.dumps({"step": 1, "score": 0.9, "token": "not-mine"}) + "\\n")
            handle.write(json.dumps({"step": 1.5, "score": 0.9, "token": os.environ["AUTOFINETUNE_TRIAL_TOKEN"]}) + "\\n")
            handle.write("{broken\\n")
        for step in (1, 2):
            autofinetune.report_intermediate_result(0.1 * step, step)
        autofinetune.report_final_result(0.2)
    """))
    out = curves / "out"
    result = run_cli(["noisy.py", "--param_file=hparam.yaml", "--popsize=1", "--round=1", f"--output_dir={out}", "--workers=1",
                      "--seed=1", "--evaluator=fulltrail"], cwd=curves, timeout=120)
    assert result.returncode == 0, result.stderr
    state = replay(out / "journal.jsonl")
    assert state.curve(state.finished[(0, 0)]) == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2))]
    warnings = [line for line in result.stderr.splitlines() if "ignored a line of its intermediate results" in line]
    assert len(warnings) == 1 and "without this trial's token" in warnings[0]
