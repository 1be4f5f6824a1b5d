"""Live progress of a search on the terminal.

On a terminal: one tqdm line that counts finished trials and shows the round, how many trials
are queued, running and failed, the best score so far with its hyperparameters, elapsed time and
ETA; it ticks once a second even while every trial is busy. The search's own lines (one per
finished trial, the round summaries) keep appearing above it: the search enters `writing()`
around each line it prints, which clears the bar and draws it again after, so no output function
is ever replaced.

The view never reads the search: each hook stores the `SearchSnapshot` it is given (under a
lock, in the search's thread), every text is made from the latest stored snapshot, and the
ticker thread only draws that snapshot again with a new elapsed time (docs/architecture.md).

Not on a terminal (CI logs, nohup, a pipe): no bar, no cursor codes; one compact line per round
end (the search already prints one line per finished trial, which is not repeated), e.g.
`progress: round 2/10 done | trials 15/50: 14 ok, 1 failed, 0 running, 5 queued | best 0.8123
(lr=0.003 batch_size=48) | elapsed 0:01:12, ETA 0:04:40`.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, ContextManager, Iterator, Optional, Sequence

from ..search import SearchObserver
from .summary import format_duration

if TYPE_CHECKING:  # pragma: no cover
    from ..records import TrialRecord
    from ..search import SearchResult, SearchSnapshot


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
        self.done_before = 0  # trials a resumed search started with: they do not set the pace
        self._view: Optional["SearchSnapshot"] = None
        self._tqdm: Any = None
        self._bar: Any = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    # -- state as text (from a snapshot only) -------------------------------------------------------
    @staticmethod
    def _total(view: "SearchSnapshot") -> int:
        return int(view.popsize) * int(view.rounds)

    @staticmethod
    def _best_text(view: "SearchSnapshot", limit: int = 4) -> str:
        best = view.best
        if best is None:
            return "best -"
        parts = [f"{p.name}={_short(p.format(best.params.get(p.name)))}" for p in view.space.params[:limit]]
        if len(view.space.params) > limit:
            parts.append("...")
        return f"best {format_score(best.score)} ({' '.join(parts)})"

    def _eta(self, view: "SearchSnapshot", now: float) -> Optional[float]:
        """Remaining trials at this run's pace (trials kept from before a resume don't count)."""
        done, total = len(view.trials), self._total(view)
        if done >= total:
            return 0.0
        done_here = done - self.done_before
        if done_here <= 0:
            return None
        return (now - view.started_at) / done_here * (total - done)

    def status_line(self, view: "SearchSnapshot", round_done: Optional[int] = None) -> str:
        """The plain progress line, made from one snapshot."""
        now = time.monotonic()
        done, failed, total = len(view.trials), view.failed, self._total(view)
        where = (f"round {round_done + 1}/{view.rounds} done" if round_done is not None
                 else f"round {view.round_index + 1}/{view.rounds}")
        pruned = f"{view.pruned} pruned, " if view.pruned else ""
        return (f"progress: {where} | trials {done}/{total}: {done - failed - view.pruned} ok, {pruned}{failed} failed, "
                f"{view.running} running, {view.queued} queued | {self._best_text(view)} | "
                f"elapsed {format_duration(now - view.started_at)}, ETA {format_duration(self._eta(view, now))}")

    # -- hooks (the search's thread) -------------------------------------------------------------------
    def on_start(self, view: "SearchSnapshot") -> None:
        with self._lock:
            self._view = view
            self.done_before = len(view.trials)
        if not self.live:
            return
        try:
            from tqdm import tqdm  # lazily: only a live terminal needs it
        except ImportError:  # no live line without tqdm: fall back to the plain per-round lines
            self.live = False
            return
        size = _sizeless_terminal(self.stream)
        with self._lock:
            self._tqdm = tqdm
            self._bar = tqdm(total=self._total(view), initial=len(view.trials), unit="trial", file=self.stream, leave=True,
                             dynamic_ncols=not size, ncols=100 if size else None, nrows=24 if size else None,
                             desc=f"round {view.round_index + 1}/{view.rounds}",
                             bar_format="{desc} {bar:12} {n_fmt}/{total_fmt} trials [{elapsed}<{remaining}]{postfix}")
            self._render_locked()
        self._ticker = threading.Thread(target=self._tick, name="autofinetune-progress", daemon=True)
        self._ticker.start()

    def on_trial_started(self, view: "SearchSnapshot", record: "TrialRecord") -> None:
        self._store(view)

    def on_trial_finished(self, view: "SearchSnapshot", record: "TrialRecord", is_best: bool) -> None:
        self._store(view)

    def on_round_finished(self, view: "SearchSnapshot", round_index: int, trials: Sequence["TrialRecord"]) -> None:
        self._store(view)
        if not self.live:
            print(self.status_line(view, round_done=round_index), file=self.stream, flush=True)

    def on_finish(self, view: "SearchSnapshot", result: Optional["SearchResult"]) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        with self._lock:
            self._view = view
            if self._bar is not None:
                self._render_locked()
                self._bar.close()
                self._bar = None

    def writing(self) -> Optional[ContextManager[None]]:
        """Around each line the search prints: the bar is cleared, then drawn again below it."""
        if self._bar is None:
            return None
        return self._above_bar()

    @contextlib.contextmanager
    def _above_bar(self) -> Iterator[None]:
        with self._lock:
            if self._bar is None:
                yield
                return
            try:
                with self._tqdm.external_write_mode(file=self.stream):
                    yield
            finally:
                self._render_locked()

    # -- the live line ---------------------------------------------------------------------------------
    def _store(self, view: "SearchSnapshot") -> None:
        with self._lock:
            self._view = view
            self._render_locked()

    def _tick(self) -> None:
        """The ticker: the stored snapshot again, with the time it is now."""
        while not self._stop.wait(self.refresh_seconds):
            with self._lock:
                self._render_locked()

    def _render_locked(self) -> None:
        bar, view = self._bar, self._view
        if bar is None or view is None:
            return
        bar.set_description_str(f"round {view.round_index + 1}/{view.rounds}", refresh=False)
        pruned = f"{view.pruned} pruned, " if view.pruned else ""
        bar.set_postfix_str(f"{view.running} running, {view.queued} queued, {pruned}{view.failed} failed | {self._best_text(view)}",
                            refresh=False)
        done = len(view.trials)
        if done > bar.n:
            bar.update(done - bar.n)  # through update(), so tqdm's rate (and ETA) follows the pace
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
