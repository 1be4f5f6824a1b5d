"""Benchmark the pruners: steps saved and best final score kept, against Optuna's pruners.

Not a test: it answers "how much training does `--pruner=asha` (or `median`) save, and does it
still find the best trial no pruning finds?" on learning curves whose outcome is known, because
every curve is known to its end in advance:

    .venv/bin/python benchmarks/pruning.py                                    # prints the tables
    .venv/bin/python benchmarks/pruning.py --write docs/pruning-benchmark.md  # and writes the report
    .venv/bin/python benchmarks/pruning.py --regenerate-digits                # re-trains the CNN curves

Two curve sets (the results and how to read them: docs/pruning-benchmark.md):

* synthetic: y(t) = a - b * t**-c + noise for t = 1..T, a, b, c drawn per configuration with the
  trade-off a learning rate makes (slow starters tend to end higher), so the curves cross and a
  pruner has something to get wrong; fresh configurations for every seed.
* digits: the real CNN of examples/image_classification (its own train.py, run in-process on
  CPU) trained once per configuration sampled from its hparam.yaml, with the validation accuracy
  after every epoch. Training is the slow part, so the curves are cached in
  benchmarks/data/digits_curves.json (with the command that regenerates them); each seed
  draws its trials from that pool in its own order.

Every method sees the same trials of a seed in the same simulated search: a fixed number of
slots advance in lock-step, one step per running trial per tick, slots in order; a trial's
report goes to the method at once and a stop frees the slot, which the next trial takes at
the next tick -- so trials reach a rung at different times and the asynchronous rules are
exercised. A trial that reports its last step without being stopped finishes "ok". Counted:
trial-steps used, and the best final score among trials that ran to the end. Optuna's
MedianPruner and SuccessiveHalvingPruner run in the same simulation through a study's
ask / report / should_prune / tell.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's autofinetune, not an installed one

from autofinetune.pruners import make_pruner, pruner_options  # noqa: E402

DIGITS_CACHE = REPO / "benchmarks" / "data" / "digits_curves.json"
DIGITS_TRAIN = REPO / "examples" / "image_classification" / "train.py"
REGENERATE = ".venv/bin/python benchmarks/pruning.py --regenerate-digits"
#: Text after this line in an existing report (hand-written analysis) survives a rewrite.
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"

# --------------------------------------------------------------------------- the digits curves


def _sample_digits_config(rng: random.Random) -> Dict[str, float]:
    """One configuration from examples/image_classification/hparam.yaml's ranges (log scale
    where it says `log: true`), as a random search over that space would draw it."""
    return {
        "learning_rate": math.exp(rng.uniform(math.log(1e-4), math.log(3e-2))),
        "batch_size": rng.randint(16, 128),
        "dropout": rng.uniform(0.0, 0.6),
        "weight_decay": math.exp(rng.uniform(math.log(1e-6), math.log(1e-1))),
    }


_EPOCH_LINE = re.compile(r"^epoch (\d+): .*val acc ([0-9.]+)$", re.MULTILINE)


def _train_digits(job: Tuple[Dict[str, float], int]) -> List[float]:
    """The example's own main() for one configuration; its per-epoch lines are the curve."""
    config, epochs = job
    import runpy

    module = runpy.run_path(str(DIGITS_TRAIN), run_name="digits_train")
    argv = [f"--{name}={value!r}" for name, value in config.items()] + [f"--epochs={epochs}"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module["main"](argv)
    curve = [float(acc) for _, acc in _EPOCH_LINE.findall(out.getvalue())]
    if len(curve) != epochs:
        raise SystemExit(f"{DIGITS_TRAIN} printed {len(curve)} epoch lines for {epochs} epochs:\n{out.getvalue()}")
    return curve


DIGITS_SEED = 20261202


def digits_configs(n_configs: int) -> List[Dict[str, float]]:
    rng = random.Random(DIGITS_SEED)
    return [_sample_digits_config(rng) for _ in range(n_configs)]


def regenerate_digits(n_configs: int, epochs: int, jobs: int) -> None:
    configs = digits_configs(n_configs)
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        curves = pool.map(_train_digits, [(config, epochs) for config in configs], chunksize=1)
    seconds = time.monotonic() - started
    DIGITS_CACHE.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "regenerate": f"{REGENERATE} --digits-configs {n_configs} --digits-epochs {epochs}",
        "source": "examples/image_classification/train.py main(), CPU, --seed=0; validation accuracy after each epoch",
        "epochs": epochs,
        "seconds": round(seconds, 1),
        # the configurations exactly as trained (json keeps a float's every digit): rounded, a
        # learning rate would train a slightly different curve
        "trials": [{"config": config, "curve": curve} for config, curve in zip(configs, curves)],
    }
    trials = ",\n".join(json.dumps(trial) for trial in data.pop("trials"))  # one trial a line
    head = json.dumps(data, indent=1)[:-2]
    DIGITS_CACHE.write_text(f'{head},\n "trials": [\n{trials}\n]}}\n')
    print(f"{DIGITS_CACHE.relative_to(REPO)}: {n_configs} configurations x {epochs} epochs in {seconds:.0f} s")


