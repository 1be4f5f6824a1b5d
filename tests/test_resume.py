"""Nothing lost: SIGKILL at random moments, Ctrl-C, resume, refusals."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import run_cli

#: Appends a start line and (after reporting) a done line to the ledger, with its pid and
#: the pid of a grandchild it forks (which must die with it).
RESUME_TRAIN = textwrap.dedent("""
    import argparse, json, os, re, subprocess, sys, time
    import autofinetune
    p = argparse.ArgumentParser()
    p.add_argument("--x", type=float); p.add_argument("--y", type=float); p.add_argument("--n", type=int)
    p.add_argument("--saved_params_dir"); p.add_argument("--model_path"); p.add_argument("--epochs", type=int)
    a = p.parse_args()
    key = "/".join(a.saved_params_dir.rstrip("/").split("/")[-2:])
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    def ticks(pid):
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])
    def ledger(event):
        with open(os.environ["LEDGER"], "a") as f:
            f.write(json.dumps({"key": key, "event": event, "pid": os.getpid(), "grandchild": grandchild.pid,
                                "ticks": ticks(os.getpid()), "grandchild_ticks": ticks(grandchild.pid)}) + "\\n")
    ledger("start")
    time.sleep(0.15 + 0.25 * a.x)
    with open(os.path.join(a.saved_params_dir, "w.txt"), "w") as f:
        f.write(str(a.x))
    autofinetune.report_final_result(1 - (a.x - 0.3) ** 2 - (a.y - 0.6) ** 2 - ((a.n - 3) / 10) ** 2)
    ledger("done")
""")

SPACE = textwrap.dedent("""
    param_list:
    - {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}
    - {name: y, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}
    - {name: n, type: int, init_value: 5, greater_than: 1, lower_than: 9}
