"""`summary`, `plot`, trials.csv/json and the non-TTY progress lines, on real searches.

The finished search runs in a subprocess with its stdout piped (not a terminal), with the
default views attached, exactly as a user's search in CI or under nohup would.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from autofinetune.errors import ConfigError
from autofinetune.views.summary import format_text, main_summary, summarize
from conftest import run_cli

#: A population-based-aware train.py: a resumed model is one generation deeper and scores a bit
#: better (so the best model has a lineage); batch sizes above --fail_when_batch_over crash.
TRAIN = textwrap.dedent(
    """
    import argparse, os, sys, time
    import autofinetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--dropout", type=float, required=True)
    parser.add_argument("--saved_params_dir", required=True)
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail_when_batch_over", type=int, default=1000)
    args = parser.parse_args()
    time.sleep(args.sleep)
    if args.batch_size > args.fail_when_batch_over:
        sys.exit("simulated crash: batch size %d is too big" % args.batch_size)
    depth = 0
    if args.model_path:
        with open(os.path.join(args.model_path, "depth.txt")) as handle:
            depth = int(handle.read()) + 1
    with open(os.path.join(args.saved_params_dir, "depth.txt"), "w") as handle:
        handle.write(str(depth))
    score = 0.7 - (args.learning_rate - 0.01) ** 2 * 50 - ((args.batch_size - 16) / 40.0) ** 2 - (args.dropout - 0.3) ** 2 + 0.05 * depth
    autofinetune.report_final_result(score)
    """
)

HPARAM = textwrap.dedent(
    """
    param_list:
    - name : learning_rate
      init_value : 0.01
      type : float
      lower_than : 0.1
      greater_than : 0.0001
      log : true
    - name : batch_size
      init_value : 16
      type : int
      lower_than : 32
      greater_than : 8
    - name : dropout
      init_value : 0.5
      type : float
      lower_than : 0.9
      greater_than : 0.0
    """
)
NAMES = ["learning_rate", "batch_size", "dropout"]
POPSIZE, ROUNDS = 4, 3

#: Runs a search through the Python API with the views the CLI attaches (VisualDL, progress).
DRIVER = textwrap.dedent(
    """
    import sys
    from autofinetune.api import tune

    out = sys.argv[1]
    tune("train.py", "hparam.yaml", popsize=%d, rounds=%d, output_dir=out, workers=2, seed=11,
         passthrough={"fail_when_batch_over": 14}, progress=True)
    """ % (POPSIZE, ROUNDS)
)


def _project(folder: Path) -> Path:
    (folder / "train.py").write_text(TRAIN)
    (folder / "hparam.yaml").write_text(HPARAM)
    return folder


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> Dict[str, Any]:
    """A finished population-based search with some crashes, run with its stdout piped."""
    folder = _project(tmp_path_factory.mktemp("summary"))
    (folder / "driver.py").write_text(DRIVER)
    result = subprocess.run([sys.executable, "driver.py", "out"], cwd=folder, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = folder / "out"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert any(r["status"] != "ok" for r in rows) and any(r["status"] == "ok" for r in rows)
    return {"out": out, "stdout": result.stdout, "rows": rows}


def _ok_rows(rows: List[Dict[str, str]]) -> List[Dict[str, str]]:
    return [r for r in rows if r["status"] == "ok"]


# -- trials.csv / trials.json ------------------------------------------------------------------
def test_trials_csv_and_json_columns(search):
    out, rows = search["out"], search["rows"]
    header = next(csv.reader((out / "trials.csv").open()))
    assert header == ["round", "index", *NAMES, "score", "status", "duration", "slot", "gpu", "parent", "log_path",
                      "model_dir", "exit_code", "attempt", "message"]
    assert len(rows) == POPSIZE * ROUNDS
    assert [(int(r["round"]), int(r["index"])) for r in rows] == [(r, i) for r in range(ROUNDS) for i in range(POPSIZE)]
    data = json.loads((out / "trials.json").read_text())
    assert [list(d) for d in data] == [header] * len(rows)
    for row, item in zip(rows, data):
        assert isinstance(item["batch_size"], int) and isinstance(item["learning_rate"], float)
        assert (out / item["log_path"]).is_file() and (out / item["model_dir"]).is_dir()
        assert item["slot"] in ("cpu:0", "cpu:1") and item["duration"] > 0
        if item["status"] == "ok":
            assert float(row["score"]) == item["score"]
        else:
            assert row["score"] == "" and item["score"] is None and item["exit_code"] not in (0, None)
        if item["round"] == 0:
            assert item["parent"] is None
        else:  # population-based: every later trial resumed from a model of the round before
            assert re.fullmatch(rf"round{item['round'] - 1}/model-\d", item["parent"]), item["parent"]


# -- summary of a finished search ----------------------------------------------------------------
def test_summary_json_of_a_finished_search(search, capsys):
    out, rows = search["out"], search["rows"]
    assert main_summary([str(out), "--format", "json", "--top", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ok = _ok_rows(rows)
    assert summary["state"] == "finished"
    assert summary["counts"] == {"planned": POPSIZE * ROUNDS, "finished": len(rows), "ok": len(ok), "pruned": 0, "failed": len(rows) - len(ok),
                                 "running": 0, "queued": 0, "interrupted": 0, "retried": 0, "rounds_done": ROUNDS}
    best = max(ok, key=lambda r: float(r["score"]))
    assert summary["best"]["score"] == float(best["score"])
    assert (summary["best"]["round"], summary["best"]["index"]) == (int(best["round"]), int(best["index"]))
    assert summary["best"]["params"]["batch_size"] == int(best["batch_size"])
    assert [t["score"] for t in summary["top"]] == sorted((float(r["score"]) for r in ok), reverse=True)[:3]
    assert [t["rank"] for t in summary["top"]] == [1, 2, 3]
    for number, entry in enumerate(summary["rounds"]):
        mine = [float(r["score"]) for r in ok if r["round"] == str(number)]
        assert entry["round"] == number and entry["complete"] is True
        assert entry["best_score"] == (max(mine) if mine else None)
    assert len(summary["rounds"]) == ROUNDS
    failed = [r for r in rows if r["status"] != "ok"]
    assert [(f["round"], f["index"]) for f in sorted(summary["failures"], key=lambda f: (f["round"], f["index"]))] == \
        [(int(r["round"]), int(r["index"])) for r in failed]
    for failure in summary["failures"]:
        assert Path(failure["log_path"]).is_file() and failure["log_path"].endswith(f"log-{failure['index']}.info")
        assert "simulated crash" in failure["log_tail"]
    # The lineage agrees with the one the tuner printed at the end of the search.
    printed = re.search(r"^The best model's lineage: (.+)$", search["stdout"], re.MULTILINE)
    assert printed, "the deeper-is-better train.py should make the best model a resumed one"
    assert summary["lineage"] == printed.group(1).split(" -> ")
    assert len(summary["lineage"]) >= 2 and summary["lineage"][-1] == summary["best"]["model"]


def test_summary_text_of_a_finished_search(search, capsys):
    out, rows = search["out"], search["rows"]
    assert main_summary([str(out)]) == 0
    text = capsys.readouterr().out
    best = max(_ok_rows(rows), key=lambda r: float(r["score"]))
    assert text.startswith(f"Search {out.resolve()}: finished, {len(rows)}/{len(rows)} trials finished")
    assert f"Best: score {float(best['score'])!r} at round {best['round']}, trial {best['index']}" in text
    assert f"  batch_size={best['batch_size']}\n" in text
    assert "Lineage of the best model: round0/model-" in text
    top = text.split(f"Top {min(5, len(_ok_rows(rows)))}:\n")[1].split("\n\n")[0].splitlines()
    assert len(top) == 1 + min(5, len(_ok_rows(rows))) and top[0].split()[:4] == ["rank", "round", "trial", "score"]
    assert "Per round:" in text and "Running" not in text
    failed = [r for r in rows if r["status"] != "ok"]
    assert f"Failures ({len(failed)}):" in text
    for row in failed:
        assert str(out / row["log_path"]) in text
    assert text.count("last log line: simulated crash") == len(failed)


# -- summary of a running, then interrupted, search -----------------------------------------------
def test_summary_of_a_running_search_then_interrupted(tmp_path: Path, capsys):
    folder = _project(tmp_path)
    out = folder / "out"
    process = subprocess.Popen([sys.executable, "-m", "autofinetune", "train.py", "--param_file=hparam.yaml", "--popsize=2",
                                "--round=2", "--workers=2", "--seed=2", f"--output_dir={out}", "sleep", "20"],
                               cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        journal = out / "journal.jsonl"
        deadline = time.monotonic() + 60
        while not (journal.is_file() and journal.read_text().count('"event": "started"') >= 2):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the search did not launch its trials"
            time.sleep(0.1)
        time.sleep(0.3)  # both trials have really started
        summary = summarize(out)
        assert summary["state"] == "running"
        assert summary["counts"]["running"] == 2 and summary["counts"]["queued"] == 0 and summary["counts"]["finished"] == 0
        assert summary["best"] is None and summary["lineage"] is None
        assert [(r["round"], r["index"]) for r in summary["running"]] == [(0, 0), (0, 1)]
        assert all(Path(r["log_path"]).is_file() and set(r["params"]) == set(NAMES) for r in summary["running"])
        assert {r["slot"] for r in summary["running"]} == {"cpu:0", "cpu:1"}
        assert summary["rounds"] == [dict(round=0, finished=0, ok=0, pruned=0, failed=0, running=2, complete=False,
                                          best_score=None, best_index=None, best_params=None)]
        assert main_summary([str(out)]) == 0
        text = capsys.readouterr().out
        assert ": running, 0/4 trials finished (0 ok, 0 failed), 2 running, 0 queued" in text and "Running (2):" in text
        assert "Best: none yet" in text and "round not finished yet" in text
        process.send_signal(signal.SIGINT)  # Ctrl-C: the tuner stops its trials and says so
        process.communicate(timeout=60)
        assert process.returncode == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    summary = summarize(out)
    assert summary["state"] == "interrupted" and summary["counts"]["running"] == 0
    assert [(r["round"], r["index"], r["was"]) for r in summary["interrupted"]] == [(0, 0, "running"), (0, 1, "running")]
    assert summary["counts"]["finished"] == 0 and "run again by --resume" in format_text(summary)


def test_summary_of_a_search_whose_tuner_was_killed(tmp_path: Path):
    folder = _project(tmp_path)
    out = folder / "out"
    process = subprocess.Popen([sys.executable, "-m", "autofinetune", "train.py", "--param_file=hparam.yaml", "--popsize=2",
                                "--round=2", "--workers=2", "--seed=2", f"--output_dir={out}", "sleep", "20"],
                               cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        journal = out / "journal.jsonl"
        deadline = time.monotonic() + 60
        while not (journal.is_file() and journal.read_text().count('"event": "started"') >= 2):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        process.kill()  # kill -9: no chance to journal anything
        process.wait(timeout=30)
    pids = [json.loads(line)["pid"] for line in journal.read_text().splitlines() if '"event": "started"' in line]
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):  # the trials notice their tuner is gone and stop
        assert time.monotonic() < deadline, "trial processes outlived their killed tuner"
        time.sleep(0.1)
    summary = summarize(out)
    assert summary["state"] == "stopped" and summary["counts"]["running"] == 2
    text = format_text(summary)
    assert "Were running when the tuner stopped (2):" in text and "--resume" in text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- damaged or wrong folders ---------------------------------------------------------------------
def test_summary_tolerates_a_torn_last_line_but_not_a_damaged_middle(search, tmp_path: Path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(search["out"], copy)
    lines = (copy / "journal.jsonl").read_text().splitlines(keepends=True)
    (copy / "journal.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    summary = summarize(copy)
    assert summary["journal_torn_last_line"] is True
    assert summary["counts"]["finished"] >= len(search["rows"]) - 1
    assert "torn" in format_text(summary)
    (copy / "journal.jsonl").write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    with pytest.raises(ConfigError, match=r"line 2 is not valid JSON"):
        summarize(copy)
    capsys.readouterr()
    assert main_summary([str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{copy / 'journal.jsonl'}: line 2 is not valid JSON" in err


def test_summary_refuses_a_missing_or_foreign_folder(tmp_path: Path, capsys):
    with pytest.raises(ConfigError, match="no such directory"):
        summarize(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="not an autofinetune output directory"):
        summarize(tmp_path / "other")
    assert main_summary([str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autofinetune summary: error: ")


# -- plot ------------------------------------------------------------------------------------------
def _png_size(path: Path) -> "tuple[int, int]":
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png(search, tmp_path: Path, capsys):
    pytest.importorskip("matplotlib")
    from autofinetune.views.plot import main_plot

    target = tmp_path / "sub" / "search.png"
    assert main_plot([str(search["out"]), "--output", str(target)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {target}"
    width, height = _png_size(target)
    assert width >= 800 and height >= 500  # the score panel and a row of 3 hyperparameter panels
    assert target.stat().st_size > 20_000  # points and lines, not an empty canvas
    assert main_plot([str(search["out"])]) == 0  # default: next to the search's results
    assert capsys.readouterr().out.strip() == f"wrote {search['out'].resolve() / 'plot.png'}"
    assert _png_size(search["out"] / "plot.png") == (width, height)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "journal.jsonl").write_text("")
    assert main_plot([str(tmp_path / "empty")]) == 2
    assert "nothing to plot" in capsys.readouterr().err


def test_plot_leaves_the_callers_matplotlib_backend_alone(search, tmp_path: Path):
    """A notebook's backend must survive `plot_search`: no pyplot, no matplotlib.use()."""
    pytest.importorskip("matplotlib")
    code = textwrap.dedent(
        """
        import sys, matplotlib
        matplotlib.use("svg")
        from autofinetune.journal import replay
        from autofinetune.views.plot import _axes, plot_search
        plot_search(sys.argv[1], sys.argv[2])
        state = replay(sys.argv[1] + "/journal.jsonl")
        axes = {a.name: (a.log, a.choices) for a in _axes(state, state.trials)}
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, axes["learning_rate"], axes["batch_size"])
        """
    )
    result = subprocess.run([sys.executable, "-c", code, str(search["out"]), str(tmp_path / "p.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["svg", "False", "(True,", "None)", "(False,", "None)"]
    assert _png_size(tmp_path / "p.png")[0] >= 800


# -- progress on a non-terminal ----------------------------------------------------------------------
def test_progress_lines_without_a_terminal(search):
    stdout = search["stdout"]
    assert "\r" not in stdout and "\x1b" not in stdout  # no cursor tricks in a log file
    progress = [line for line in stdout.splitlines() if line.startswith("progress: ")]
    assert len(progress) == ROUNDS  # one compact line per round, not one per trial
    rows = search["rows"]
    for number, line in enumerate(progress):
        done = (number + 1) * POPSIZE
        failed = sum(1 for r in rows if int(r["round"]) <= number and r["status"] != "ok")
        assert line.startswith(f"progress: round {number + 1}/{ROUNDS} done | trials {done}/{POPSIZE * ROUNDS}: "
                               f"{done - failed} ok, {failed} failed, 0 running, 0 queued | best "), line
        assert re.search(r"\| elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d$", line), line
    assert progress[-1].endswith("ETA 0:00:00")
    best = max(_ok_rows(rows), key=lambda r: float(r["score"]))
    assert f"best {float(best['score']):.6g} (" in progress[-1] and f"batch_size={best['batch_size']}" in progress[-1]
    # (the search's "resumes from" lines say where a trial starts, not how it ended)
    per_trial = [line for line in stdout.splitlines() if re.match(r"\[round \d+\] trial \d+ (?!resumes from )", line)]
    assert len(per_trial) == POPSIZE * ROUNDS  # the search's own lines, not repeated by the view


# -- regressions through the real CLI -------------------------------------------------------------
def _summary_json(out: Path, cwd: Path) -> Dict[str, Any]:
    result = run_cli(["summary", str(out), "--format", "json"], cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _search_args(out: Path, *extra: str, popsize: int = 2, rounds: int = 2) -> List[str]:
    return ["train.py", "--param_file=hparam.yaml", f"--popsize={popsize}", f"--round={rounds}", "--evaluator=fulltrail",
            "--workers=2", "--seed=3", f"--output_dir={out}", *extra]


def test_summary_calls_a_finished_async_search_finished(tmp_path: Path):
    """It once said "running": it counted `round` events, which async journals did not write."""
    folder = _project(tmp_path)
    out = folder / "out"
    result = run_cli(_search_args(out, "--async", popsize=3, rounds=3), cwd=folder)
    assert result.returncode == 0, result.stderr
    summary = _summary_json(out, folder)
    assert summary["state"] == "finished"
    assert summary["config"]["asynchronous"] is True
    assert summary["counts"]["rounds_done"] == 3 and summary["counts"]["finished"] == 9
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2] and all(r["complete"] for r in summary["rounds"])
    assert "round not finished yet" not in format_text(summary)


def _keys(summary: Dict[str, Any]) -> Dict[str, Any]:
    return {"top": sorted(summary), "counts": sorted(summary["counts"]), "config": sorted(summary["config"])}


def test_summary_of_async_and_round_searches_has_one_shape(tmp_path: Path):
    folder = _project(tmp_path)
    summaries = {}
    for mode, extra in (("rounds", ()), ("async", ("--async",))):
        result = run_cli(_search_args(folder / mode, *extra), cwd=folder)
        assert result.returncode == 0, result.stderr
        summaries[mode] = _summary_json(folder / mode, folder)
    rounds, asynchronous = summaries["rounds"], summaries["async"]
    assert _keys(rounds) == _keys(asynchronous)
    assert rounds["counts"] == asynchronous["counts"]
    assert rounds["state"] == asynchronous["state"] == "finished"
    assert [sorted(r) for r in rounds["rounds"]] == [sorted(r) for r in asynchronous["rounds"]]


def test_lineage_schedule_of_a_population_based_search(search, capsys):
    """The schedule examples/pbt_schedule/lineage.py prints, from the summary."""
    out = search["out"]
    summary = summarize(out)
    schedule = summary["lineage_schedule"]
    assert [s["model"] for s in schedule] == summary["lineage"]
    assert [s["round"] for s in schedule] == list(range(len(schedule)))  # one model per round, oldest first
    rows = {(int(r["round"]), int(r["index"])): r for r in search["rows"]}
    for step in schedule:
        row = rows[(step["round"], step["index"])]
        assert step["model"] == f"round{step['round']}/model-{step['index']}"
        assert step["score"] == float(row["score"])
        assert step["params"]["batch_size"] == int(row["batch_size"])
        assert step["params"]["learning_rate"] == float(row["learning_rate"])
    assert schedule[-1]["round"] == summary["best"]["round"] and schedule[-1]["index"] == summary["best"]["index"]
    text = format_text(summary)
    section = text.split("Schedule of the best lineage")[1].split("\n\n")[0].splitlines()[1:]
    assert section[0].split() == ["model", "score", *NAMES]
    assert [line.split()[0] for line in section[1:]] == summary["lineage"]


def test_log_tail_reads_only_inside_the_output_dir(search, tmp_path: Path):
    """A crafted journal must not make `summary` print an arbitrary file."""
    copy = tmp_path / "copy"
    shutil.copytree(search["out"], copy)
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    (copy / "round0" / "escape.info").symlink_to(secret)
    forged = [str(secret), str(copy / "round0" / "escape.info"), str(copy / ".." / "secret.txt")]
    lines = []
    for line in (copy / "journal.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "finish" and event["trial"]["status"] != "ok" and forged:
            event["trial"]["log_path"] = forged.pop()
        lines.append(json.dumps(event))
    assert not forged, "the fixture should have three failed trials"
    (copy / "journal.jsonl").write_text("\n".join(lines) + "\n")
    summary = summarize(copy)
    assert len(summary["failures"]) >= 3
    assert "hunter2" not in json.dumps(summary) and "hunter2" not in format_text(summary)
    assert all(f["log_tail"] == "" for f in summary["failures"] if "secret" in f["log_path"] or "escape" in f["log_path"])
