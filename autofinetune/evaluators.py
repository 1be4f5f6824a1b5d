"""How a candidate is evaluated: from scratch, or resumed from a better model.

An evaluator declares the options it adds to a trial's command line (so the one argv builder in
rules.py can refuse collisions before anything runs), turns a candidate into those options and
its parent, and learns from finished trials. It never launches anything and never sees the
strategy. The choice of parents is a pure function (`select_parents`), in the manner of Ray
Tune's PBT `_quantiles`, so it is tested without a search; see docs/architecture.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError
from .records import TrialRecord
from .rules import is_success, rank_key


@dataclass
class TrialPlan:
    """The evaluator's part of a trial's command line, and where its model comes from."""

    args: List[Tuple[str, str]] = field(default_factory=list)
    parent: Optional[Dict[str, Any]] = None


class Evaluator:
    name = ""
    #: The options this evaluator passes to trials (the script must accept them).
    options: Tuple[str, ...] = ()

    def plan(self, round_index: int, index: int) -> TrialPlan:
        raise NotImplementedError

    def observe(self, round_index: int, trials: Sequence[TrialRecord]) -> List[str]:
        """Learn from the finished trials of a round; return lines worth telling the user."""
        return []

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class FullTrail(Evaluator):
    """Every candidate trains from scratch (the CLI keeps the original's spelling, fulltrail)."""

    name = "fulltrail"

    def plan(self, round_index: int, index: int) -> TrialPlan:
        return TrialPlan()


def select_parents(trials: Sequence[TrialRecord]) -> List[TrialRecord]:
    """The best half (rounded up) of the trials that succeeded and left a model, best first.

    Ranked by the one rule of rules.py (score, then earliest round and index), so the choice is
    deterministic (the original went through an unordered set). A crashed, timed-out or invalid
    trial, or one whose model dir is gone or empty, is never a parent.
    """
    usable = sorted((t for t in trials if is_success(t) and _holds_a_model(t.model_dir)), key=rank_key)
    return usable[: (len(usable) + 1) // 2]


def assign_parent(parents: Sequence[Dict[str, Any]], index: int) -> Optional[Dict[str, Any]]:
    """Candidate i resumes from parent i mod len(parents): the best parents get the most children."""
    return dict(parents[index % len(parents)]) if parents else None


class PopulationBased(Evaluator):
    """Exploit the better models of the last round, explore new hyperparameters (PBT-like).

    Round 0 trains from scratch. After each round, `select_parents` of its trials become the
    parents, and candidate i of the next round resumes from `assign_parent(parents, i)` with
    `--model_path=DIR --epochs=<resume_epochs>`. A round with no usable trial keeps the previous
    parents.
    """

    name = "populationbased"
    options = ("model_path", "epochs")

    def __init__(self, resume_epochs: int = 1) -> None:
        self.resume_epochs = resume_epochs
        self.parents: List[Dict[str, Any]] = []
        self.parent_round: Optional[int] = None

    def plan(self, round_index: int, index: int) -> TrialPlan:
        parent = assign_parent(self.parents, index)
        if parent is None:
            return TrialPlan()
        return TrialPlan([("model_path", parent["model_dir"]), ("epochs", str(self.resume_epochs))], parent)

    def observe(self, round_index: int, trials: Sequence[TrialRecord]) -> List[str]:
        chosen = select_parents(trials)
        if not chosen:
            if self.parents:
                return [f"No trial of round {round_index} succeeded: round {round_index + 1} resumes from the parents of round {self.parent_round} again."]
            return [f"No trial of round {round_index} succeeded: round {round_index + 1} trains from scratch."]
        self.parents = [{"round": t.round, "index": t.index, "model_dir": t.model_dir, "score": t.score} for t in chosen]
        self.parent_round = round_index
        return []

    def state_dict(self) -> Dict[str, Any]:
        return {"parents": self.parents, "parent_round": self.parent_round}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.parents = [dict(p) for p in state.get("parents", []) if isinstance(p, dict)]
        self.parent_round = state.get("parent_round")


def _holds_a_model(model_dir: str) -> bool:
    """A parent must have left something to resume from; the tuner pre-creates every model dir,
    so an empty one means the trial saved nothing (or deleted what it saved)."""
    try:
        with os.scandir(model_dir) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


EVALUATORS = {"fulltrail": FullTrail, "populationbased": PopulationBased}


def make_evaluator(name: str, resume_epochs: int = 1) -> Evaluator:
    if name == "populationbased":
        return PopulationBased(resume_epochs)
    if name in EVALUATORS:
        return EVALUATORS[name]()
    raise ConfigError(f"--evaluator={name!r}: unknown evaluator; choose one of {', '.join(sorted(EVALUATORS))}")
