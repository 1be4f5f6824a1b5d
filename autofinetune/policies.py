"""When the next trial starts: the two launch policies of the one search loop (search.py).

* `RoundPolicy` — a round is a generation of the strategy: its candidates run as a work queue
  (a freed slot takes the next candidate at once), and the next round is asked for when every
  trial of this one has ended;
* `AsyncPolicy` (`--async`) — each candidate moves on alone: when candidate i's trial of round
  r ends, the strategy hears that one result and candidate i's trial of round r + 1 starts in
  the slot it freed. Rounds stay the output tree's unit and are announced when complete, but
  overlap in time; the proposals depend on the order trials finish in, so a seed no longer
  makes the search repeatable to the bit, and only strategies whose registry entry says
  `supports_async` can run this way.

A policy only decides what to launch and when a round is complete; launching, journaling,
telling the views and printing the round line are the search's (`Search.launch`,
`Search.close_round`), the same for both.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict, List, Tuple

import numpy as np

from .journal import ToldEvent
from .records import TrialRecord

if TYPE_CHECKING:  # pragma: no cover
    from .search import Search

log = logging.getLogger("autofinetune")

Key = Tuple[int, int]


class LaunchPolicy:
    """When the next trial starts; the search loop is the same for every policy."""

    def __init__(self, search: Search) -> None:
        self.search = search
        #: Finished trials kept from before a resume, by (round, index), not yet part of a round.
        self.done: Dict[Key, TrialRecord] = {}

    def begin(self) -> None:
        raise NotImplementedError

    def finished(self, record: TrialRecord) -> None:
        raise NotImplementedError


class RoundPolicy(LaunchPolicy):
    """Generations: round r + 1 is asked for when every trial of round r has ended."""

    def __init__(self, search: Search) -> None:
        super().__init__(search)
        self.round = 0
        self.trials: List[TrialRecord] = []

    def begin(self) -> None:
        self._start_round(self.round)

    def _start_round(self, round_index: int) -> None:
        s = self.search
        if round_index >= s.config.rounds:
            return
        self.round = round_index
        points = s.strategy.ask()
        self.trials = []
        for index, point in enumerate(points):
            kept = self.done.pop((round_index, index), None)
            if kept is not None:
                if not np.allclose(kept.point, point, rtol=0, atol=1e-9):
                    log.warning("round %d trial %d: the strategy proposes a different point than before the interruption; "
                                "keeping the finished trial", round_index, index)
                self.trials.append(kept)
                continue
            s.launch(round_index, index, point)
        if len(self.trials) == s.config.popsize:  # everything was finished before the interruption
            self._end_round()

    def finished(self, record: TrialRecord) -> None:
        self.trials.append(record)
        if len(self.trials) == self.search.config.popsize:
            self._end_round()

    def _end_round(self) -> None:
        s = self.search
        trials = sorted(self.trials, key=lambda t: t.index)
        s.strategy.tell([t.loss for t in trials])
        notes = s.evaluator.observe(self.round, trials)
        if self.round + 1 < s.config.rounds:  # notes speak of the next round: none after the last
            for line in notes:
                s.echo(line)
        s.close_round(self.round, trials)
        self._start_round(self.round + 1)


class AsyncPolicy(LaunchPolicy):
    """Each candidate advances as soon as its own trial ends (see the module docstring)."""

    def __init__(self, search: Search) -> None:
        super().__init__(search)
        self.by_round: Dict[int, List[TrialRecord]] = {}
        self.rounds_done_by = [0] * search.config.popsize

    def add(self, record: TrialRecord) -> None:
        """A finished trial (this run's, or kept from before a resume) joins its round."""
        self.by_round.setdefault(record.round, []).append(record)
        self.rounds_done_by[record.index] = max(self.rounds_done_by[record.index], record.round + 1)

    def begin(self) -> None:
        for index in range(self.search.config.popsize):
            self._launch_next(index)
        self._announce_complete_rounds()

    def finished(self, record: TrialRecord) -> None:
        s = self.search
        self.add(record)
        s.strategy.tell_particle(record.index, record.loss)
        s.journal.append(ToldEvent(round=record.round, index=record.index))
        self._launch_next(record.index)
        self._announce_complete_rounds(record.round)

    def _launch_next(self, index: int) -> None:
        s = self.search
        round_index = self.rounds_done_by[index]
        if round_index >= s.config.rounds:
            return
        if round_index > 0:  # parents: the best of the previous round finished so far
            s.evaluator.observe(round_index - 1, sorted(self.by_round.get(round_index - 1, []), key=lambda t: t.index))
        s.launch(round_index, index, s.strategy.ask_particle(index))

    def _announce_complete_rounds(self, only: "int | None" = None) -> None:
        """Close the rounds now complete: all of them at the start (a resume may bring some),
        afterwards only the finished trial's own, the one round whose count changed; scanning
        every round per trial made the last trials of a long search the dearest (docs/overhead.md)."""
        s = self.search
        for round_index in (sorted(self.by_round) if only is None else [only]):
            trials = self.by_round[round_index]
            if round_index not in s.rounds_complete and len(trials) >= s.config.popsize:
                s.close_round(round_index, sorted(trials, key=lambda t: t.index))