""")


def _alive(process) -> bool:
    """Is this exact process (pid, start ticks) still running? A reused pid does not count."""
    pid, ticks = process if isinstance(process, tuple) else (process, None)
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and (ticks is None or int(fields[19]) == ticks)


def _wait_dead(pids, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def _ledger(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _candidates(out: Path):
    return [(r["round"], r["index"], r["x"], r["y"], r["n"]) for r in json.loads((out / "trials.json").read_text())]


@pytest.fixture
def resume_project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(RESUME_TRAIN)
    (tmp_path / "hparam.yaml").write_text(SPACE)
    return tmp_path


def _args(out: Path, strategy: str = "pshe2"):
    return [sys.executable, "-m", "autofinetune", "train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=4",
            f"--output_dir={out}", "--workers=2", "--seed=17", f"--tuning_strategy={strategy}", "--evaluator=populationbased"]


@pytest.mark.parametrize("strategy", ["pshe2", "hazero"])
def test_sigkill_at_random_moments_then_resume_loses_and_repeats_nothing(resume_project: Path, strategy: str):
    env = dict(os.environ)
    reference = resume_project / "reference"
    env["LEDGER"] = str(resume_project / "reference.jsonl")
    done = subprocess.run(_args(reference, strategy), cwd=resume_project, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = _candidates(reference)
    assert len(expected) == 16

    out = resume_project / "out"
    ledger_path = resume_project / "ledger.jsonl"
    env["LEDGER"] = str(ledger_path)
    rng = random.Random(strategy)
    kills = 0
    for attempt in range(40):
        args = _args(out, strategy) + (["--resume"] if out.exists() else [])
        lines_before = len(_ledger(ledger_path))
        process = subprocess.Popen(args, cwd=resume_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kills < 12 and kills % 3 != 2:
            # kill while trials run: after this run's first launch, at a random moment
            while process.poll() is None and len(_ledger(ledger_path)) == lines_before:
                time.sleep(0.01)
            # within about one trial's length (0.15-0.4 s), so that a run seldom gets far enough to
            # finish the search before the tuner has been killed ten times
            wait = rng.uniform(0.0, 0.4)
        else:  # kill anywhere: during start-up, replay or a launch
            wait = rng.uniform(0.05, 0.8) if kills < 12 else 120
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            kills += 1
            stdout, stderr = process.communicate()
            seen = {p for r in _ledger(ledger_path) for p in ((r["pid"], r["ticks"]), (r["grandchild"], r["grandchild_ticks"]))}
            assert _wait_dead(seen) == [], "a trial or grandchild of the killed tuner lived on"
            continue
        stdout, stderr = process.communicate()
        assert process.returncode == 0, stderr
        break
    assert kills >= 10
    assert _candidates(out) == expected  # the same candidates as an uninterrupted run
    rows = json.loads((out / "trials.json").read_text())
    assert len(rows) == 16 and all(r["status"] == "ok" for r in rows)
    done_lines = [r["key"] for r in _ledger(ledger_path) if r["event"] == "done"]
    assert all(done_lines.count(key) <= 1 for key in done_lines), "a finished trial ran twice"
    assert len(set(done_lines)) >= 15  # at most a trial killed between its report and its ledger line
    starts = [r["key"] for r in _ledger(ledger_path) if r["event"] == "start"]
    assert len(starts) > 16, "some trials should have been interrupted and re-run"
    assert "The final best eval score is" in stdout


def test_ctrl_c_stops_children_fast_and_resume_finishes(resume_project: Path):
    env = dict(os.environ, LEDGER=str(resume_project / "ledger.jsonl"))
    out = resume_project / "out"
    slow = resume_project / "train.py"
    slow.write_text(slow.read_text().replace("time.sleep(0.15 + 0.25 * a.x)", "time.sleep(2.0 if a.x > 0 else 0)"))
    process = subprocess.Popen(_args(out), cwd=resume_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_ledger(resume_project / "ledger.jsonl")) < 2:
        time.sleep(0.05)
    started = _ledger(resume_project / "ledger.jsonl")
    assert started, "trials should have started"
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=10)
    assert time.monotonic() - sent < 5.0
    assert process.returncode == 130
    assert "--resume" in stderr and "Traceback" not in stderr
    assert _wait_dead({p for r in started for p in ((r["pid"], r["ticks"]), (r["grandchild"], r["grandchild_ticks"]))}, 1.0) == []
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert any(e["event"] == "interrupted" for e in journal)
    result = subprocess.run(_args(out) + ["--resume"], cwd=resume_project, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads((out / "trials.json").read_text())) == 16


def test_result_written_before_the_tuner_died_counts_as_finished(resume_project: Path):
    """Simulate the window where the trial reported but the tuner died before journaling it."""
    env = dict(os.environ, LEDGER=str(resume_project / "ledger.jsonl"))
    out = resume_project / "out"
    result = subprocess.run(_args(out) + ["--round=1"], cwd=resume_project, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    journal = out / "journal.jsonl"
    lines = journal.read_text().splitlines()
    # drop the finish of trial 2 and the round record: as if SIGKILL came right after its report
    kept = [l for l in lines if not (json.loads(l)["event"] == "finish" and json.loads(l)["trial"]["index"] == 2)
            and json.loads(l)["event"] != "round"]
    journal.write_text("\n".join(kept) + "\n" + '{"event": "finish", "tri')  # and a torn last line
    before = len(_ledger(resume_project / "ledger.jsonl"))
    result = subprocess.run(_args(out) + ["--round=1", "--resume"], cwd=resume_project, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(_ledger(resume_project / "ledger.jsonl")) == before, "nothing may run again"
    rows = json.loads((out / "trials.json").read_text())
    assert len(rows) == 4
    row = [r for r in rows if r["index"] == 2][0]
    assert row["status"] == "ok" and "exit status unknown" in row["message"]
    assert "torn last line" in result.stderr


@pytest.mark.parametrize("change, words", [
    (("hparam.yaml", SPACE.replace("lower_than: 9", "lower_than: 12")), ["param file"]),
    (("--tuning_strategy=hazero",), ["--tuning_strategy"]),
    (("--evaluator=fulltrail",), ["--evaluator"]),
    (("--popsize=3",), ["--popsize"]),
    (("--seed=5",), ["--seed"]),
])
def test_resume_refuses_a_changed_search(resume_project: Path, change, words):
    env = {"LEDGER": str(resume_project / "ledger.jsonl")}
    out = resume_project / "out"
    base = _args(out)[3:]
    result = run_cli(base + ["--round=1"], cwd=resume_project, env=env)
    assert result.returncode == 0, result.stderr
    args = base + ["--round=2", "--resume"]
    if change[0] == "hparam.yaml":
        (resume_project / "hparam.yaml").write_text(change[1])
    else:
        flag = change[0].split("=")[0]
        args = [a for a in args if not a.startswith(flag + "=")] + [change[0]]
    result = run_cli(args, cwd=resume_project, env=env)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and line.startswith("autofinetune: error: --resume:")
    for word in words:
        assert word in line


def test_resume_continues_to_more_rounds_and_refuses_missing_journal(resume_project: Path):
    env = {"LEDGER": str(resume_project / "ledger.jsonl")}
    out = resume_project / "out"
    assert run_cli(_args(out)[3:] + ["--round=1"], cwd=resume_project, env=env).returncode == 0
    result = run_cli(_args(out)[3:] + ["--round=2", "--resume"], cwd=resume_project, env=env)
    assert result.returncode == 0, result.stderr
    assert len(json.loads((out / "trials.json").read_text())) == 8
    result = run_cli(_args(resume_project / "elsewhere")[3:] + ["--resume"], cwd=resume_project, env=env)
    assert result.returncode == 2 and "journal.jsonl not found" in result.stderr


def test_resume_stops_a_leftover_trial_group_of_the_killed_run(resume_project: Path):
    """If a trial of the dead tuner is still running (say its supervisor was killed too), resume stops it."""
    env = dict(os.environ, LEDGER=str(resume_project / "ledger.jsonl"))
    out = resume_project / "out"
    result = subprocess.run(_args(out) + ["--round=1"], cwd=resume_project, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    # and a descendant of it that left its group, as a double-forked daemon does: only the
    # journaled cookie of the trial finds it once the launcher that knew it is gone
    cookie = "c0ffee" * 5 + "00"
    escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                               env=dict(os.environ, AUTOFINETUNE_TRIAL_COOKIE=cookie))
    ticks = int(Path(f"/proc/{leftover.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    journal = out / "journal.jsonl"
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    assert all(len(e["cookie"]) == 32 for e in events if e["event"] == "started")  # what the launcher marked each trial with
    kept = [e for e in events if not (e["event"] == "finish" and e["trial"]["index"] == 1) and e["event"] != "round"]
    kept.append({"event": "started", "round": 0, "index": 1, "attempt": 0, "pid": leftover.pid, "start_ticks": ticks, "slot": "cpu:0",
                 "cookie": cookie})
    journal.write_text("".join(json.dumps(e) + "\n" for e in kept))
    (out / "round0" / "result-1.json").unlink()  # it had not reported yet
    try:
        result = subprocess.run(_args(out) + ["--round=1", "--resume"], cwd=resume_project, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"Stopped a leftover process group of round 0 trial 1 from the interrupted run (pid {leftover.pid})" in result.stdout
        assert leftover.wait(timeout=5) is not None
        assert escaped.wait(timeout=5) is not None
    finally:
        for process in (leftover, escaped):
            if process.poll() is None:
                process.kill()
                process.wait()
    rows = json.loads((out / "trials.json").read_text())
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
