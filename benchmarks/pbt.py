"""Benchmark the evaluators: full-trail vs population-based on the two PBT toys, through the CLI.

Not a test: it answers "does resuming from the better models of the last round buy anything
over training every candidate from scratch, at the same popsize x rounds?" on two toys whose
answer is known in advance (examples/pbt_schedule, examples/pbt_toy):

    .venv/bin/python benchmarks/pbt.py                                   # prints the table
    .venv/bin/python benchmarks/pbt.py --write docs/pbt-benchmark.md     # and writes the report

Every cell is the median over the seeds of a whole search run as a user runs it: `python -m
autofinetune train.py ...` in a subprocess, PSHE2, `--workers=2`. The training steps are summed
from the `trial.json` each trial writes to its model dir (`steps_this_run`); "best model steps"
is how many steps the best model received along its whole lineage. Because population-based
training gives its best model more steps than a from-scratch trial of the same command gets,
each toy has a control row: full-trail with `epochs N`, so that every from-scratch trial
trains as long as the longest population-based lineage (and the whole search trains far more).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"schedule": REPO / "examples" / "pbt_schedule", "paper toy": REPO / "examples" / "pbt_toy"}
SCRATCH_EPOCHS = 3  # both toys' default from-scratch epochs
#: Text after this line in an existing report (hand-written analysis) survives a rewrite.
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"


@dataclass
class Run:
    score: float
    trials: int
    ok: int
    steps: int
    best_steps: int
    seconds: float


@dataclass(frozen=True)
class Setting:
    label: str
    short: str
    evaluator: str
    passthrough: Tuple[str, ...] = ()


def settings(rounds: int) -> List[Setting]:
    lineage_epochs = SCRATCH_EPOCHS + rounds - 1  # the longest population-based lineage
    return [
        Setting("full-trail", "full-trail", "fulltrail"),
        Setting("population-based", "population-based", "populationbased"),
        Setting(f"full-trail, `epochs {lineage_epochs}` (as many steps per model as the longest PBT lineage)",
                f"full-trail, `epochs {lineage_epochs}`", "fulltrail", ("epochs", str(lineage_epochs))),
    ]


def run_search(example: Path, setting: Setting, popsize: int, rounds: int, seed: int, workers: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="pbt-bench-") as tmp:
        out = Path(tmp) / "out"
        argv = [sys.executable, "-m", "autofinetune", str(example / "train.py"), f"--param_file={example / 'hparam.yaml'}",
                f"--popsize={popsize}", f"--round={rounds}", f"--output_dir={out}", f"--evaluator={setting.evaluator}",
                f"--seed={seed}", f"--workers={workers}", *setting.passthrough]
        started = time.monotonic()
        done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"search failed ({' '.join(argv)}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        rows = json.loads((out / "trials.json").read_text())
        ok = [r for r in rows if r["status"] == "ok"]
        steps = 0
        for trial_json in out.glob("round*/model-*/trial.json"):
            steps += json.loads(trial_json.read_text())["steps_this_run"]
        best = max(ok, key=lambda r: r["score"])
        best_steps = json.loads((out / best["model_dir"] / "trial.json").read_text())["state"]["steps"]
        return Run(best["score"], len(rows), len(ok), steps, best_steps, seconds)


def median(runs: Sequence[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def table(results: Dict[Tuple[str, Setting], List[Run]], popsize: int, rounds: int, seeds: Sequence[int]) -> str:
    lines = [f"popsize {popsize} x round {rounds}, PSHE2, median over seeds {', '.join(map(str, seeds))} "
             f"(min - max of the final best score in brackets)", "",
             "| toy | evaluator | final best score | trials (ok) | total training steps | best model's steps | seconds |",
             "|---|---|---|---|---|---|---|"]
    for (toy, setting), runs in results.items():
        scores = [r.score for r in runs]
        lines.append(f"| {toy} | {setting.label} | **{median(runs, 'score'):.3f}** ({min(scores):.3f} - {max(scores):.3f}) | "
                     f"{median(runs, 'trials'):.0f} ({median(runs, 'ok'):.0f}) | {median(runs, 'steps'):.0f} | "
                     f"{median(runs, 'best_steps'):.0f} | {median(runs, 'seconds'):.1f} |")
    lines += ["", "Final best score per seed:", "", "| toy | evaluator | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|" + "---|" * len(seeds)]
    for (toy, setting), runs in results.items():
        lines.append(f"| {toy} | {setting.short} | " + " | ".join(f"{r.score:.3f}" for r in runs) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--popsize", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--toys", nargs="+", choices=sorted(EXAMPLES), default=list(EXAMPLES))
    parser.add_argument("--write", metavar="FILE", help="also write the report (markdown) here")
    args = parser.parse_args(list(argv) or None)

    results: Dict[Tuple[str, Setting], List[Run]] = {}
    started = time.monotonic()
    for toy in args.toys:
        for setting in settings(args.rounds):
            runs = []
            for seed in args.seeds:
                runs.append(run_search(EXAMPLES[toy], setting, args.popsize, args.rounds, seed, args.workers))
                print(f"{toy} | {setting.label} | seed {seed}: best {runs[-1].score:.4f}, {runs[-1].steps} steps, "
                      f"{runs[-1].seconds:.1f}s", file=sys.stderr, flush=True)
            results[(toy, setting)] = runs
    report = table(results, args.popsize, args.rounds, args.seeds)
    print(report)
    if args.write:
        options = [(f"--popsize {args.popsize}", args.popsize != 5), (f"--rounds {args.rounds}", args.rounds != 10),
                   ("--seeds " + " ".join(map(str, args.seeds)), args.seeds != [1, 2, 3, 4, 5]),
                   (f"--workers {args.workers}", args.workers != 2),
                   ("--toys " + " ".join(f"'{t}'" for t in args.toys), args.toys != list(EXAMPLES))]
        command = " ".join([".venv/bin/python benchmarks/pbt.py", *(o for o, changed in options if changed), f"--write {args.write}"])
        text = ("# Population-based vs full-trail on the PBT toys\n\n"
                f"Reproduce ({time.monotonic() - started:.0f} s on this machine, {args.workers} workers):\n\n"
                f"```\n{command}\n```\n\n{report}\n")
        path = Path(args.write)
        notes = "\n"
        if path.exists() and NOTES_MARKER in path.read_text():
            notes = path.read_text().split(NOTES_MARKER, 1)[1]
        path.write_text(text + "\n" + NOTES_MARKER + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
