"""The seam between the search and where its trials run: what every backend offers.

The search drives a `Backend` without knowing which one it is (backends/local.py on this
machine, backends/dask.py on a Dask cluster, see docs/dask.md); each runs a trial's life
through runner.py, so a trial is started, stopped and judged the same way everywhere.
"""
from __future__ import annotations

import queue
import time
from typing import Callable, List, Optional, Protocol, Tuple, TypeVar

from ..devices import Slot
from ..runner import ProcessIdentity, TrialOutcome, TrialSpec

T = TypeVar("T")

#: Called from the search's thread when a trial's process started: where it runs, and how to find it again.
OnStart = Callable[[TrialSpec, Slot, ProcessIdentity], None]


class Backend(Protocol):
    """Runs submitted trials as slots free up; every method is called from the search's thread."""

    #: One line for the search's header, e.g. "2 slot(s) [gpu:0, gpu:1]".
    description: str

    def submit(self, spec: TrialSpec) -> None:
        """Queue a trial; it starts as soon as a slot (or a cluster resource) frees."""

    def wait_any(self, timeout: Optional[float] = None) -> List[TrialOutcome]:
        """Block until at least one trial ends (or `timeout` passes); [] when nothing is running."""

    def shutdown(self, grace: Optional[float] = None) -> List[TrialOutcome]:
        """Start nothing more; stop every running trial (TERM, KILL after the grace) and return how they ended."""

    def kill_now(self) -> None:
        """The second Ctrl-C: start nothing more and KILL every running trial at once."""

    def close(self) -> None:
        """Release what the backend holds once the search is over."""

    def counts(self) -> Tuple[int, int]:
        """(running, queued) trials, for the progress display."""

    def stop_leftover(self, identity: ProcessIdentity) -> bool:
        """`--resume`: stop a trial group a killed tuner left running; True if one was found."""


def take_all(events: "queue.Queue[T]", wait: Optional[float] = 0.0) -> List[T]:
    """Everything in `events`, after waiting up to `wait` seconds (None: as long as it takes) for the first.

    Both backends hear of their trials through such a queue, filled by other threads (reapers,
    Dask's client), and handle a burst of ends in one go.
    """
    items: List[T] = []
    try:
        items.append(events.get_nowait() if wait is not None and wait <= 0 else events.get(timeout=wait))
        while True:
            items.append(events.get_nowait())
    except queue.Empty:
        return items


def wait_for_outcomes(timeout: Optional[float], ready: Callable[[], List[TrialOutcome]], idle: Callable[[], bool],
                      block: Callable[[Optional[float]], List[TrialOutcome]]) -> List[TrialOutcome]:
    """`Backend.wait_any`'s loop: what is `ready`, else `block` (given the seconds left, None: no limit) until some ends.

    Returns [] at once when the backend is `idle` (nothing runs or waits), or when `timeout` passed.
    """
    give_up = None if timeout is None else time.monotonic() + timeout
    while True:
        outcomes = ready()
        if outcomes or idle():
            return outcomes
        outcomes = block(None if give_up is None else max(0.0, give_up - time.monotonic()))
        if outcomes:
            return outcomes
        if give_up is not None and time.monotonic() >= give_up:
            return []
