"""How a candidate is evaluated: from scratch, or resumed from a better model (SPEC A5).

An evaluator turns a candidate into the extra options of its trial and learns from the
finished round; it never launches anything and never sees the strategy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .errors import ConfigError
from .records import TrialRecord


@dataclass
class TrialPlan:
    """The evaluator's part of a trial's command line, and where its model comes from."""

    extra_argv: List[str] = field(default_factory=list)
    parent: Optional[Dict[str, Any]] = None


class Evaluator:
    name = ""

    def plan(self, round_index: int, index: int) -> TrialPlan:
        raise NotImplementedError

    def observe(self, round_index: int, trials: Sequence[TrialRecord]) -> List[str]:
        """Learn from a finished round; return lines worth telling the user."""
        return []

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class FullTrail(Evaluator):
    """Every candidate trains from scratch."""

    name = "fulltrail"

    def plan(self, round_index: int, index: int) -> TrialPlan:
        return TrialPlan()


class PopulationBased(Evaluator):
    """Exploit the better models of the last round, explore new hyperparameters (PBT-like).

    Round 0 trains from scratch. After each round the best half (rounded up) of that round's
    *successful* trials become the parents, ranked by score with ties broken by index, so the
    choice is deterministic (the original went through an unordered set). Candidate i of the
    next round resumes from parent i mod len(parents) with `--model_path=DIR --epochs=1`. A
    parent is only a model dir its trial finished writing: a crashed, timed-out or invalid trial,
    or one whose dir is gone or empty, never is. A round with no success keeps the previous parents.
    """

    name = "populationbased"

    def __init__(self, resume_epochs: int = 1) -> None:
        self.resume_epochs = resume_epochs
        self.parents: List[Dict[str, Any]] = []
        self.parent_round: Optional[int] = None

    def plan(self, round_index: int, index: int) -> TrialPlan:
        if not self.parents:
            return TrialPlan()
        parent = self.parents[index % len(self.parents)]
        return TrialPlan([f"--model_path={parent['model_dir']}", f"--epochs={self.resume_epochs}"], dict(parent))

    def observe(self, round_index: int, trials: Sequence[TrialRecord]) -> List[str]:
        usable = [t for t in trials if t.ok and _holds_a_model(t.model_dir)]
        if not usable:
            if self.parents:
                return [f"No trial of round {round_index} succeeded: round {round_index + 1} resumes from the parents of round {self.parent_round} again."]
            return [f"No trial of round {round_index} succeeded: round {round_index + 1} trains from scratch."]
        ranked = sorted(usable, key=lambda t: (-t.score, t.index))
        keep = ranked[: (len(ranked) + 1) // 2]
        self.parents = [{"round": t.round, "index": t.index, "model_dir": t.model_dir, "score": t.score} for t in keep]
        self.parent_round = round_index
        return []

    def state_dict(self) -> Dict[str, Any]:
        return {"parents": self.parents, "parent_round": self.parent_round}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.parents = [dict(p) for p in state.get("parents", [])]
        self.parent_round = state.get("parent_round")


def _holds_a_model(model_dir: str) -> bool:
    """A parent must have left something to resume from; the tuner pre-creates every model dir,
    so an empty one means the trial saved nothing (or deleted what it saved)."""
    try:
        with os.scandir(model_dir) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def lineage(trial: TrialRecord, trials: Sequence[TrialRecord], output_dir: str) -> List[str]:
    """The chain of model dirs the trial's model grew from, oldest first (relative paths)."""
    by_key = {(t.round, t.index): t for t in trials if t.ok}
    chain = []
    current: Optional[TrialRecord] = trial
    seen = set()
    while current is not None and (current.round, current.index) not in seen:
        seen.add((current.round, current.index))
        chain.append(os.path.relpath(current.model_dir, output_dir))
        parent = current.parent
        current = by_key.get((parent["round"], parent["index"])) if parent else None
    return list(reversed(chain))


EVALUATORS = {"fulltrail": FullTrail, "populationbased": PopulationBased}


def make_evaluator(name: str) -> Evaluator:
    if name in EVALUATORS:
        return EVALUATORS[name]()
    raise ConfigError(f"--evaluator={name!r}: unknown evaluator; choose one of {', '.join(sorted(EVALUATORS))}")
