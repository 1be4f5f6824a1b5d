"""The population-based evaluator end to end: real CLI, real train.py subprocesses.

Every check recomputes what the evaluator should have done from the search's own records
(journal.jsonl, trials.json) and the files the trials wrote (each toy saves `state.json` and a
`trial.json` with the sha256 of the state it saved and of the state it loaded), then compares it
with what was actually launched. Nothing here imports the evaluator.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import REPO, run_cli

SCHEDULE = REPO / "examples" / "pbt_schedule"
TOY = REPO / "examples" / "pbt_toy"

Key = Tuple[int, int]

#: A train.py over the toy's space (h0, h1) that saves and resumes a state like the toys, and
#: misbehaves on request: `--crash_above=X` crashes (after saving a state and reporting a great
#: score) when h0 > X; `--invalid_above=Y` reports an invalid 1.5 (and exits 0) when h1 > Y;
#: `--crash_rounds=0,2` crashes every trial of those rounds; `--tie=1` reports the same score
#: everywhere.
PROBE = textwrap.dedent(
    """
    import argparse, hashlib, json, os, sys
    import autofinetune

    p = argparse.ArgumentParser()
    p.add_argument("--h0", type=float, required=True)
    p.add_argument("--h1", type=float, required=True)
    p.add_argument("--saved_params_dir", required=True)
    p.add_argument("--model_path", default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--crash_above", type=float, default=2.0)
    p.add_argument("--invalid_above", type=float, default=2.0)
    p.add_argument("--crash_rounds", default="")
    p.add_argument("--tie", type=int, default=0)
    a = p.parse_args()

    loaded, depth = None, 0
    if a.model_path:
        data = open(os.path.join(a.model_path, "state.json"), "rb").read()
        loaded, depth = hashlib.sha256(data).hexdigest(), json.loads(data)["depth"]
    data = json.dumps({"depth": depth + 1, "h": [a.h0, a.h1], "dir": a.saved_params_dir}, sort_keys=True).encode()
    open(os.path.join(a.saved_params_dir, "state.json"), "wb").write(data)
    json.dump({"fingerprint": hashlib.sha256(data).hexdigest(), "loaded_fingerprint": loaded,
               "model_path": a.model_path, "epochs": a.epochs},
              open(os.path.join(a.saved_params_dir, "trial.json"), "w"))

    round_name = os.path.basename(os.path.dirname(os.path.abspath(a.saved_params_dir)))
    if a.h0 > a.crash_above:
        autofinetune.report_final_result(0.999)  # a great score, then a crash: still not a parent
        sys.exit(3)
    if a.h1 > a.invalid_above:
        autofinetune.report_final_result(1.5)  # above 1: invalid, however good it looks
        sys.exit(0)
    if round_name in {"round" + r for r in a.crash_rounds.split(",") if r}:
        raise SystemExit("simulated crash of the whole " + round_name)
    score = 0.5 if a.tie else 0.9 - (a.h0 - 0.3) ** 2 - (a.h1 - 0.6) ** 2 + 0.01 * depth
    autofinetune.report_final_result(score)
    """
)

LINEAGE = re.compile(r"^The best model's lineage: (.+)$", re.M)


# -- reading a finished search ------------------------------------------------------------------
class Search:
    """A finished search as its files tell it."""

    def __init__(self, out: Path, result: subprocess.CompletedProcess) -> None:
        self.out = out
        self.result = result
        events = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines() if line.strip()]
        # A trial's launch is journaled as "launch" (or "queued", one per attempt: the last counts).
        self.launches: Dict[Key, dict] = {(e["round"], e["index"]): e for e in events if e["event"] in ("launch", "queued")}
        self.finishes: Dict[Key, dict] = {(e["trial"]["round"], e["trial"]["index"]): e["trial"] for e in events if e["event"] == "finish"}
        self.finish_order: List[Key] = [(e["trial"]["round"], e["trial"]["index"]) for e in events if e["event"] == "finish"]
        self.rows: Dict[Key, dict] = {(r["round"], r["index"]): r for r in json.loads((out / "trials.json").read_text())}
        self.rounds = sorted({k[0] for k in self.launches})

    def ok(self, key: Key) -> bool:
        trial = self.finishes[key]
        return trial["status"] == "ok" and trial["score"] is not None

    def round_keys(self, r: int) -> List[Key]:
        return sorted(k for k in self.launches if k[0] == r)

    def top_half(self, r: int) -> List[Key]:
        """Round r's successful trials, best first (ties: lower index), the best half rounded up."""
        ok = [k for k in self.round_keys(r) if self.ok(k)]
        ranked = sorted(ok, key=lambda k: (-self.finishes[k]["score"], k[1]))
        return ranked[: math.ceil(len(ranked) / 2)]

    def expected_parents(self, r: int) -> Tuple[Optional[int], List[Key]]:
        """The parents round r must resume from: the top half of the latest earlier round with a
        success (the previous round unless it failed entirely); none means from scratch."""
        for q in range(r - 1, -1, -1):
            parents = self.top_half(q)
            if parents:
                return q, parents
        return None, []

    def model_dir(self, key: Key) -> str:
        return self.finishes[key]["model_dir"]

    def model_path_args(self, key: Key) -> List[str]:
        return [a.split("=", 1)[1] for a in self.launches[key]["argv"] if a.startswith("--model_path=")]

    def trial_json(self, key_or_dir) -> dict:
        directory = self.model_dir(key_or_dir) if isinstance(key_or_dir, tuple) else key_or_dir
        return json.loads((Path(directory) / "trial.json").read_text())

    def key_of_dir(self, directory: str) -> Key:
        (key,) = [k for k, t in self.finishes.items() if os.path.samefile(t["model_dir"], directory)]
        return key

    def lineage_printed(self) -> Optional[List[str]]:
        found = LINEAGE.findall(self.result.stdout)
        assert len(found) <= 1, found
        return found[0].split(" -> ") if found else None


def search(tmp_path: Path, script: Path, param_file: Path, *args: str, name: str = "out", exit_code: int = 0) -> Search:
    out = tmp_path / name
    result = run_cli([str(script), f"--param_file={param_file}", f"--output_dir={out}", "--workers=2", *args], cwd=tmp_path)
    assert result.returncode == exit_code, result.stdout + result.stderr
    return Search(out, result)


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    return path


# -- the shared checks ------------------------------------------------------------------------
def check_parents(s: Search, epochs: int = 1) -> int:
    """Round 0 and rounds without an earlier success train from scratch; every other trial resumes,
    with --model_path=<parent> --epochs=<epochs>, from parent (i mod k) of the expected top half. Returns
    how many trials resumed."""
    resumed = 0
    for r in s.rounds:
        source, parents = s.expected_parents(r)
        for key in s.round_keys(r):
            launch, paths = s.launches[key], s.model_path_args(key)
            if not parents:
                assert paths == [] and launch["parent"] is None, (key, launch["argv"])
                assert s.rows[key]["parent"] is None
                continue
            parent_key = parents[key[1] % len(parents)]
            assert paths == [s.model_dir(parent_key)], (key, paths, parents)
            argv = launch["argv"]
            assert argv[argv.index(f"--model_path={paths[0]}") + 1] == f"--epochs={epochs}"
            assert s.ok(parent_key) and parent_key[0] == source
            expected = {"round": parent_key[0], "index": parent_key[1], "model_dir": s.model_dir(parent_key),
                        "score": s.finishes[parent_key]["score"]}
            assert launch["parent"] == expected and s.finishes[key]["parent"] == expected
            assert s.rows[key]["parent"] == os.path.relpath(s.model_dir(parent_key), s.out)
            resumed += 1
    return resumed


def check_fingerprints(s: Search) -> int:
    """The weights a child loaded are its parent's: the child's loaded fingerprint is the parent's
    saved one, and the parent's state.json on disk still has it (nothing overwrote a parent)."""
    checked = 0
    for key, launch in s.launches.items():
        child = s.trial_json(key)
        if launch["parent"] is None:
            assert child["loaded_fingerprint"] is None, key
            continue
        parent_dir = launch["parent"]["model_dir"]
        parent = s.trial_json(parent_dir)
        on_disk = hashlib.sha256((Path(parent_dir) / "state.json").read_bytes()).hexdigest()
        assert child["loaded_fingerprint"] == parent["fingerprint"] == on_disk, (key, parent_dir)
        assert child["model_path"] == parent_dir
        checked += 1
    return checked


def check_lineage(s: Search) -> None:
    """The printed lineage is the journal's parent chain of the best trial, oldest first."""
    ok = [k for k in s.finishes if s.ok(k)]
    best_score = max(s.finishes[k]["score"] for k in ok)
    assert f"The final best eval score is {best_score}." in s.result.stdout
    chain = s.lineage_printed()
    # The best trial: the first to finish with the top score (an exact tie keeps the earlier one).
    best = next(k for k in s.finish_order if s.ok(k) and s.finishes[k]["score"] == best_score)
    if s.finishes[best]["parent"] is None:
        assert chain is None, chain
        return
    expected = []
    key: Optional[Key] = best
    while key is not None:
        expected.append(os.path.relpath(s.model_dir(key), s.out))
        parent = s.finishes[key]["parent"]
        key = (parent["round"], parent["index"]) if parent else None
    assert chain == list(reversed(expected))
    assert chain[0].startswith("round") and s.finishes[s.key_of_dir(str(s.out / chain[0]))]["parent"] is None
    assert len(chain) >= 2


# -- the tests --------------------------------------------------------------------------------
def test_schedule_toy_resumes_from_the_previous_rounds_top_half(tmp_path: Path):
    s = search(tmp_path, SCHEDULE / "train.py", SCHEDULE / "hparam.yaml", "--popsize=5", "--round=4", "--seed=3")
    assert all(s.ok(k) for k in s.launches) and len(s.launches) == 20
    assert all(s.model_path_args(k) == [] for k in s.round_keys(0))
    assert check_parents(s) == 15
    assert check_fingerprints(s) == 15
    check_lineage(s)
    for key in s.launches:  # round 0: 3 epochs from scratch; later: 1 more epoch on the parent's steps
        trial = s.trial_json(key)
        assert trial["epochs"] == (3 if key[0] == 0 else 1)
        assert trial["state"]["steps"] == 10 * (3 + key[0])
    # 5 successes -> 3 parents, so the children of round r are spread over exactly 3 dirs.
    assert {tuple(s.model_path_args(k)) for k in s.round_keys(1)} == {(s.model_dir(k),) for k in s.top_half(0)}
    assert len(s.top_half(0)) == 3


def test_paper_toy_lineage_and_fingerprints(tmp_path: Path):
    s = search(tmp_path, TOY / "train.py", TOY / "hparam.yaml", "--popsize=4", "--round=3", "--seed=5")
    assert check_parents(s) == 8
    assert check_fingerprints(s) == 8
    check_lineage(s)
    assert s.lineage_printed() is not None and len(s.lineage_printed()) == 3


def test_a_crashed_trial_is_never_a_parent(tmp_path: Path, probe: Path):
    s = search(tmp_path, probe, TOY / "hparam.yaml", "--popsize=6", "--round=3", "--seed=11",
               "crash_above", "0.5", "invalid_above", "0.85")
    crashed = {k for k in s.launches if not s.ok(k)}
    assert crashed and len(crashed) < len(s.launches), "the seed must give both crashes and successes"
    assert {s.finishes[k]["status"] for k in crashed} == {"failed", "invalid"}, "the seed must give both kinds"
    for key in crashed:  # each crashed after saving a state and reporting 0.999
        assert (Path(s.model_dir(key)) / "state.json").is_file()
    used = {s.key_of_dir(p["model_dir"]) for p in (s.launches[k]["parent"] for k in s.launches) if p}
    assert used and not used & crashed
    assert check_parents(s) > 0
    check_fingerprints(s)
    check_lineage(s)
    assert "was crashed!" in s.result.stderr


def test_a_round_where_every_trial_crashes_falls_back_and_says_so(tmp_path: Path, probe: Path):
    # Round 0 all crash -> round 1 from scratch; round 2 all crash -> round 3 resumes from round 1.
    s = search(tmp_path, probe, TOY / "hparam.yaml", "--popsize=3", "--round=4", "--seed=2", "crash_rounds", "0,2", exit_code=1)
    assert "every trial of round 0 failed (and of 1 more round(s))" in s.result.stderr  # not a success, said plainly
    assert not any(s.ok(k) for k in s.round_keys(0) + s.round_keys(2))
    assert all(s.ok(k) for k in s.round_keys(1) + s.round_keys(3))
    assert all(s.model_path_args(k) == [] for k in s.round_keys(0) + s.round_keys(1))
    assert s.expected_parents(3)[0] == 1 and s.expected_parents(2)[0] == 1
    assert check_parents(s) == 6
    check_fingerprints(s)
    check_lineage(s)
    lines = s.result.stdout.splitlines()
    assert any("round 0" in line and "round 1" in line and "from scratch" in line for line in lines), s.result.stdout
    assert any("round 2" in line and "round 3" in line and "round 1" in line and "resume" in line for line in lines), s.result.stdout
    assert "The local best eval value in the 2-th round is unknown" in s.result.stdout


def test_ties_rank_by_index(tmp_path: Path, probe: Path):
    s = search(tmp_path, probe, TOY / "hparam.yaml", "--popsize=5", "--round=2", "--seed=4", "tie", "1")
    assert s.top_half(0) == [(0, 0), (0, 1), (0, 2)]
    assert [s.launches[(1, i)]["parent"]["index"] for i in range(5)] == [0, 1, 2, 0, 1]
    assert check_parents(s) == 5


def test_resume_epochs_sets_the_epochs_of_resumed_trials(tmp_path: Path):
    s = search(tmp_path, SCHEDULE / "train.py", SCHEDULE / "hparam.yaml", "--popsize=2", "--round=2", "--seed=1", "--resume_epochs=3")
    assert check_parents(s, epochs=3) == 2
    for key in s.round_keys(1):
        argv = s.launches[key]["argv"]
        assert [a for a in argv if a.startswith("--epochs=")] == ["--epochs=3"]  # one value: nothing to override
        trial = s.trial_json(key)
        assert trial["epochs"] == 3 and trial["steps_this_run"] == 30 and trial["state"]["steps"] == 60
    assert all(s.trial_json(k)["epochs"] == 3 for k in s.round_keys(0))


def test_fulltrail_never_resumes(tmp_path: Path):
    s = search(tmp_path, SCHEDULE / "train.py", SCHEDULE / "hparam.yaml", "--popsize=3", "--round=3", "--seed=1", "--evaluator=fulltrail")
    assert len(s.launches) == 9
    for key, launch in s.launches.items():
        assert not any(a.startswith("--model_path") for a in launch["argv"]) and "--epochs=1" not in launch["argv"]
        assert launch["parent"] is None and s.rows[key]["parent"] is None
        assert s.trial_json(key)["loaded_fingerprint"] is None and s.trial_json(key)["state"]["steps"] == 30
    assert s.lineage_printed() is None


def test_no_fallback_announced_after_the_last_round(tmp_path: Path, probe: Path):
    s = search(tmp_path, probe, TOY / "hparam.yaml", "--popsize=2", "--round=2", "--seed=2", "crash_rounds", "1", exit_code=1)
    announced = [line for line in s.result.stdout.splitlines() if "round 2" in line and ("resume" in line or "scratch" in line)]
    assert announced == []


# -- the toys themselves (no tuner) ------------------------------------------------------------
def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_schedule_toy_needs_a_schedule():
    """The design claim behind the benchmark: within 12 epochs (what the best lineage of a
    3 + 9-round population gets) no constant learning rate passes 0.45, while re-choosing it
    every epoch reaches 0.85."""
    import random

    toy = _module(SCHEDULE / "train.py", "pbt_schedule_train")
    grid = [10 ** (-4 + 3 * i / 120) for i in range(121)]

    def run(lr: float, steps: int, accuracy: float = 0.0) -> float:
        rng = random.Random(0)
        for _ in range(steps):
            accuracy = toy.train_step(accuracy, lr, 1.0, rng)
        return accuracy

    constant = max(run(lr, 120) for lr in grid)
    accuracy = 0.0
    for _ in range(12):
        accuracy = max(run(lr, 10, accuracy) for lr in grid)
    assert constant < 0.45 and accuracy > 0.85, (constant, accuracy)
    assert toy.optimal_log_lr(0.0) < toy.optimal_log_lr(0.5) > toy.optimal_log_lr(1.0)


@pytest.mark.parametrize("example, params", [(SCHEDULE, ["--learning_rate=0.003", "--weight_decay=0.0001"]),
                                             (TOY, ["--h0=0.7", "--h1=0.2"])])
def test_toys_are_deterministic_and_resume(tmp_path: Path, example: Path, params: List[str]):
    def run(directory: str, *extra: str) -> dict:
        completed = subprocess.run([sys.executable, str(example / "train.py"), *params, f"--saved_params_dir={tmp_path / directory}", *extra],
                                   capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert completed.returncode == 0, completed.stderr
        assert "final result" in completed.stdout  # standalone: report_final_result just prints
        return json.loads((tmp_path / directory / "trial.json").read_text())

    first, again = run("a"), run("b")
    assert first["fingerprint"] == again["fingerprint"] and first["loaded_fingerprint"] is None
    assert first["epochs"] == 3 and first["state"]["steps"] == first["steps_this_run"]
    child = run("c", f"--model_path={tmp_path / 'a'}")
    assert child["loaded_fingerprint"] == first["fingerprint"] and child["epochs"] == 1
    assert child["state"]["steps"] == first["state"]["steps"] + child["steps_this_run"]
