"""When to stop a trial early, from the intermediate scores it reports (`--pruner`).

The rules and their sources are in docs/pruning.md: the median stopping rule as Optuna's
`MedianPruner` defines it, and asynchronous successive halving (ASHA; Li et al., "A System for
Massively Parallel Hyperparameter Tuning", MLSys 2020, after Jamieson & Talwalkar, AISTATS
2016) as Optuna's `SuccessiveHalvingPruner` runs it. benchmarks/pruning.py measures them
against no pruning and against Optuna's own pruners (docs/pruning-benchmark.md).

This module is a pure decision procedure, standard library only, because the tuner imports it
for every search (and `--help`), pruning or not. It never looks at a clock and draws no random
numbers: every decision is a function of the sequence of `report()` and `finished()` calls
alone, so `--resume` rebuilds the exact state (and repeats the exact decisions) by replaying
the journal's reports and finishes in journal order.

Conventions every pruner here shares (the `Pruner` base class enforces them):

* Scores are maximised. A non-finite score (NaN, +inf, -inf) is a broken measurement and is
  kept as NaN; NaN then follows Optuna's rules (docs/pruning.md, "Non-finite scores").
* A step is an int >= 0 chosen by the trial (report the resource used so far, e.g. the number
  of epochs done); steps may skip numbers. A report whose step is not above the trial's last
  reported step (repeated, or going back) is ignored: it is not recorded and returns False.
  Optuna likewise ignores a repeated step.
* Once `report()` has returned True for a trial, it returns True for every later report of
  that trial until `finished()`, and records nothing more.
* After `finished(trial, ...)`, a report under the same key starts a new attempt from nothing
  (what the median pruner learnt from a completed run, and the values ASHA recorded at its
  rungs, stay). A caller that re-runs a trial (a retry, or a trial the tuner restarts on
  resume) must call `finished(trial, "failed")` first, or use a new key.
"""
from __future__ import annotations

import abc
import bisect
import math
import operator
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Mapping, Optional, Set, Tuple, Union

from .errors import ConfigError, shown

PRUNER_NAMES: Tuple[str, ...] = ("none", "median", "asha")

#: The statuses a trial ends with, as `runner.Status` spells them.
FINISH_STATUSES: Tuple[str, ...] = ("ok", "pruned", "failed")

Number = Union[int, float]


@dataclass(frozen=True)
class PrunerOption:
    """One `--pruner_option name=value`: what the CLI's help and its validation are built from."""

    name: str
    kind: type  # int or float
    default: Number
    low: Number
    #: None: no upper bound.
    high: Optional[Number]
    help: str

    def interval(self) -> str:
        """The valid values as a user reads them, e.g. "an integer >= 2"."""
        what = "an integer" if self.kind is int else "a number"
        if self.high is None:
            return f"{what} >= {self.low:g}"
        return f"{what} in [{self.low:g}, {self.high:g}]"

    def contains(self, value: Number) -> bool:
        return math.isfinite(value) and value >= self.low and (self.high is None or value <= self.high)


_OPTIONS: Dict[str, Tuple[PrunerOption, ...]] = {
    "none": (),
    "median": (
        PrunerOption("n_startup_trials", int, 5, 0, None,
                     "no pruning until this many trials have completed"),
        PrunerOption("n_warmup_steps", int, 0, 0, None,
                     "no pruning at a step below this one"),
        PrunerOption("interval_steps", int, 1, 1, None,
                     "check once per this many steps, counted from n_warmup_steps"),
        PrunerOption("n_min_trials", int, 1, 1, None,
                     "no pruning at a step that fewer completed trials reported"),
    ),
    "asha": (
        PrunerOption("min_resource", int, 2, 1, None,
                     "the step of the first rung (r)"),
        PrunerOption("reduction_factor", int, 2, 2, None,
                     "eta: rungs at min_resource*eta^k; the top 1/eta of a rung go on"),
        PrunerOption("min_early_stopping_rate", int, 0, 0, 60,
                     "s: the first rung is at min_resource*eta^s"),
        PrunerOption("max_resource", int, 0, 0, None,
                     "no rung at or above this step (0: no bound)"),
    ),
}

