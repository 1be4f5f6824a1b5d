"""The views keep up with a long search at a flat cost per trial (docs/overhead.md), and still hold
every finished trial whenever the tuner exits (docs/architecture.md: the journal is the truth).

No assertion here is about speed (speed goals are checked by benchmarks/overhead.py); the
rewrite test counts rewrites through what a trial itself can see: each atomic rewrite of
trials.json swaps in a new file, with its own inode and modification time.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from autofinetune.journal import replay
from autofinetune.records import SearchRecords, TrialRecord, TrialsView
from autofinetune.runner import Status
from autofinetune.search import SearchSnapshot

from conftest import run_cli

SPACE = textwrap.dedent(
    """
    param_list:
    - {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}
    """
)

#: A no-op trial that notes which trials.json it could see while it ran, fails its first attempt
#: when FAIL_ONCE names its index (so retries are covered), and sleeps SLEEP seconds.
TRAIN = textwrap.dedent(
    """
    import argparse, json, os, sys, time
    import autofinetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=float, required=True)
    parser.add_argument("--saved_params_dir", default=None)
    args, _ = parser.parse_known_args()
    out, model = os.environ["OUT"], os.environ["AUTOFINETUNE_SAVED_PARAMS_DIR"]
    round_dir = os.path.basename(os.path.dirname(model))
    index = int(os.path.basename(model).split("-")[1])
    try:
        info = os.stat(os.path.join(out, "trials.json"))
        seen = [info.st_ino, info.st_mtime_ns]
    except FileNotFoundError:
        seen = None
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(json.dumps({"trial": [round_dir, index], "seen": seen, "time": time.time()}) + "\\n")
    marker = os.path.join(out, f"failed-{round_dir}-{index}")
    if str(index) in os.environ.get("FAIL_ONCE", "").split(",") and not os.path.exists(marker):
        open(marker, "w").close()
        raise SystemExit("first attempt fails")
    time.sleep(float(os.environ.get("SLEEP", "0")))
    autofinetune.report_final_result(args.x)
    """
)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def _args(out: Path, popsize: int, rounds: int, *more: str) -> List[str]:
    return ["train.py", "--param_file=space.yaml", f"--popsize={popsize}", f"--round={rounds}", f"--output_dir={out}",
            "--workers=2", "--evaluator=fulltrail", "--seed=5", *more]


def _env(project: Path, out: Path, **extra: str) -> Dict[str, str]:
    return {"OUT": str(out), "LEDGER": str(project / "ledger.jsonl"), **extra}


def _finished(out: Path) -> Dict[Tuple[int, int], TrialRecord]:
    """The journal's finished trials (what the views must show)."""
    return {(t.round, t.index): t for t in replay(out / "journal.jsonl").kept}