# --------------------------------------------------------------------------- the curve sets

SYNTHETIC_STEPS = 30
TRIALS_PER_SEED = 32
SLOTS = 4


def synthetic_curves(seed: int, n: int = TRIALS_PER_SEED, steps: int = SYNTHETIC_STEPS) -> List[List[float]]:
    """y(t) = a - b * t**-c + noise (sd 0.01), t = 1..steps, capped at 1 (a score), with the
    trade-off a learning rate makes: a configuration's speed u in [0, 1] sets how fast it closes
    its gap b (c = 0.4 * 5**u) and lowers its plateau a by up to 0.1, so slow starters tend to
    end higher and cross the fast ones; `crossing()` in the report says how often."""
    rng = random.Random(seed)
    curves = []
    for _ in range(n):
        speed = rng.random()
        c = 0.4 * 5.0 ** speed
        a = rng.uniform(0.7, 0.9) + 0.1 * (1.0 - speed)
        b = rng.uniform(0.2, 0.6)
        curves.append([min(1.0, a - b * t ** -c + rng.gauss(0.0, 0.01)) for t in range(1, steps + 1)])
    return curves


def winner_rank(curves: Sequence[Sequence[float]], step: int) -> int:
    """Where the trial that ends best stood at `step` (1: first), ties counted against it."""
    final = max(curves, key=lambda curve: curve[-1])
    return 1 + sum(curve[step - 1] >= final[step - 1] for curve in curves if curve is not final)


def digits_pool() -> List[List[float]]:
    if not DIGITS_CACHE.exists():
        raise SystemExit(f"{DIGITS_CACHE.relative_to(REPO)} is missing; make it with: {REGENERATE}")
    return [trial["curve"] for trial in json.loads(DIGITS_CACHE.read_text())["trials"]]


def digits_curves(seed: int, pool: List[List[float]], n: int = TRIALS_PER_SEED) -> List[List[float]]:
    """The trials of one seed: n of the cached configurations, in this seed's order."""
    return random.Random(seed).sample(pool, min(n, len(pool)))


# --------------------------------------------------------------------------- the methods


class Ours:
    """An autofinetune pruner as the tuner drives it."""

    def __init__(self, name: str, options: Dict[str, int]) -> None:
        self.pruner = make_pruner(name, options)

    def report(self, trial: int, step: int, value: float) -> bool:
        return self.pruner.report(trial, step, value)

    def finished(self, trial: int, status: str, value: float) -> None:
        self.pruner.finished(trial, status)