_DISPLAY = {"none": "no pruner", "median": "the median pruner", "asha": "the ASHA pruner"}


def pruner_options(name: str) -> Tuple[PrunerOption, ...]:
    """The options `--pruner=name` takes, in the order its help lists them."""
    return _OPTIONS[_checked_name(name)]


def _checked_name(name: str) -> str:
    if name not in _OPTIONS:
        raise ConfigError(f"--pruner={shown(name)} is not a pruner; choose one of: {', '.join(PRUNER_NAMES)}")
    return name


def _parse(name: str, spec: PrunerOption, raw: object) -> Number:
    """One option's value from the command line (a string) or the API (a number)."""
    where = f"--pruner_option {spec.name}={shown(raw)}"
    must = (f"{_DISPLAY[name]}'s {spec.name} ({spec.help}) must be {spec.interval()}; "
            f"fix: e.g. --pruner_option {spec.name}={spec.default} (the default)")
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ConfigError(f"{where}: not a number; {must}")
    value: Number
    try:
        value = float(raw) if spec.kind is float else _whole(raw)
    except (ValueError, OverflowError):
        kind = "a whole number" if spec.kind is int else "a number"
        raise ConfigError(f"{where}: not {kind}; {must}") from None
    if not spec.contains(value):
        raise ConfigError(f"{where} is out of range: {must}")
    return value


def _whole(raw: Union[str, int, float]) -> int:
    """An int from "3", 3, "3.0" or "1e3"; ValueError for 2.5 or "three"."""
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    number = float(raw)
    if not number.is_integer():
        raise ValueError(raw)
    return int(number)


def check_pruner_options(name: str, raw: Mapping[str, object]) -> Dict[str, Number]:
    """Every option of `--pruner=name`, defaults filled in, from `--pruner_option k=v` pairs.

    Values may be strings (the CLI) or numbers (the API). Each error is one line naming the
    option as the CLI spells it, its valid range and the fix.
    """
    specs = {spec.name: spec for spec in pruner_options(name)}
    for key in raw:
        if key not in specs:
            if not specs:
                raise ConfigError(
                    f"--pruner_option {shown(key)}=...: --pruner={name} takes no options; drop the "
                    f"--pruner_option or choose --pruner=median or --pruner=asha"
                )
            raise ConfigError(
                f"--pruner_option {shown(key)}=...: {_DISPLAY[name]} (--pruner={name}) has no option "
                f"{shown(key)!r}; valid options: {', '.join(specs)}"
            )
    values = {key: _parse(name, spec, raw[key]) if key in raw else spec.default for key, spec in specs.items()}
    if name == "asha" and values["max_resource"]:
        first_rung = values["min_resource"] * values["reduction_factor"] ** values["min_early_stopping_rate"]
        if values["max_resource"] <= first_rung:
            raise ConfigError(
                f"--pruner_option max_resource={values['max_resource']}: the first rung is at step {first_rung} "
                f"(min_resource*reduction_factor^min_early_stopping_rate), so ASHA would never stop a trial; "
                f"give max_resource above {first_rung}, or 0 for no bound"
            )
    return values


def make_pruner(name: str, options: Mapping[str, object] = {}) -> "Pruner":
    """Build `--pruner=name`; `options` may be partial (defaults fill the rest) and is checked."""
    values = check_pruner_options(name, options)
    if name == "median":
        return MedianPruner(**values)  # type: ignore[arg-type]
    if name == "asha":
        return ASHAPruner(**values)  # type: ignore[arg-type]
    return NoPruner()


def _checked_step(step: int) -> int:
    """The step as an int (numpy integers too); ValueError for anything else or a negative one,
    a caller's bug: the tuner checks what a trial reports before it gets here."""
    try:
        number = operator.index(step) if not isinstance(step, bool) else -1
    except TypeError:
        number = -1
    if number < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return number


