"""Trials as child processes of the tuner (`--backend=local`): a work queue over this machine's slots.

The backend knows nothing about hyperparameters. A trial starts the moment a slot frees, with
CUDA_VISIBLE_DEVICES set to its slot; its life (start, timeout, stop, judgement) is
runner.py's. All trials are children of one launcher (runner.Launcher, started with the backend
so that the header can name its fence; see docs/dask.md "Process fence"), which reports each
exit on its socket the moment it reaps it; nothing polls: the search's thread blocks on that
socket until a trial ends or the next deadline (a timeout, the end of a kill grace) is due.
"""
from __future__ import annotations

import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Sequence, Tuple

from ..devices import Slot
from ..runner import (FAILED, INTERRUPTED, Launcher, ProcessIdentity, TrialOutcome, TrialProcess, TrialSpec, build_env,
                      judge_trial, prepare_files, read_result, stop_stale_group)
from .base import OnStart, wait_for_outcomes


@dataclass
class _Running:
    spec: TrialSpec
    slot: Slot
    trial: TrialProcess


class LocalBackend:
    """Child processes on this machine, one per free slot, started the moment a slot frees."""

    def __init__(self, slots: Sequence[Slot], kill_grace: float = 5.0, on_start: Optional[OnStart] = None) -> None:
        if not slots:
            raise ValueError("at least one slot is needed")
        self.slots = list(slots)
        self.kill_grace = kill_grace
        # The launcher is started now and waited for only when the search's header names its
        # fence: its start-up runs alongside the search's (docs/overhead.md).
        self._launcher: Optional[Launcher] = None
        self._launcher_error = ""
        try:
            self._launcher = Launcher()
        except OSError as error:
            self._launcher_error = str(error)
        self._description: Optional[str] = None
        self._free: Deque[Slot] = deque(self.slots)
        self._queue: Deque[TrialSpec] = deque()
        self._running: Dict[int, _Running] = {}  # by the launcher's trial id
        self._launching = True
        self._unstarted: List[TrialOutcome] = []  # trials whose process could not even start
        self._on_start = on_start

    # -- the Backend interface ------------------------------------------------------------------
    def submit(self, spec: TrialSpec) -> None:
        self._queue.append(spec)

    def counts(self) -> Tuple[int, int]:
        return len(self._running), len(self._queue)

    def wait_any(self, timeout: Optional[float] = None) -> List[TrialOutcome]:
        """Start what fits, then block until at least one trial ends (or `timeout` passes)."""
        return wait_for_outcomes(timeout, self._ready, lambda: not self._running,
                                 lambda left: self._drain_exits(self._enforce_deadlines(left)))

    def shutdown(self, grace: Optional[float] = None) -> List[TrialOutcome]:
        """Stop every running trial's whole process group (TERM, then KILL) and reap it."""
        self._stop_launching()
        now = time.monotonic()
        for running in self._running.values():
            running.trial.request_stop(INTERRUPTED, self.kill_grace if grace is None else grace, now)
        outcomes: List[TrialOutcome] = []
        while self._running:
            outcomes.extend(self._drain_exits(self._enforce_deadlines(0.5)))
        return outcomes

    def kill_now(self) -> None:
        self._stop_launching()
        for running in self._running.values():
            running.trial.kill_now()

    def close(self) -> None:
        """End the launcher: it kills whatever a finished trial left behind and exits."""
        launcher, self._launcher = self._launcher, None
        if launcher is not None:
            launcher.close()

    def stop_leftover(self, identity: ProcessIdentity) -> bool:
        return stop_stale_group(identity)

    # -- internals --------------------------------------------------------------------------------
    @property
    def description(self) -> str:
        if self._description is None:
            self._description = f"{len(self.slots)} slot(s) [{', '.join(s.label for s in self.slots)}]; fence: {self._fence()}"
        return self._description

    def _fence(self) -> str:
        """What stops a trial's descendants here, as the launcher says."""
        if self._launcher is not None:
            try:
                return self._launcher.wait_ready()
            except OSError as error:  # it closed itself
                self._launcher = None
                self._launcher_error = str(error)
        return f"none (the trial launcher could not start: {self._launcher_error})"

    def _stop_launching(self) -> None:
        self._launching = False
        self._queue.clear()  # never started: the journal still has them queued, for --resume

    def _ready(self) -> List[TrialOutcome]:
        """Start what fits, then what has ended (or could not start)."""
        self._fill()
        return self._drain_exits(0.0)

    def _fill(self) -> None:
        """Start queued trials in the free slots."""
        while self._launching and self._queue and self._free:
            self._launch(self._queue.popleft(), self._free.popleft())

    def _launch(self, spec: TrialSpec, slot: Slot) -> None:
        # An OSError here is the output dir's (search.py says so), not the trial's. The log is
        # the file made here, still open: nothing a running trial plants at its name in between
        # can be handed to this one (docs/security.md).
        log_fd = prepare_files(spec)
        try:
            env = build_env(spec, slot.cuda_visible_devices)
            if self._launcher is None or self._launcher.lost:
                self._launcher = Launcher()
            # Not waiting for the launcher's answer: the search goes on with its bookkeeping
            # while the launcher spawns (docs/overhead.md); the answer comes with the exits.
            trial = TrialProcess.begin(self._launcher, spec.argv, env, spec.cwd, log_fd, spec.timeout, self.kill_grace,
                                       spec.stop_path, spec.prune_grace)
        except OSError as error:
            self._not_started(spec, slot, str(error))
            return
        finally:
            os.close(log_fd)
        self._running[trial.ident] = _Running(spec, slot, trial)

    def _not_started(self, spec: TrialSpec, slot: Slot, why: str) -> None:
        now = time.monotonic()
        self._free.append(slot)
        self._unstarted.append(TrialOutcome(spec, FAILED, None, None, slot, now, now, f"could not start: {why}"))

    def _answers(self, launcher: Launcher) -> None:
        """The launcher's answers to start requests: a pid to journal, or why it could not start."""
        for ident, (pid, cookie, cgroup) in launcher.take_started().items():
            running = self._running.get(ident)
            if running is None:
                continue
            running.trial.started_as(pid, cookie, cgroup)
            if self._on_start is not None:
                self._on_start(running.spec, running.slot, ProcessIdentity.of(pid, cookie, cgroup))
        for ident, why in launcher.take_failed().items():
            running = self._running.pop(ident, None)
            if running is not None:
                self._not_started(running.spec, running.slot, why)

    def _enforce_deadlines(self, limit: Optional[float]) -> Optional[float]:
        """Act on every passed deadline; the seconds until the next one, at most `limit` (None: no deadline, no limit)."""
        now = time.monotonic()
        waits = [] if limit is None else [limit]
        for running in self._running.values():
            running.trial.enforce(now)
            due = running.trial.wakeup()
            if due is not None:
                waits.append(max(0.0, due - now))
        return min(waits) if waits else None

    def _drain_exits(self, wait: Optional[float]) -> List[TrialOutcome]:
        """The outcomes of the trials that ended, waiting up to `wait` seconds (None: forever) for one."""
        launcher = self._launcher
        if launcher is None:
            outcomes, self._unstarted = self._unstarted, []
            return outcomes
        exits = launcher.exits(0.0 if self._unstarted else wait)
        self._answers(launcher)  # before the exits: a trial's start is journaled before its end
        if launcher.lost:  # nobody will report these trials' ends: they died with their launcher
            exits += [(ident, -signal.SIGKILL) for ident in self._running if ident not in {i for i, _ in exits}]
            self._launcher = None
            launcher.close()
        ended = [end for end in (self._end(ident, code) for ident, code in exits) if end is not None]
        unstarted, self._unstarted = self._unstarted, []
        if ended or unstarted:
            # A freed slot takes the next queued trial now, before the ended trial is judged
            # (its result file read) and before the search does its bookkeeping (journal,
            # views): the slot is not idle meanwhile (docs/overhead.md).
            self._fill()
        return unstarted + [self._judge(*end) for end in ended]

    def _end(self, ident: int, status: int) -> Optional[Tuple[_Running, Optional[int], float]]:
        """A trial's process ended: its slot is free again; (the trial, its exit code, when)."""
        running = self._running.pop(ident, None)
        if running is None:
            return None
        finished = time.monotonic()
        exit_code = running.trial.finish(status)
        self._free.append(running.slot)
        return running, exit_code, finished

    def _judge(self, running: _Running, exit_code: Optional[int], finished: float) -> TrialOutcome:
        spec = running.spec
        status, score, message = judge_trial(spec, exit_code, running.trial.stop_reason,
                                             lambda: read_result(spec.result_path, spec.token))
        return TrialOutcome(spec, status, score, exit_code, running.slot, running.trial.started, finished, message)
