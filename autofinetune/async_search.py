"""The asynchronous mode (SPEC B2): a freed slot starts the next candidate at once.

In the round-based search a round's slowest trial holds every slot that finished early. Here
each candidate of the population moves on its own: when candidate i's trial of round r ends,
the strategy is told that one result (`tell_particle`) and candidate i's trial of round r + 1
starts in the slot it just freed. Rounds stay as the output tree's unit (roundR/model-I is
candidate I's R-th trial) and a round's line is printed once all its trials are done, but the
rounds overlap in time. With the population-based evaluator, a trial of round r resumes from
the best half of round r - 1's trials finished so far.

What it costs: the proposals depend on the order in which trials finish, so a seed no longer
makes a search repeatable to the bit, and only strategies whose candidates move independently
(`supports_async`: PSHE2) can run this way; CMA-ES needs whole generations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from .errors import ConfigError
from .records import TrialRecord
from .search import JournalState, Search, record_key
from .strategies import STRATEGIES


def check_async(strategy: str) -> None:
    """Refuse --async with a strategy that needs whole generations, before anything runs."""
    if strategy in STRATEGIES and not getattr(STRATEGIES[strategy], "supports_async", False):
        raise ConfigError(f"--async: --tuning_strategy={strategy} needs whole rounds (generations) of results; "
                          f"use --tuning_strategy=pshe2 with --async, or drop --async")


class AsyncSearch(Search):
    """A Search whose candidates each advance as soon as their own trial ends."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_async(self.config.strategy)
        self._announced: set = set()

    # -- the loop ---------------------------------------------------------------------------
    def _run_rounds(self, start_round: int, done: Dict[int, TrialRecord]) -> None:
        rounds, pending = self.config.rounds, {}
        for index in range(self.config.popsize):
            next_round = self._rounds_done_by(index)
            if next_round < rounds:
                self._launch_next(next_round, index, pending)
        self._announce_complete_rounds()
        for record in self._finished_trials(pending):
            self._tell(record)
            if record.round + 1 < rounds:
                self._launch_next(record.round + 1, record.index, pending)
            self._announce_complete_rounds()

    def _launch_next(self, round_index: int, index: int, pending: Dict[str, TrialRecord]) -> None:
        self.round_index = max(self.round_index, round_index)
        if round_index > 0:  # parents: the best of the previous round finished so far
            self.evaluator.observe(round_index - 1, self._finished_in(round_index - 1))
        round_dir = self.output_dir / f"round{round_index}"
        round_dir.mkdir(exist_ok=True)
        pending[record_key(round_index, index)] = self._launch(round_index, index, self.strategy.ask_particle(index), round_dir)

    def _tell(self, record: TrialRecord) -> None:
        self.strategy.tell_particle(record.index, record.point, record.loss)
        self.journal.append("told", round=record.round, index=record.index, strategy=self.strategy.state_dict())

    def _finished_in(self, round_index: int) -> List[TrialRecord]:
        return sorted((t for t in self.records.trials if t.round == round_index), key=lambda t: t.index)

    def _rounds_done_by(self, index: int) -> int:
        return sum(1 for t in self.records.trials if t.index == index)

    def _announce_complete_rounds(self) -> None:
        for round_index in range(self.config.rounds):
            trials = self._finished_in(round_index)
            if round_index in self._announced or len(trials) < self.config.popsize:
                continue
            self._announced.add(round_index)
            self._notify("on_round_finished", round_index, trials)
            scores = [t.score for t in trials if t.ok]
            if scores:
                self.echo(f"The local best eval value in the {round_index}-th round is {max(scores)}.")
            else:
                self.echo(f"The local best eval value in the {round_index}-th round is unknown: every trial of the round failed.")

    # -- resume -----------------------------------------------------------------------------
    def _restore(self) -> Tuple[int, Dict[int, TrialRecord]]:
        """Continue from the last strategy state told, telling it any result it missed.

        Each finished trial is journaled before the strategy hears of it, so a crash between
        the two leaves finished trials the saved state lacks: they are told again here, in
        their order, before any candidate moves on. Trials launched but never finished run
        again from the candidate's restored position.
        """
        state = self.replayed
        assert state is not None
        self._stop_leftovers(state)
        told = [event for event in self._events("told")]
        if told:
            self.strategy.load_state_dict(told[-1]["strategy"])
        told_keys = {(e["round"], e["index"]) for e in told}
        finished = [r for (key, r) in sorted(state.finished.items()) if r.status != "interrupted"]
        for (round_index, index), queued in sorted(state.queued.items()):
            if (round_index, index) not in state.finished:
                recovered = self._recover_reported(queued)
                if recovered is not None:
                    self.journal.append("finish", trial=recovered.to_json())
                    finished.append(recovered)
        for record in sorted(finished, key=lambda t: (t.round, t.index)):
            self.records.add(record)
            if (record.round, record.index) not in told_keys:
                self._tell(record)
        self._announced = {r for r in range(self.config.rounds) if len(self._finished_in(r)) >= self.config.popsize}
        self.echo(f"Resuming the asynchronous search: {len(self.records.trials)} finished trial(s) kept.")
        if self.records.trials:
            self.records.write_views()
            if self.records.best is not None:
                self.records.update_best_model()
        return 0, {}

    def _events(self, kind: str):
        from .records import Journal

        return (e for e in Journal.read(Path(self.output_dir) / "journal.jsonl") if e.get("event") == kind)


__all__ = ["AsyncSearch", "check_async", "JournalState"]
