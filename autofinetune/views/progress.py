"""Live progress of a search on the terminal (SPEC B6).

On a terminal: one tqdm line that counts finished trials and shows the round, how many trials
are queued, running and failed, the best score so far with its hyperparameters, elapsed time and
ETA; it ticks once a second even while every trial is busy. The search's own lines (one per
finished trial, the round summaries) keep appearing above it: while the bar is shown, the
search's `echo` is wrapped so that each line is written with the bar cleared and redrawn.

Not on a terminal (CI logs, nohup, a pipe): no bar, no cursor codes; one compact line per round
end (the search already prints one line per finished trial, which is not repeated), e.g.
`progress: round 2/10 done | trials 15/50: 14 ok, 1 failed, 0 running, 5 queued | best 0.8123
(lr=0.003 batch_size=48) | elapsed 0:01:12, ETA 0:04:40`.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Sequence

from ..search import SearchObserver
from .summary import format_duration

if TYPE_CHECKING:  # pragma: no cover
    from ..records import TrialRecord
    from ..search import Search, SearchResult


def format_score(score: Optional[float]) -> str:
    return "-" if score is None else f"{score:.6g}"


class ProgressView(SearchObserver):
    """Shows the state of a search: a live tqdm line on a TTY, else one line per round."""

    def __init__(self, stream: Optional[IO[str]] = None, live: Optional[bool] = None,
                 refresh_seconds: float = 1.0) -> None:
        self.stream = stream if stream is not None else sys.stdout
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self.refresh_seconds = refresh_seconds
        self.total = 0
        self.rounds = 0
        self.done = 0
        self.done_before = 0
        self.failed = 0
        self.started = time.monotonic()
        self._search: Optional["Search"] = None
        self._bar: Any = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        self._original_echo: Optional[Callable[[str], None]] = None

    # -- state as text --------------------------------------------------------------------------
    def _best_text(self, search: "Search", limit: int = 4) -> str:
        best = search.records.best
        if best is None:
            return "best -"
        parts = []
        for param in search.space.params[:limit]:
            parts.append(f"{param.name}={_short(param.format(best.params.get(param.name)))}")
        if len(search.space.params) > limit:
            parts.append("...")
        return f"best {format_score(best.score)} ({' '.join(parts)})"

    def _eta(self) -> Optional[float]:
        """Remaining trials at this run's pace (trials kept from before a resume don't count)."""
        if self.done >= self.total:
            return 0.0
        done_here = self.done - self.done_before
        if done_here <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / done_here * (self.total - self.done)

    def status_line(self, search: "Search", round_done: Optional[int] = None) -> str:
        """The plain progress line (also what the live bar's text is made of)."""
        scheduler = search.scheduler
        elapsed = time.monotonic() - self.started
        where = (f"round {round_done + 1}/{self.rounds} done" if round_done is not None
                 else f"round {search.round_index + 1}/{self.rounds}")
        return (f"progress: {where} | trials {self.done}/{self.total}: {self.done - self.failed} ok, {self.failed} failed, "
                f"{scheduler.running} running, {scheduler.queued} queued | {self._best_text(search)} | "
                f"elapsed {format_duration(elapsed)}, ETA {format_duration(self._eta())}")

    # -- hooks ----------------------------------------------------------------------------------
    def on_start(self, search: "Search") -> None:
        self._search = search
        self.rounds = int(search.config.rounds)
        self.total = int(search.config.popsize) * self.rounds
        self.started = getattr(search, "started", None) or time.monotonic()
        finished = list(search.records.trials)  # a resumed search starts with some done
        self.done = self.done_before = len(finished)
        self.failed = sum(1 for t in finished if not t.ok)
        if not self.live:
            return
        try:
            from tqdm import tqdm  # lazily: only a live terminal needs it
        except ImportError:  # no live line without tqdm: fall back to the plain per-round lines
            self.live = False
            return

        size = _sizeless_terminal(self.stream)
        self._bar = tqdm(total=self.total, initial=self.done, unit="trial", file=self.stream, leave=True,
                         dynamic_ncols=not size, ncols=100 if size else None, nrows=24 if size else None, desc=f"round 1/{self.rounds}",
                         bar_format="{desc} {bar:12} {n_fmt}/{total_fmt} trials [{elapsed}<{remaining}]{postfix}")
        self._original_echo = search.echo
        original = search.echo
        bar = self._bar

        def echo_above_bar(line: str) -> None:
            with self._lock:
                with tqdm.external_write_mode(file=self.stream):
                    original(line)
                bar.refresh()

        search.echo = echo_above_bar
        self._refresh()
        self._ticker = threading.Thread(target=self._tick, name="autofinetune-progress", daemon=True)
        self._ticker.start()

    def on_trial_started(self, search: "Search", record: "TrialRecord") -> None:
        self._refresh()

    def on_trial_finished(self, search: "Search", record: "TrialRecord", is_best: bool) -> None:
        with self._lock:
            self.done += 1
            if not record.ok:
                self.failed += 1
            if self._bar is not None:
                self._bar.update(1)
        self._refresh()

    def on_round_finished(self, search: "Search", round_index: int, trials: Sequence["TrialRecord"]) -> None:
        if self._bar is None:
            print(self.status_line(search, round_done=round_index), file=self.stream, flush=True)
        else:
            self._refresh()

    def on_finish(self, search: "Search", result: Optional["SearchResult"]) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        with self._lock:
            if self._bar is not None:
                self._refresh_locked()
                self._bar.close()
                self._bar = None
            if self._original_echo is not None:
                search.echo = self._original_echo
                self._original_echo = None

    # -- the live line --------------------------------------------------------------------------
    def _tick(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self._refresh()

    def _refresh(self) -> None:
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        bar, search = self._bar, self._search
        if bar is None or search is None:
            return
        scheduler = search.scheduler
        bar.set_description_str(f"round {search.round_index + 1}/{self.rounds}", refresh=False)
        bar.set_postfix_str(f"{scheduler.running} running, {scheduler.queued} queued, {self.failed} failed | "
                            f"{self._best_text(search)}", refresh=False)
        bar.refresh()


def _sizeless_terminal(stream: IO[str]) -> bool:
    """A pseudo-terminal that reports 0 columns or rows (e.g. under `script`, some CI runners):
    tqdm would draw nothing there, so it is given a fixed size instead of following it."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return size.columns <= 0 or size.lines <= 0


def _short(text: str, width: int = 10) -> str:
    """Numbers as 4 significant digits; other values cut to `width` characters."""
    try:
        number = float(text)
    except ValueError:
        return text if len(text) <= width else text[: width - 1] + "~"
    if number.is_integer() and "." not in text and "e" not in text.lower():
        return text
    return f"{number:.4g}"