def _check_views(out: Path) -> None:
    """All three views hold exactly the journal's finished trials, one row each, and agree."""
    finished = _finished(out)
    with open(out / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = [(int(r["round"]), int(r["index"])) for r in rows]
    assert len(keys) == len(set(keys)), "one row per finished trial"
    assert set(keys) == set(finished)
    data = json.loads((out / "trials.json").read_text())
    assert sorted((d["round"], d["index"]) for d in data) == sorted(finished)
    by_key = {(d["round"], d["index"]): d for d in data}
    for row in rows:  # the appended rows say what the rewritten file says
        item = by_key[(int(row["round"]), int(row["index"]))]
        assert row["status"] == item["status"] and int(row["attempt"]) == item["attempt"]
        assert (float(row["score"]) if row["score"] else None) == item["score"]
        assert row["model_dir"] == item["model_dir"] and row["log_path"] == item["log_path"]
        trial = finished[(int(row["round"]), int(row["index"]))]
        assert row["status"] == trial.status and int(row["attempt"]) == trial.attempt
    log_text = (out / "log_file.txt").read_text()
    for round_index, index in finished:
        assert f"round{round_index}/model-{index}" in log_text


def test_csv_holds_one_row_per_finished_trial_and_agrees_with_json_and_journal(project: Path):
    out = project / "out"
    result = run_cli(_args(out, 4, 3, "--max_retries=1"), cwd=project, env=_env(project, out, FAIL_ONCE="1,3"))
    assert result.returncode == 0, result.stderr
    assert len(_finished(out)) == 12
    _check_views(out)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    # when the tuner exits, the file is rewritten in (round, index) order, as before appends
    assert [(int(r["round"]), int(r["index"])) for r in rows] == sorted(_finished(out))
    assert {int(r["attempt"]) for r in rows if r["index"] in ("1", "3")} == {1}


def _interrupt_after(project: Path, out: Path, args: List[str], env: Dict[str, str], finished: int) -> None:
    process = subprocess.Popen([sys.executable, "-m", "autofinetune", *args], cwd=project, env=dict(os.environ, **env),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        journal = out / "journal.jsonl"
        if journal.exists() and journal.read_text().count('"event": "finish"') >= finished:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr


def test_ctrl_c_then_resume_leaves_every_finished_trial_in_the_views(project: Path):
    out = project / "out"
    env = _env(project, out, SLEEP="0.3")
    _interrupt_after(project, out, _args(out, 6, 2), env, finished=3)
    assert len(_finished(out)) >= 3
    _check_views(out)
    # a crash between the journal and the appended row: resume rebuilds the views from the journal
    with open(out / "trials.csv", newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    (out / "trials.csv").write_text("".join(lines[:-1]))
    (out / "trials.json").write_text("[]\n")
    result = run_cli(_args(out, 6, 2, "--resume"), cwd=project, env=_env(project, out))
    assert result.returncode == 0, result.stderr
    assert len(_finished(out)) == 12
    _check_views(out)


def test_ctrl_c_in_async_mode_keeps_the_views_whole(project: Path):
    out = project / "out"
    _interrupt_after(project, out, _args(out, 3, 4, "--async"), _env(project, out, SLEEP="0.2"), finished=4)
    _check_views(out)


def test_trials_json_is_not_rewritten_per_trial(project: Path):
    """Forty quick trials in one round see trials.json swapped in at most about once a second."""
    out = project / "out"
    result = run_cli(_args(out, 40, 1), cwd=project, env=_env(project, out))
    assert result.returncode == 0, result.stderr
    ledger = [json.loads(line) for line in (project / "ledger.jsonl").read_text().splitlines()]
    seen = [tuple(r["seen"]) for r in ledger if r["seen"] is not None]
    versions: Set[Tuple[int, int]] = set(seen)
    span = max(r["time"] for r in ledger) - min(r["time"] for r in ledger)
    assert len(seen) >= 30
    # one rewrite per second at most (plus the first one, and one for a rounding second)
    assert len(versions) <= span + 2, (len(versions), span)
    _check_views(out)


# -- unit: the snapshot does not copy -------------------------------------------------------------
def _record(index: int, score: float | None) -> TrialRecord:
    return TrialRecord(round=0, index=index, params={"x": 0.5}, point=[0.5], status=Status.OK if score is not None else Status.FAILED,
                       score=score, model_dir=f"/nowhere/round0/model-{index}", log_path=f"/nowhere/round0/log-{index}.info")


def test_a_snapshot_shares_the_trials_and_fixes_their_count(tmp_path: Path):
    records = SearchRecords(tmp_path, ["x"])
    for index in range(3):
        records.add(_record(index, 0.1 * index if index != 1 else None))
    view = records.view()
    snapshot = SearchSnapshot(tmp_path, "train.py", None, 3, 1, 0, view, records.best, 0, 0, frozenset(), False, 0.0,  # type: ignore[arg-type]
                              records.failed)
    assert snapshot.trials._trials is records.trials  # type: ignore[attr-defined]  # shared, not copied
    records.add(_record(3, 0.9))
    assert len(snapshot.trials) == 3 and [t.index for t in snapshot.trials] == [0, 1, 2]
    assert snapshot.trials[-1].index == 2 and [t.index for t in snapshot.trials[1:]] == [1, 2]
    with pytest.raises(IndexError):
        snapshot.trials[3]
    assert snapshot.failed == 1 and records.failed == 1
    assert isinstance(records.view(), TrialsView) and len(records.view()) == 4
    assert records.find(0, 3) is records.trials[3] and records.find(5, 0) is None
    assert records.best is records.trials[3]


def test_a_deferred_rewrite_comes_without_another_trial(tmp_path: Path):
    records = SearchRecords(tmp_path, ["x"], interval=0.2)
    first, second = _record(0, 0.1), _record(1, 0.2)
    records.add(first)
    records.finished(first)  # the first rewrite is at once
    records.add(second)
    records.finished(second)  # within the interval: deferred to a timer
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(json.loads((tmp_path / "trials.json").read_text())) < 2:
        time.sleep(0.02)
    assert len(json.loads((tmp_path / "trials.json").read_text())) == 2
    records.close()
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["index"] for r in rows] == ["0", "1"]


def test_a_planted_symlink_at_trials_csv_is_replaced_never_followed(tmp_path: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "trials.csv").symlink_to(victim)
    records = SearchRecords(out, ["x"])
    record = _record(0, 0.5)
    records.add(record)
    records.finished(record)
    records.close()
    assert victim.read_text() == "precious\n"
    assert not (out / "trials.csv").is_symlink()
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 1


def test_the_kept_renderings_match_a_fresh_rendering(tmp_path: Path):
    """Rows are rendered once, when added; the views must still say what the rows say now."""
    records = SearchRecords(tmp_path, ["x"], header="# h")
    for round_index, index, attempt, score in [(1, 0, 0, 0.5), (0, 2, 1, None), (0, 1, 0, 0.25), (0, 2, 0, None), (2, 10, 0, 1e-7)]:
        record = _record(index, score)
        record.round, record.attempt, record.params = round_index, attempt, {"x": 123456.789 if index == 10 else 0.5}
        records.add(record)
    ordered = sorted(records.trials, key=lambda t: (t.round, t.index, t.attempt))
    assert records.ordered() == ordered
    rows = [records.row(t) for t in ordered]
    assert json.loads(records.json_text()) == json.loads(json.dumps(rows))
    assert records.json_text() == json.dumps(rows, indent=1) + "\n"
    with open(tmp_path / "fresh.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=records.csv_fields(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert records.csv_text() == (tmp_path / "fresh.csv").read_text()
    lines = records.log_text().splitlines()
    assert lines[0] == "# h" and lines[1].split() == ["round", "index", "status", "score", "x", "parent", "model_dir"]
    assert [line.split()[:2] for line in lines[2:7]] == [[str(t.round), str(t.index)] for t in ordered]
    assert len({line.rindex(" ") + 1 for line in lines[1:7]}) == 1  # the last column (model_dir) is aligned
