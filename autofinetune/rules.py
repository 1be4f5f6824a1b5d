"""The search's rules, each written once: which trial is best, where a model came from, and
what a trial's command line is.

`best_model/`, `summary`, VisualDL, `plot`, the progress line and the population-based
evaluator's choice of parents all ask these functions, so they cannot disagree (see
docs/architecture.md, "One place per idea").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .records import TrialRecord
    from .space import SearchSpace


# -- the best trial ---------------------------------------------------------------------------
def rank_key(trial: "TrialRecord") -> Tuple[float, int, int]:
    """Higher score first; a tie goes to the earlier (round, index), never to whichever trial
    happened to finish first, so the best model and its lineage do not depend on timing."""
    return (-float(trial.score), trial.round, trial.index)  # type: ignore[arg-type]


def is_success(trial: "TrialRecord") -> bool:
    return trial.ok and trial.score is not None and math.isfinite(trial.score)


def better(a: "TrialRecord", b: Optional["TrialRecord"]) -> bool:
    """Is `a` a better result than `b` (None: no best yet)?"""
    if not is_success(a):
        return False
    return b is None or not is_success(b) or rank_key(a) < rank_key(b)


def best_of(trials: Iterable["TrialRecord"]) -> Optional["TrialRecord"]:
    best = None
    for trial in trials:
        if better(trial, best):
            best = trial
    return best


def ranked(trials: Iterable["TrialRecord"]) -> List["TrialRecord"]:
    """The successful trials, best first (the order of `rank_key`)."""
    return sorted((t for t in trials if is_success(t)), key=rank_key)


# -- lineage -----------------------------------------------------------------------------------
def lineage(trial: "TrialRecord", trials: Iterable["TrialRecord"]) -> List["TrialRecord"]:
    """The trials whose models the trial's model grew from, oldest first, itself last.

    A parent is named by (round, index) in the trial's `parent`; the successful attempt of that
    candidate is the model the child was given. A parent missing from `trials` ends the chain.
    """
    by_key: Dict[Tuple[int, int], "TrialRecord"] = {}
    for candidate in trials:
        key = (candidate.round, candidate.index)
        if key not in by_key or is_success(candidate):
            by_key[key] = candidate
    chain = [trial]
    seen = {(trial.round, trial.index)}
    current = trial
    while current.parent:
        key = (current.parent.get("round"), current.parent.get("index"))
        parent = by_key.get(key)  # type: ignore[arg-type]
        if parent is None or key in seen:
            break
        seen.add(key)  # type: ignore[arg-type]
        chain.append(parent)
        current = parent
    return list(reversed(chain))


def model_name(trial: "TrialRecord") -> str:
    """`round1/model-0`: how a model is named to users, wherever the output dir now lies."""
    return f"round{trial.round}/model-{trial.index}"


# -- the trial's command line ------------------------------------------------------------------
#: The option every trial is given: where it saves its model.
SAVED_PARAMS_DIR = "saved_params_dir"


@dataclass(frozen=True)
class TrialCommand:
    """How a trial's argv is put together, and the one check that keeps it honest.

    Order: the program, the tuned hyperparameters, `--saved_params_dir`, the evaluator's
    options (`--model_path`, `--epochs` under population-based), then the trailing `name value`
    pairs. No two parts may name the same option: `check()` refuses a collision before anything
    runs, because argparse would keep the last and the records would describe a trial that
    never ran.
    """

    program: Tuple[str, ...]
    space: "SearchSpace"
    passthrough: Tuple[Tuple[str, str], ...] = ()
    evaluator_options: Tuple[str, ...] = ()
    evaluator_name: str = ""
    #: The options the script takes, as its preflight found them (None: not known). A script
    #: without `--saved_params_dir` is not given it (full-trail needs no model back); the folder
    #: is in its environment either way.
    accepted: Optional[Collection[str]] = None

    @property
    def gives_saved_params_dir(self) -> bool:
        return self.accepted is None or SAVED_PARAMS_DIR in self.accepted

    @property
    def tuner_options(self) -> Tuple[str, ...]:
        """The options the tuner sets itself (and a script must accept)."""
        return (SAVED_PARAMS_DIR, *self.evaluator_options)

    def check(self) -> None:
        tuned = set(self.space.names)
        for name in self.tuner_options:
            if name in tuned:
                raise ConfigError(f"{self.space.source}: hyperparameter {name!r} is an option the tuner sets itself "
                                  f"(--{name}{self._why(name)}); fix: rename it in the param file"
                                  + (" or use --evaluator=fulltrail" if name in self.evaluator_options else ""))
        for name, value in self.passthrough:
            shown = f"trailing '{name} {value}'"[:80]
            if name in tuned:
                raise ConfigError(f"{shown}: {name} is a tuned hyperparameter in {self.space.source}, and a trailing pair would "
                                  f"override the tuned value in every trial; fix: drop the pair, or remove {name} from the param file")
            if name in self.tuner_options:
                raise ConfigError(f"{shown}: --{name} is set by the tuner itself{self._why(name)}; fix: drop the pair"
                                  + (" (the resumed trials' epochs are --resume_epochs)" if name == "epochs" else ""))

    def _why(self, name: str) -> str:
        if name == SAVED_PARAMS_DIR:
            return ": every trial's own model folder"
        return f": set by the {self.evaluator_name} evaluator" if self.evaluator_name else ""

    def argv(self, params: Mapping[str, object], model_dir: str, evaluator_args: Sequence[Tuple[str, str]] = ()) -> List[str]:
        saved = [f"--{SAVED_PARAMS_DIR}={model_dir}"] if self.gives_saved_params_dir else []
        return [*self.program, *self.space.argv(params), *saved,
                *(f"--{name}={value}" for name, value in evaluator_args),
                *(f"--{name}={value}" for name, value in self.passthrough)]


def parse_passthrough(items: Sequence[str]) -> List[Tuple[str, str]]:
    """`max_seq_len 128` -> [('max_seq_len', '128')]: the original's undashed trailing pairs."""
    if len(items) % 2:
        raise ConfigError(f"trailing arguments must be 'name value' pairs, got an odd count ({len(items)}: {' '.join(items)[:200]}); "
                          f"fix: give a value for every name, e.g. max_seq_len 128")
    pairs = []
    for name, value in zip(items[0::2], items[1::2]):
        if name.startswith("-") or not name:
            raise ConfigError(f"trailing argument {name[:60]!r}: pass names without dashes, e.g. 'max_seq_len 128' (reaches the trial as --max_seq_len=128)")
        pairs.append((name, value))
    return pairs


# -- the schedule of the best lineage ----------------------------------------------------------------
SCHEDULE_NOTE = ("under population-based training the best model grew through every step of its lineage, each with its "
                 "own hyperparameters: this schedule is the recipe, not the last round's values alone")


def schedule(trial: "TrialRecord", trials: Iterable["TrialRecord"], resume_epochs: Optional[int]) -> List[Dict[str, object]]:
    """The steps that trained `trial`'s model, oldest first: what `autofinetune retrain` replays.

    `epochs` is None for the first step (trained from scratch: the script's own default, or a
    trailing `epochs N` pair) and `resume_epochs` for every step resumed from its parent's model.
    """
    steps: List[Dict[str, object]] = []
    for position, step in enumerate(lineage(trial, trials)):
        steps.append({"model": model_name(step), "round": step.round, "index": step.index, "score": step.score,
                      "params": dict(step.params), "epochs": None if position == 0 else resume_epochs})
    return steps