class OptunaPruner:
    """An Optuna pruner in an in-memory study (maximize): ask, report, should_prune, tell."""

    def __init__(self, make: Callable[[], object]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.study = optuna.create_study(direction="maximize", pruner=make())
        self.trials: Dict[int, object] = {}

    def report(self, trial: int, step: int, value: float) -> bool:
        if trial not in self.trials:
            self.trials[trial] = self.study.ask()
        handle = self.trials[trial]
        handle.report(value, step)
        return handle.should_prune()

    def finished(self, trial: int, status: str, value: float) -> None:
        from optuna.trial import TrialState

        handle = self.trials.pop(trial)
        if status == "ok":
            self.study.tell(handle, value)
        else:
            self.study.tell(handle, state=TrialState.PRUNED)


@dataclass(frozen=True)
class Method:
    label: str
    make: Callable[[], object]
    note: str = ""


def grid_methods() -> List[Method]:
    """ASHA over the options a default could take (docs/pruning-benchmark.md, "Choosing the
    defaults"): the same for both curve sets, never tuned per set."""
    rows = [Method("none", lambda: Ours("none", {}))]
    for eta in (2, 3, 4):
        for first in (1, 2, 3, 4):
            options = {"reduction_factor": eta, "min_resource": first}
            rows.append(Method(f"asha, eta {eta}, min_resource {first}",
                               lambda options=options: Ours("asha", options)))
    return rows


def methods() -> List[Method]:
    try:
        import optuna
    except ImportError:
        raise SystemExit("benchmarks/pruning.py compares with Optuna's pruners: pip install optuna") from None

    asha = {option.name: option.default for option in pruner_options("asha")}
    ours = f"min_resource {asha['min_resource']}, reduction_factor {asha['reduction_factor']}"
    return [
        Method("none", lambda: Ours("none", {})),
        Method("median", lambda: Ours("median", {}), "defaults: n_startup_trials 5, n_warmup_steps 0"),
        Method("asha", lambda: Ours("asha", {}), f"defaults: {ours}"),
        Method("asha, eta 3, min_resource 1", lambda: Ours("asha", {"reduction_factor": 3, "min_resource": 1}),
               "the defaults first proposed"),
        Method("asha, eta 4, min_resource 1", lambda: Ours("asha", {"reduction_factor": 4, "min_resource": 1}),
               "Optuna's defaults ('auto' is 1 here), deciding from the first trial"),
        Method("Optuna MedianPruner", lambda: OptunaPruner(optuna.pruners.MedianPruner), "defaults"),
        Method("Optuna SuccessiveHalvingPruner", lambda: OptunaPruner(optuna.pruners.SuccessiveHalvingPruner),
               "defaults: min_resource 'auto' (none until a trial completes), reduction_factor 4"),
        Method("Optuna SuccessiveHalvingPruner, as ours",
               lambda: OptunaPruner(lambda: optuna.pruners.SuccessiveHalvingPruner(
                   min_resource=asha["min_resource"], reduction_factor=asha["reduction_factor"])),
               f"{ours}: the same rule, so the same figures as asha"),
    ]


# --------------------------------------------------------------------------- the simulated search


@dataclass
class Run:
    steps: int
    best: float  # best final score among the trials that ran to the end (NaN: none did)
    completed: int


def simulate(curves: Sequence[Sequence[float]], decider, slots: int = SLOTS) -> Run:
    """One search: `slots` trials at a time, advancing in lock-step; step k reports curve[k-1]."""
    waiting = list(range(len(curves)))
    running: Dict[int, int] = {}  # slot -> trial
    progress = [0] * len(curves)
    steps, finals = 0, []
    while waiting or running:
        for slot in range(slots):
            if slot not in running and waiting:
                running[slot] = waiting.pop(0)
        for slot in sorted(running):
            trial = running[slot]
            progress[trial] += 1
            steps += 1
            value = curves[trial][progress[trial] - 1]
            if decider.report(trial, progress[trial], value):
                decider.finished(trial, "pruned", value)
                del running[slot]
            elif progress[trial] == len(curves[trial]):
                decider.finished(trial, "ok", value)
                finals.append(value)
                del running[slot]
    return Run(steps, max(finals) if finals else math.nan, len(finals))


def quartiles(values: Sequence[float]) -> Tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, statistics.median(values), q3


@dataclass
class Row:
    method: Method
    runs: List[Run]
    none_runs: List[Run]

    @property
    def steps(self) -> Tuple[float, float, float]:
        return quartiles([run.steps for run in self.runs])

    @property
    def fraction(self) -> float:
        return statistics.median(run.steps / none.steps for run, none in zip(self.runs, self.none_runs))

    @property
    def best(self) -> Tuple[float, float, float]:
        return quartiles([run.best if not math.isnan(run.best) else 0.0 for run in self.runs])

    @property
    def kept(self) -> int:
        """Seeds on which the method finished the trial that no pruning finds best."""
        return sum(run.best == none.best for run, none in zip(self.runs, self.none_runs))

    @property
    def regret(self) -> float:
        return statistics.median(none.best - (run.best if not math.isnan(run.best) else 0.0)
                                 for run, none in zip(self.runs, self.none_runs))


CROSSING_STEPS = (1, 3, 9)


def measure(curve_sets: Dict[str, Callable[[int], List[List[float]]]], seeds: Sequence[int],
            which: Callable[[], List[Method]] = methods) -> Tuple[Dict[str, List[Row]], Dict[str, Dict[int, List[int]]]]:
    """Every method on every seed of every curve set; and, per set, the final winner's rank at
    the first rungs' steps over the seeds (how much a pruner can get wrong)."""
    table: Dict[str, List[Row]] = {}
    crossing: Dict[str, Dict[int, List[int]]] = {}
    for set_name, curves_of in curve_sets.items():
        runs: Dict[str, List[Run]] = {}
        crossing[set_name] = {step: [] for step in CROSSING_STEPS}
        for seed in seeds:
            curves = curves_of(seed)
            for step in CROSSING_STEPS:
                if step <= min(map(len, curves)):
                    crossing[set_name][step].append(winner_rank(curves, step))
            for method in which():
                runs.setdefault(method.label, []).append(simulate(curves, method.make()))
        table[set_name] = [Row(method, runs[method.label], runs["none"]) for method in which()]
    return table, crossing


# --------------------------------------------------------------------------- the report

GOAL_FRACTION = 0.40


def goal_lines(rows: List[Row]) -> Tuple[bool, List[str]]:
    """The issue's goal on one curve set: ASHA (defaults) keeps no pruning's best final score
    (its median over seeds at or above no pruning's lower quartile) with at most 40 % of the
    steps, and uses no more steps than each Optuna pruner whose best score is as good (median at
    least ASHA's); one that finds a lower best score is not at an equal score, and is said so."""
    by = {row.method.label: row for row in rows}
    asha, none = by["asha"], by["none"]
    kept = asha.best[1] >= none.best[0]
    cheap = asha.fraction <= GOAL_FRACTION
    lines = [
        f"- ASHA keeps the best final score of no pruning: {'yes' if kept else '**no**'} "
        f"(median {asha.best[1]:.4f}, kept on {asha.kept}/{len(asha.runs)} seeds; no pruning {none.best[1]:.4f}, "
        f"quartiles {none.best[0]:.4f} - {none.best[2]:.4f})",
        f"- ASHA uses at most {GOAL_FRACTION:.0%} of no pruning's steps: {'yes' if cheap else '**no**'} "
        f"({asha.fraction:.1%}, median over seeds)",
    ]
    holds = kept and cheap
    for label in ("Optuna MedianPruner", "Optuna SuccessiveHalvingPruner", "Optuna SuccessiveHalvingPruner, as ours"):
        peer = by[label]
        figures = (f"{asha.steps[1]:.0f} steps against {peer.steps[1]:.0f}; best {asha.best[1]:.4f} against "
                   f"{peer.best[1]:.4f}, kept {asha.kept} against {peer.kept}")
        if peer.best[1] >= asha.best[1]:
            fewer = asha.steps[1] <= peer.steps[1]
            holds = holds and fewer
            lines.append(f"- {label} finds as good a best score; ASHA uses no more steps: "
                         f"{'yes' if fewer else '**no**'} ({figures})")
        else:
            lines.append(f"- {label} finds a lower best score, so not at an equal score ({figures})")
    identical = all((run.steps, run.best) == (other.steps, other.best) or (math.isnan(run.best) and math.isnan(other.best))
                    for run, other in zip(asha.runs, by["Optuna SuccessiveHalvingPruner, as ours"].runs))
    lines.append(f"- asha and Optuna's SuccessiveHalvingPruner with the same options: identical steps and best "
                 f"score on every seed: {'yes' if identical else '**no**'}")
    return holds and identical, lines


def grid_report(table: Dict[str, List[Row]]) -> List[str]:
    """One line per ASHA setting with its figures on each curve set, then which settings meet
    the goal on both sets (the defaults are chosen among those, for both sets at once)."""
    names = list(table)
    out = ["| setting | " + " | ".join(f"{name.split(':')[0]}: fraction, best, kept, regret" for name in names) + " | goal on both |",
           "|---|" + "---|" * len(names) + "---|"]
    meeting = []
    for index, row in enumerate(table[names[0]][1:], start=1):
        cells, meets, kept = [], True, 0
        for name in names:
            each, none = table[name][index], table[name][0]
            cells.append(f"{each.fraction:.1%}, {each.best[1]:.4f}, {each.kept}/{len(each.runs)}, {each.regret:.4f}")
            meets = meets and each.best[1] >= none.best[0] and each.fraction <= GOAL_FRACTION
            kept += each.kept
        if meets:
            meeting.append((kept, row.method.label))
        out.append(f"| {row.method.label} | " + " | ".join(cells) + f" | {'yes' if meets else 'no'} |")
    defaults = {option.name: option.default for option in pruner_options("asha")}
    label = f"asha, eta {defaults['reduction_factor']}, min_resource {defaults['min_resource']}"
    if meeting:
        most = max(meeting)
        out += ["", f"Meeting the goal on both sets: {len(meeting)} settings; the most seeds kept (both sets together): "
                f"{most[1]} ({most[0]}). The defaults: {label} "
                f"({'meets the goal' if label in dict((l, k) for k, l in meeting) else '**does not meet the goal**'})."]
    else:
        out += ["", f"No setting meets the goal on both sets. The defaults: {label}."]
    return out


def report(table: Dict[str, List[Row]], crossing: Dict[str, Dict[int, List[int]]], grid: List[str],
           seeds: Sequence[int], seconds: float, command: str) -> str:
    out = [
        "# Pruners: steps used and best final score, against Optuna's pruners",
        "",
        f"Reproduce ({seconds:.0f} s on this machine, one process):",
        "",
        "```",
        command,
        "```",
        "",
        f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}); per seed, {TRIALS_PER_SEED} trials searched with {SLOTS} "
        "slots advancing in lock-step, the same trials for every method (benchmarks/pruning.py says how). "
        "Cells: median over seeds, quartiles in brackets. *fraction*: steps used over no pruning's, median over "
        "seeds. *kept*: seeds on which the method ran to the end the trial that no pruning finds best. "
        "*regret*: median over seeds of no pruning's best minus the method's. Rules and options: docs/pruning.md.",
    ]
    if DIGITS_CACHE.exists():
        cache = json.loads(DIGITS_CACHE.read_text())
        out += ["", f"The digits curves are cached in `{DIGITS_CACHE.relative_to(REPO)}` ({cache['source']}); "
                f"made in {cache['seconds']:.0f} s (2 processes) by `{cache['regenerate']}`."]
    for set_name, rows in table.items():
        ranks = crossing[set_name]
        where = "; ".join(f"step {step}: median rank {statistics.median(ranks[step]):g}, first on "
                          f"{sum(rank == 1 for rank in ranks[step])}/{len(seeds)} seeds, outside the top third on "
                          f"{sum(rank > TRIALS_PER_SEED // 3 for rank in ranks[step])}"
                          for step in CROSSING_STEPS if ranks[step])
        out += ["", f"## {set_name}", "",
                f"Crossing: where the trial that ends best stood among the {TRIALS_PER_SEED} -- {where}.", "",
                "| method | steps used | fraction | best final score | kept | regret | trials finished | |",
                "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            (s1, s2, s3), (b1, b2, b3) = row.steps, row.best
            finished = statistics.median(run.completed for run in row.runs)
            out.append(f"| {row.method.label} | {s2:.0f} ({s1:.0f} - {s3:.0f}) | {row.fraction:.1%} | "
                       f"{b2:.4f} ({b1:.4f} - {b3:.4f}) | {row.kept}/{len(row.runs)} | {row.regret:.4f} | "
                       f"{finished:g} | {row.method.note} |")
        holds, lines = goal_lines(rows)
        out += ["", f"Goal: {'holds' if holds else '**does not hold**'}", ""] + lines
    out += ["", "## Choosing the defaults", "",
            "ASHA with every reduction_factor (eta) and min_resource below, on the same seeds and trials; "
            "*goal on both*: median best at or above no pruning's lower quartile and at most "
            f"{GOAL_FRACTION:.0%} of its steps, on both curve sets.", ""] + grid
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regenerate-digits", action="store_true", help="re-train the digits curves, then exit")
    parser.add_argument("--digits-configs", type=int, default=64)
    parser.add_argument("--digits-epochs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="processes training digits curves")
    parser.add_argument("--seeds", type=int, default=50, help="seeds 0..N-1")
    parser.add_argument("--write", metavar="FILE", help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.regenerate_digits:
        regenerate_digits(args.digits_configs, args.digits_epochs, args.jobs)
        return
    seeds = list(range(args.seeds))
    pool = digits_pool()
    started = time.monotonic()
    curve_sets = {
        f"synthetic: y = a - b t^-c + noise, {SYNTHETIC_STEPS} steps, fresh curves per seed": synthetic_curves,
        f"digits CNN: {len(pool)} cached configurations x {len(pool[0])} epochs, {TRIALS_PER_SEED} per seed":
            lambda seed: digits_curves(seed, pool),
    }
    table, crossing = measure(curve_sets, seeds)
    grid = grid_report(measure(curve_sets, seeds, grid_methods)[0])
    command = ".venv/bin/python benchmarks/pruning.py" + (f" --seeds {args.seeds}" if args.seeds != 50 else "")
    text = report(table, crossing, grid, seeds, time.monotonic() - started, command + (f" --write {args.write}" if args.write else ""))
    print(text)
    if args.write:
        target = Path(args.write)
        notes = ""
        if target.exists() and NOTES_MARKER in target.read_text():
            notes = target.read_text().split(NOTES_MARKER, 1)[1]
        target.write_text(text + "\n" + NOTES_MARKER + notes)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
