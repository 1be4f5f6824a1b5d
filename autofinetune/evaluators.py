"""How a candidate is evaluated: from scratch, or resumed from a better model (SPEC A5).

An evaluator turns a candidate into the extra options of its trial and learns from the
finished round; it never launches anything and never sees the strategy.
"""
from __future__ import annotations

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


EVALUATORS = {"fulltrail": FullTrail}
PLANNED = {"populationbased"}


def make_evaluator(name: str) -> Evaluator:
    if name in EVALUATORS:
        return EVALUATORS[name]()
    if name in PLANNED:
        raise ConfigError(f"--evaluator={name}: not available yet in this version; use --evaluator=fulltrail")
    raise ConfigError(f"--evaluator={name!r}: unknown evaluator; choose one of {', '.join(sorted(set(EVALUATORS) | PLANNED))}")
