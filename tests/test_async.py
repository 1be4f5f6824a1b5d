"""The asynchronous mode: a freed slot takes the candidate's next trial at once (docs/architecture.md, policies.AsyncPolicy)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import run_cli

#: Candidate 0 is slow; the others are fast. Each launch and completion goes to the ledger.
TRAIN = textwrap.dedent("""
    import argparse, json, os, time
    import autofinetune
    p = argparse.ArgumentParser()
    p.add_argument("--x", type=float); p.add_argument("--y", type=float)
    p.add_argument("--saved_params_dir"); p.add_argument("--model_path"); p.add_argument("--epochs")
    a = p.parse_args()
    round_dir, model = a.saved_params_dir.rstrip("/").split("/")[-2:]
    key = [int(round_dir[5:]), int(model[6:])]
    def ledger(event):
        with open(os.environ["LEDGER"], "a") as f:
            f.write(json.dumps({"key": key, "event": event, "time": time.time(), "model_path": a.model_path}) + "\\n")
    ledger("start")
    time.sleep(float(os.environ.get("SLOW", "1.5")) if key[1] == 0 else 0.1)
    open(os.path.join(a.saved_params_dir, "w"), "w").write("x")
    autofinetune.report_final_result(1 - (a.x - 0.3) ** 2 - (a.y - 0.6) ** 2)
    ledger("done")
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


def _ledger(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _args(out: Path, *extra: str):
    return ["train.py", "--param_file=hparam.yaml", "--popsize=3", "--round=3", f"--output_dir={out}",
            "--workers=3", "--seed=2", *extra]


def _early_starts(ledger):
    """Trials of a later round that started while candidate 0's round-0 trial still ran."""
    slow_end = next(r["time"] for r in ledger if r["key"] == [0, 0] and r["event"] == "done")
    return [r for r in ledger if r["event"] == "start" and r["key"][0] >= 1 and r["time"] < slow_end]


def test_async_starts_next_trials_without_waiting_for_the_slowest(project: Path):
    result = run_cli(_args(project / "async", "--async"), cwd=project, env={"LEDGER": str(project / "a.jsonl")})
    assert result.returncode == 0, result.stderr
    early = _early_starts(_ledger(project / "a.jsonl"))
    assert {tuple(r["key"]) for r in early} >= {(1, 1), (1, 2), (2, 1), (2, 2)}
    rows = json.loads((project / "async" / "trials.json").read_text())
    assert len(rows) == 9 and all(r["status"] == "ok" for r in rows)
    for r in range(3):  # each round's line once, in order, when the round is complete
        assert result.stdout.count(f"The local best eval value in the {r}-th round is") == 1
    lines = [l for l in result.stdout.splitlines() if l.startswith("The local best eval value")]
    assert [l.split(" in the ")[1].split("-th")[0] for l in lines] == ["0", "1", "2"]
    # population-based (the default): each resumed trial's parent is a finished trial of the round before
    for row in rows:
        if row["round"] > 0 and row["parent"]:
            assert row["parent"].startswith(f"round{row['round'] - 1}/")

    # the same search without --async waits for every round's slowest trial
    result = run_cli(_args(project / "sync"), cwd=project, env={"LEDGER": str(project / "s.jsonl")})
    assert result.returncode == 0, result.stderr
    assert _early_starts(_ledger(project / "s.jsonl")) == []


def test_async_needs_a_strategy_whose_candidates_move_alone(project: Path):
    result = run_cli(_args(project / "o", "--async", "--tuning_strategy=hazero"), cwd=project)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--async" in result.stderr and "pshe2" in result.stderr
    assert not (project / "o").exists()


def test_async_search_resumes_after_sigkill_without_repeating_a_finished_trial(project: Path):
    env = dict(os.environ, LEDGER=str(project / "ledger.jsonl"), SLOW="0.4")
    out = project / "out"
    rng = random.Random(5)
    kills = 0
    for _ in range(30):
        args = [sys.executable, "-m", "autofinetune", *_args(out, "--async", "--round=8")] + (["--resume"] if out.exists() else [])
        process = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        before = len(_ledger(project / "ledger.jsonl"))
        if kills < 5:
            while process.poll() is None and len(_ledger(project / "ledger.jsonl")) == before:
                time.sleep(0.01)
        try:
            process.wait(timeout=rng.uniform(0.05, 0.5) if kills < 5 else 120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            kills += 1
            continue
        stdout, stderr = process.communicate()
        assert process.returncode == 0, stderr
        break
    assert kills == 5
    rows = json.loads((out / "trials.json").read_text())
    assert sorted((r["round"], r["index"]) for r in rows) == [(r, i) for r in range(8) for i in range(3)]
    done = [tuple(r["key"]) for r in _ledger(project / "ledger.jsonl") if r["event"] == "done"]
    assert len(done) == len(set(done)), "a finished trial ran twice"
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    told = [(e["round"], e["index"]) for e in journal if e["event"] == "told"]
    assert sorted(set(told)) == sorted((r["round"], r["index"]) for r in rows)  # the strategy heard every result
    assert len(told) == len(set(told)), "no result is told twice"
    assert "The final best eval score is" in stdout


def test_pshe2_particles_move_alone_in_the_box_and_replay_restores_them():
    import numpy as np
    from autofinetune.strategies import PSHE2

    strategy = PSHE2(3, np.full(3, 0.5), popsize=4, seed=9)
    rng = np.random.default_rng(0)
    moved = 0
    told = []
    for step in range(40):
        index = int(rng.integers(4))
        before = [strategy.ask_particle(i) for i in range(4)]
        point = strategy.ask_particle(index)
        loss = None if step % 7 == 3 else float(np.sum((point - 0.2) ** 2))
        strategy.tell_particle(index, loss)
        told.append((index, loss))
        after = [strategy.ask_particle(i) for i in range(4)]
        for i in range(4):  # only the told particle moves
            if i != index:
                assert np.array_equal(before[i], after[i])
            assert np.all((after[i] >= 0) & (after[i] <= 1))
        moved += not np.array_equal(before[index], after[index])
    assert moved > 30  # a told particle does move
    assert not np.array_equal(strategy.ask_particle(0), strategy.ask_particle(1))
    restored = PSHE2(3, np.full(3, 0.5), popsize=4, seed=9)  # what --resume does: the seed, then the tells in order
    for index, loss in json.loads(json.dumps(told)):
        restored.ask_particle(index)
        restored.tell_particle(index, loss)
    for s in (strategy, restored):
        s.tell_particle(2, 0.01)
    assert all(np.array_equal(strategy.ask_particle(i), restored.ask_particle(i)) for i in range(4))