def _as_score(score: float) -> float:
    """The score as the rules see it: every non-finite value is one broken measurement, NaN."""
    try:
        value = float(score)
    except OverflowError:  # an int too large for a float
        return math.nan
    return value if math.isfinite(value) else math.nan


class Pruner(abc.ABC):
    """The decision procedure behind `--pruner`; deterministic, see the module docstring.

    Subclasses implement `_decide` (and `_forget`); this class applies the shared conventions
    (ignored steps, a sticky stop, a new attempt after `finished`), so the rules cannot differ
    on them.
    """

    name: str = ""

    def __init__(self) -> None:
        self._last_step: Dict[Hashable, int] = {}
        self._stopped: Set[Hashable] = set()

    def report(self, trial: Hashable, step: int, score: float) -> bool:
        """Record `trial`'s intermediate `score` (higher is better) at `step`; True: stop it now.

        ValueError for a step that is not an int >= 0 (the caller checks what a trial reports).
        """
        step = _checked_step(step)
        value = _as_score(score)
        if trial in self._stopped:
            return True
        previous = self._last_step.get(trial)
        if previous is not None and step <= previous:
            return False
        self._last_step[trial] = step
        if self._decide(trial, step, value, previous):
            self._stopped.add(trial)
            return True
        return False

    def finished(self, trial: Hashable, status: str) -> None:
        """`trial` ended: "ok" (ran to completion and gave a final score), "pruned" or "failed"."""
        if status not in FINISH_STATUSES:
            raise ValueError(f"status must be one of {FINISH_STATUSES}, got {status!r}")
        self._last_step.pop(trial, None)
        self._stopped.discard(trial)
        self._forget(trial, status)

    @abc.abstractmethod
    def _decide(self, trial: Hashable, step: int, value: float, previous: Optional[int]) -> bool:
        """Record `value` (NaN if it was not finite) at `step`, above `previous` (the trial's last
        recorded step, None at its first report); True to stop the trial."""

    @abc.abstractmethod
    def _forget(self, trial: Hashable, status: str) -> None:
        """Drop the running trial's state, keeping what the rule learns from how it ended."""


class NoPruner(Pruner):
    """`--pruner=none`: never stops a trial (it still checks its callers as the others do)."""

    name = "none"

    def _decide(self, trial: Hashable, step: int, value: float, previous: Optional[int]) -> bool:
        return False

    def _forget(self, trial: Hashable, status: str) -> None:
        pass


