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

One end-to-end row then runs f8 2-D (popsize 5 x 10 rounds, the same seeds) through the real
CLI, `python -m autofinetune benchmarks/bbob_train.py`, with x0 and x1 as float hyperparameters
in [-5, 5] starting at 0: the same unit box, the same map and the same start as in-process. It
reports both medians and whether every candidate the CLI ran is bit-identical to the one the
in-process strategy asked for. `--no-e2e` skips it (the report then has no such row).
"""
from __future__ import annotations

import argparse
import logging
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autofinetune.strategies import make_strategy  # noqa: E402

FUNCTIONS = {1: "f1 sphere", 8: "f8 Rosenbrock", 15: "f15 Rastrigin"}
DIMS = (2, 5)
BUDGETS = ((5, 10), (10, 20))  # (popsize, rounds)
#: Text after this line in an existing report (hand-written analysis) survives a rewrite.
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"
METHODS = ("PSHE2", "HAZero", "random", "Optuna TPE", "Optuna CmaEs")
LOWER, UPPER = -5.0, 5.0
#: The end-to-end row: one cell through the CLI (function, dimension, popsize, rounds).
E2E_CELL = (8, 2, 5, 10)
E2E_METHODS = {"PSHE2": "pshe2", "HAZero": "hazero"}
E2E_TRAIN = Path(__file__).resolve().parent / "bbob_train.py"
#: bbob_train.py's search space: bbob's domain itself, so FloatParam's unit map,
#: low + u * (high - low), is the in-process map LOWER + (UPPER - LOWER) * u, and init 0 is the
#: centre of the unit box, 0.5, where every in-process method starts.
E2E_HPARAM = "".join(
    f"  - name: x{i}\n    type: float\n    init_value: 0.0\n"
    f"    greater_than: {LOWER}\n    lower_than: {UPPER}\n"
    for i in range(E2E_CELL[1])
)

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


def run_ours(
    name: str, f: Objective, dim: int, popsize: int, rounds: int, seed: int,
    asked: Optional[List[np.ndarray]] = None,
) -> float:
    """Best f of one run; `asked` (if given) collects every candidate, in order."""
    strategy = make_strategy(name, dim, np.full(dim, 0.5), popsize, seed)
    best = np.inf
    for _ in range(rounds):
        points = strategy.ask()
        if asked is not None:
            asked.extend(np.array(p, dtype=float) for p in points)
        losses = [f(p) for p in points]
        best = min(best, min(losses))
        strategy.tell(losses)
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


def run_cli(strategy: str, seed: int, fopt_value: float) -> Tuple[float, List[Tuple[float, ...]]]:
    """One search of E2E_CELL through the real CLI; (best regret, the candidates it ran in order).

    The regret is minus the best score in trials.json (bbob_train.py reports -(f - fopt)).
    """
    fid, dim, popsize, rounds = E2E_CELL
    with tempfile.TemporaryDirectory(prefix="autofinetune-e2e-") as tmp:
        work = Path(tmp)
        (work / "hparam.yaml").write_text("param_list:\n" + E2E_HPARAM)
        out = work / "out"
        command = [
            sys.executable, "-m", "autofinetune", str(E2E_TRAIN),
            "--param_file=hparam.yaml", f"--popsize={popsize}", f"--round={rounds}",
            f"--output_dir={out}", "--evaluator=fulltrail", f"--tuning_strategy={strategy}",
            "--workers=2", f"--seed={seed}",
            # a trailing pair: every trial gets --fopt=<the optimum computed once, exactly>
            "fopt", repr(fopt_value),
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        done = subprocess.run(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}")
        rows = json.loads((out / "trials.json").read_text())
    bad = [r for r in rows if r["status"] != "ok"]
    if bad or len(rows) != popsize * rounds:
        first = f"; first: {bad[0]['status']}: {bad[0]['message']}" if bad else ""
        raise RuntimeError(f"{strategy} seed {seed}: expected {popsize * rounds} ok trials, got {len(rows)} ({len(bad)} not ok{first})")
    names = [f"x{i}" for i in range(dim)]
    candidates = [tuple(float(r[n]) for n in names) for r in sorted(rows, key=lambda r: (r["round"], r["index"]))]
    return -max(float(r["score"]) for r in rows), candidates


def run_e2e(seeds: int, jobs: int) -> Dict[str, Dict[str, object]]:
    """The end-to-end row: per strategy, both medians and whether the candidates coincide."""
    fid, dim, popsize, rounds = E2E_CELL
    optimum = fopt(fid, dim)
    f = _objective(fid, dim)
    tasks = [(m, seed) for m in E2E_METHODS for seed in range(seeds)]
    # Each search already runs two trials at a time (--workers=2).
    with ProcessPoolExecutor(max_workers=max(1, jobs // 2)) as pool:
        cli = dict(zip(tasks, pool.map(run_cli, [E2E_METHODS[m] for m, _ in tasks], [s for _, s in tasks],
                                       [optimum] * len(tasks))))
    logging.getLogger("autofinetune").setLevel(logging.ERROR)
    row: Dict[str, Dict[str, object]] = {}
    for m, name in E2E_METHODS.items():
        inproc, via_cli, same = [], [], 0
        for seed in range(seeds):
            asked: List[np.ndarray] = []
            inproc.append(run_ours(name, f, dim, popsize, rounds, seed, asked) - optimum)
            regret, candidates = cli[(m, seed)]
            via_cli.append(regret)
            # The in-process objective's own map to bbob's domain; the CLI ran FloatParam's.
            expected = [tuple(float(v) for v in LOWER + (UPPER - LOWER) * u) for u in asked]
            same += candidates == expected
        row[m] = {"inproc": float(np.median(inproc)), "cli": float(np.median(via_cli)),
                  "identical": same, "seeds": seeds, "regrets_equal": inproc == via_cli}
    return row


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="runs per cell (seeds 0..N-1)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--write", metavar="FILE", help="also write the report (markdown) here")
    parser.add_argument("--no-e2e", dest="e2e", action="store_false",
                        help="skip the end-to-end row (f8 2-D through the CLI; about 20 s per seed and strategy)")
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
    e2e: Dict[str, Dict[str, object]] = {}
    e2e_elapsed = 0.0
    if args.e2e:
        started = time.time()
        e2e = run_e2e(args.seeds, args.jobs)
        e2e_elapsed = time.time() - started

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

    e2e_lines: List[str] = []
    if e2e:
        fid, dim, pop, rnd = E2E_CELL
        prefix = f"| {FUNCTIONS[fid]} | {dim} | {pop} x {rnd} | "
        # The in-process half reruns the table's own code for this cell: it must agree.
        as_table = all(float(e2e[m]["inproc"]) == median[(fid, dim, pop, rnd, m)] for m in E2E_METHODS)
        inproc_label = "in-process (= the table's cell)" if as_table else "in-process (DIFFERS from the table's cell)"
        e2e_lines = [
            "## End-to-end: the same search through the CLI",
            "",
            f"The {FUNCTIONS[fid]}, n={dim}, {pop} x {rnd} cell again, with the same seeds, through "
            "`python -m autofinetune benchmarks/bbob_train.py --param_file=hparam.yaml "
            f"--popsize={pop} --round={rnd} --evaluator=fulltrail --tuning_strategy=pshe2|hazero "
            "--workers=2 --seed=N`: every candidate is a subprocess that evaluates bbob and reports "
            "-(f - fopt) through `autofinetune.report_final_result`; the regret is minus the best score "
            "in trials.json. hparam.yaml has x0, x1 as floats in [-5, 5] starting at 0, so the "
            "tuner's unit box, map and start are the in-process ones. \"identical candidates\": "
            "the (x0, x1) of every trial in trials.json equals, bit for bit and in order, the "
            "in-process strategy's ask mapped to [-5, 5].",
            "",
            "| function | n | popsize x rounds | path | " + " | ".join(E2E_METHODS) + " |",
            "|" + "---|" * (4 + len(E2E_METHODS)),
            prefix + inproc_label + " | " + " | ".join(_fmt(float(e2e[m]["inproc"])) for m in E2E_METHODS) + " |",
            prefix + "CLI + train.py | " + " | ".join(_fmt(float(e2e[m]["cli"])) for m in E2E_METHODS) + " |",
            prefix + "identical candidates | "
            + " | ".join(f"{'yes' if e2e[m]['identical'] == e2e[m]['seeds'] else 'no'} "
                         f"({e2e[m]['identical']}/{e2e[m]['seeds']} seeds)" for m in E2E_METHODS) + " |",
            "",
        ]
        for m in E2E_METHODS:
            r = e2e[m]
            same = r["regrets_equal"]
            e2e_lines.append(
                f"- {m}: subprocess path as good as in-process: "
                f"{'yes' if float(r['cli']) <= float(r['inproc']) else 'no'} "
                f"(median {_fmt(float(r['cli']))} vs {_fmt(float(r['inproc']))}; "
                f"per-seed regrets {'bit-identical' if same else 'differ'})"
            )
        e2e_lines += [
            "",
            f"The end-to-end row took about {e2e_elapsed / 60:.1f} min "
            f"({2 * args.seeds} searches of {pop * rnd} trials, {args.seeds} seeds x 2 strategies); "
            "`--no-e2e` skips it.",
            "",
        ]

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
            *e2e_lines,
            "Reproduce (about "
            f"{(elapsed + e2e_elapsed) / 60:.0f} min with {args.jobs} processes"
            f"{', the end-to-end row included' if e2e else ''}; cma {cma.__version__}, "
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
