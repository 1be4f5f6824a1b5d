"""Benchmark the tuning strategies against random search and Optuna on COCO's bbob functions.

Not a test: it answers "are PSHE2 and HAZero any good at the budgets people actually use?"
(a handful of candidates for a handful of rounds), on standard functions with known optima, so
a change to either algorithm can be judged by numbers rather than by feel.

    .venv/bin/pip install optuna cmaes coco-experiment   # benchmark-only extras
    .venv/bin/python benchmarks/strategies.py --write docs/strategies-benchmark.md

Every method gets the same budget (popsize x rounds evaluations), the same seeds and the same
start: the centre of the box. Our strategies work in the unit box, mapped linearly onto bbob's
[-5, 5]^n domain; Optuna's samplers see the same unit box as `suggest_float(0, 1)` parameters
and are driven through ask/tell in batches of `popsize`, as a round of the tuner would.
The score of a run is its regret, best f - fopt; a cell reports the median over the seeds.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autofinetune.strategies import make_strategy  # noqa: E402

FUNCTIONS = {1: "f1 sphere", 8: "f8 Rosenbrock", 15: "f15 Rastrigin"}
DIMS = (2, 5)
BUDGETS = ((5, 10), (10, 20))  # (popsize, rounds)
#: Text after this line in an existing report (hand-written analysis) survives a rewrite.
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"
METHODS = ("PSHE2", "HAZero", "random", "Optuna TPE", "Optuna CmaEs")
LOWER, UPPER = -5.0, 5.0

Objective = Callable[[np.ndarray], float]


def _problem(fid: int, dim: int):  # type: ignore[no-untyped-def]
    import cocoex

    suite = cocoex.Suite("bbob", "instances: 1", f"function_indices: {fid} dimensions: {dim}")
    return next(iter(suite))


def fopt(fid: int, dim: int) -> float:
    """bbob's optimal value, as f(xopt).

    cocoex exposes xopt only by writing it to a file in the current directory, so we read it
    there from a throwaway directory.
    """
    problem = _problem(fid, dim)
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            problem._best_parameter("print")
            xopt = np.atleast_1d(np.loadtxt("._bbob_problem_best_parameter.txt"))
        finally:
            os.chdir(here)
    return float(problem(xopt))


def _objective(fid: int, dim: int) -> Objective:
    problem = _problem(fid, dim)

    def f(u: np.ndarray) -> float:
        return float(problem(LOWER + (UPPER - LOWER) * np.asarray(u, dtype=float)))

    return f


def run_ours(name: str, f: Objective, dim: int, popsize: int, rounds: int, seed: int) -> float:
    strategy = make_strategy(name, dim, np.full(dim, 0.5), popsize, seed)
    best = np.inf
    for _ in range(rounds):
        points = strategy.ask()
        losses = [f(p) for p in points]
        best = min(best, min(losses))
        strategy.tell(points, losses)
    return best


def run_random(f: Objective, dim: int, popsize: int, rounds: int, seed: int) -> float:
    points = np.random.default_rng(seed).random((popsize * rounds, dim))
    return min(f(p) for p in points)


def run_optuna(sampler_name: str, f: Objective, dim: int, popsize: int, rounds: int, seed: int) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Optuna 4.9+ flags CmaEsSampler's x0 as deprecated; it is still the way to start at x0.
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    names = [f"x{i}" for i in range(dim)]
    if sampler_name == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed)
    else:
        # n_startup_trials=0: start CMA-ES at x0 at once, as HAZero does (Optuna's default
        # would spend the whole first batch on independent random samples).
        sampler = optuna.samplers.CmaEsSampler(
            x0={n: 0.5 for n in names}, popsize=popsize, n_startup_trials=0, seed=seed
        )
    study = optuna.create_study(sampler=sampler, direction="minimize")
    best = np.inf
    for _ in range(rounds):
        trials = [study.ask() for _ in range(popsize)]
        xs = [np.array([t.suggest_float(n, 0.0, 1.0) for n in names]) for t in trials]
        for trial, x in zip(trials, xs):
            value = f(x)
            best = min(best, value)
            study.tell(trial, value)
    return best


def run_one(task: Tuple[str, int, int, int, int, int]) -> Tuple[Tuple[str, int, int, int, int, int], float]:
    method, fid, dim, popsize, rounds, seed = task
    logging.getLogger("autofinetune").setLevel(logging.ERROR)  # popsize warnings: expected here
    f = _objective(fid, dim)
    if method == "PSHE2":
        best = run_ours("pshe2", f, dim, popsize, rounds, seed)
    elif method == "HAZero":
        best = run_ours("hazero", f, dim, popsize, rounds, seed)
    elif method == "random":
        best = run_random(f, dim, popsize, rounds, seed)
    elif method == "Optuna TPE":
        best = run_optuna("tpe", f, dim, popsize, rounds, seed)
    else:
        best = run_optuna("cmaes", f, dim, popsize, rounds, seed)
    return task, best


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="runs per cell (seeds 0..N-1)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--write", metavar="FILE", help="also write the report (markdown) here")
    args = parser.parse_args(list(argv))

    cells = [(fid, dim, pop, rnd) for fid in FUNCTIONS for dim in DIMS for pop, rnd in BUDGETS]
    tasks = [
        (m, fid, dim, pop, rnd, seed)
        for (fid, dim, pop, rnd) in cells
        for m in METHODS
        for seed in range(args.seeds)
    ]
    optima = {(fid, dim): fopt(fid, dim) for fid in FUNCTIONS for dim in DIMS}
    started = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(pool.map(run_one, tasks, chunksize=4))
    elapsed = time.time() - started

    median: Dict[Tuple[int, int, int, int, str], float] = {}
    for (fid, dim, pop, rnd) in cells:
        for m in METHODS:
            regrets = [
                results[(m, fid, dim, pop, rnd, s)] - optima[(fid, dim)] for s in range(args.seeds)
            ]
            median[(fid, dim, pop, rnd, m)] = float(np.median(regrets))

    header = "| function | n | popsize x rounds | " + " | ".join(METHODS) + " |"
    rule = "|" + "---|" * (3 + len(METHODS))
    rows: List[str] = [header, rule]
    verdicts: List[str] = []
    misses: List[str] = []
    for (fid, dim, pop, rnd) in cells:
        values = [median[(fid, dim, pop, rnd, m)] for m in METHODS]
        best = min(values)
        shown = [f"**{_fmt(v)}**" if v == best else _fmt(v) for v in values]
        rows.append(f"| {FUNCTIONS[fid]} | {dim} | {pop} x {rnd} | " + " | ".join(shown) + " |")
        hz, cm = median[(fid, dim, pop, rnd, "HAZero")], median[(fid, dim, pop, rnd, "Optuna CmaEs")]
        ps, rd = median[(fid, dim, pop, rnd, "PSHE2")], median[(fid, dim, pop, rnd, "random")]
        hz_ok = hz <= 1.25 * cm
        ps_ok = ps < rd
        cell = f"{FUNCTIONS[fid]}, n={dim}, {pop} x {rnd}"
        verdicts.append(
            f"- {cell}: HAZero within 1.25x of Optuna CmaEs: {'yes' if hz_ok else 'no'} "
            f"({_fmt(hz / cm if cm > 0 else float('inf'))}x); "
            f"PSHE2 better than random: {'yes' if ps_ok else 'no'} "
            f"({_fmt(ps)} vs {_fmt(rd)})"
        )
        if not hz_ok:
            misses.append(f"HAZero on {cell}")
        if not ps_ok and fid in (1, 8):
            misses.append(f"PSHE2 on {cell}")

    import cma
    import optuna

    table = "\n".join(rows)
    report = "\n".join(
        [
            "# Strategies benchmark",
            "",
            "Median regret (best f - fopt, lower is better) over "
            f"{args.seeds} seeds on COCO bbob, instance 1; the best of each row in bold.",
            "The unit box maps onto bbob's [-5, 5]^n; every method starts at the centre and gets "
            "popsize x rounds evaluations, Optuna in batches of popsize through ask/tell "
            "(TPESampler defaults; CmaEsSampler with x0 = centre, popsize, n_startup_trials=0).",
            "",
            table,
            "",
            "Targets: HAZero's median regret within 1.25x of Optuna CmaEsSampler in every cell; "
            "PSHE2 better than random search in every f1 and f8 cell.",
            "",
            *verdicts,
            "",
            f"Targets missed: {', '.join(misses) if misses else 'none'}.",
            "",
            "Reproduce (about "
            f"{elapsed / 60:.0f} min with {args.jobs} processes; cma {cma.__version__}, "
            f"optuna {optuna.__version__}):",
            "",
            "```",
            ".venv/bin/pip install optuna cmaes coco-experiment",
            f".venv/bin/python benchmarks/strategies.py --seeds {args.seeds} "
            "--write docs/strategies-benchmark.md",
            "```",
            "",
        ]
    )
    print(report)
    if args.write:
        path = Path(args.write)
        path.parent.mkdir(parents=True, exist_ok=True)
        notes = ""
        if path.exists() and NOTES_MARKER in path.read_text():
            notes = path.read_text().split(NOTES_MARKER, 1)[1]
        path.write_text(report + "\n" + NOTES_MARKER + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