@dataclass
class _StepPool:
    """The completed trials' values at one step: how many reported it (NaN included, as
    Optuna's n_min_trials counts them) and the finite ones, sorted, for the median."""

    count: int = 0
    finite: List[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.count += 1
        if not math.isnan(value):
            bisect.insort(self.finite, value)

    def median(self) -> float:
        """Linear interpolation at the 50th percentile, as `numpy.nanpercentile` computes it
        (the upper value minus half the gap), so a tie with Optuna's median is a tie here."""
        values = self.finite
        middle = len(values) // 2
        if len(values) % 2:
            return values[middle]
        lower, upper = values[middle - 1], values[middle]
        return upper - (upper - lower) * 0.5


class MedianPruner(Pruner):
    """The median stopping rule with Optuna's `MedianPruner` semantics, maximising.

    At a checked step, a trial stops when the best value it has reported so far is below the
    median of the values that completed ("ok") trials reported at that same step. A step is
    checked once at least `n_startup_trials` trials (and at least one) have completed, when it
    is at or above `n_warmup_steps`, and when it is the trial's first report in its window of
    `interval_steps` steps counted from `n_warmup_steps`; a trial whose values are all NaN is
    stopped at a checked step; no completed trial reported this step, fewer than `n_min_trials`
    did, or all theirs are NaN: no stop. docs/pruning.md has the source.
    """

    name = "median"

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0, interval_steps: int = 1,
                 n_min_trials: int = 1) -> None:
        super().__init__()
        check_pruner_options(self.name, {"n_startup_trials": n_startup_trials, "n_warmup_steps": n_warmup_steps,
                                         "interval_steps": interval_steps, "n_min_trials": n_min_trials})
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.n_min_trials = n_min_trials
        self._values: Dict[Hashable, Dict[int, float]] = {}
        self._best: Dict[Hashable, float] = {}
        self._completed = 0
        self._pools: Dict[int, _StepPool] = {}

    def _decide(self, trial: Hashable, step: int, value: float, previous: Optional[int]) -> bool:
        self._values.setdefault(trial, {})[step] = value
        best = self._best.get(trial, math.nan)
        if not math.isnan(value) and (math.isnan(best) or value > best):
            best = self._best[trial] = value
        if self._completed == 0 or self._completed < self.n_startup_trials:
            return False
        if step < self.n_warmup_steps:
            return False
        window_start = (step - self.n_warmup_steps) // self.interval_steps * self.interval_steps + self.n_warmup_steps
        if previous is not None and previous >= window_start:
            return False  # this window was checked (or could have been) at an earlier report
        if math.isnan(best):
            return True
        pool = self._pools.get(step)
        if pool is None or pool.count < self.n_min_trials or not pool.finite:
            return False
        return best < pool.median()

    def _forget(self, trial: Hashable, status: str) -> None:
        values = self._values.pop(trial, {})
        self._best.pop(trial, None)
        if status == "ok":
            self._completed += 1
            for step, value in values.items():
                self._pools.setdefault(step, _StepPool()).add(value)


class ASHAPruner(Pruner):
    """Asynchronous successive halving, with Optuna's `SuccessiveHalvingPruner` semantics.

    Rung k sits at step min_resource * reduction_factor**(min_early_stopping_rate + k) (below
    max_resource when that is set). The first report of a trial at or beyond its next rung's
    step records the value there and lets the trial go on only if the value is among the top
    max(n // reduction_factor, 1) of the n values recorded at that rung so far, itself
    included, ties kept: asynchronous, so the first trials at a rung (n < reduction_factor)
    go on only while they are the best recorded there. One report may pass several rungs; it
    is judged at each in turn. A NaN at a rung stops the trial and is not recorded. Values
    stay recorded however their trial ends. docs/pruning.md has the sources.
    """

    name = "asha"

    def __init__(self, min_resource: int = 2, reduction_factor: int = 2, min_early_stopping_rate: int = 0,
                 max_resource: int = 0) -> None:
        super().__init__()
        # checked here too: a reduction_factor of 1 would judge a trial at the same rung forever
        check_pruner_options(self.name, {"min_resource": min_resource, "reduction_factor": reduction_factor,
                                         "min_early_stopping_rate": min_early_stopping_rate,
                                         "max_resource": max_resource})
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_early_stopping_rate = min_early_stopping_rate
        self.max_resource = max_resource
        self._next_rung: Dict[Hashable, int] = {}
        self._recorded: List[List[float]] = []

    def rung_step(self, rung: int) -> int:
        """The step of rung `rung` (0 is the first), whether or not max_resource allows it."""
        return self.min_resource * self.reduction_factor ** (self.min_early_stopping_rate + rung)

    def _decide(self, trial: Hashable, step: int, value: float, previous: Optional[int]) -> bool:
        rung = self._next_rung.get(trial, 0)
        while True:
            resource = self.rung_step(rung)
            if step < resource or (self.max_resource and resource >= self.max_resource):
                return False
            if math.isnan(value):
                return True
            while len(self._recorded) <= rung:
                self._recorded.append([])
            recorded = self._recorded[rung]
            better = len(recorded) - bisect.bisect_right(recorded, value)
            bisect.insort(recorded, value)
            if better >= max(len(recorded) // self.reduction_factor, 1):
                return True
            rung += 1
            self._next_rung[trial] = rung

    def _forget(self, trial: Hashable, status: str) -> None:
        self._next_rung.pop(trial, None)
