"""Run argv lists in slots: a work queue of child processes.

The scheduler knows nothing about hyperparameters. It starts each trial as its own process
in its own process group (so the whole tree can be stopped), with CUDA_VISIBLE_DEVICES set to
its slot, its output streamed straight to a log file (never held in memory), and judges the
outcome from the exit status and the trial's own result file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

from .devices import Slot
from .reporting import RESULT_FILE_ENV, TRIAL_TOKEN_ENV

log = logging.getLogger("autofinetune")

OK, FAILED, INVALID, TIMEOUT, INTERRUPTED = "ok", "failed", "invalid", "timeout", "interrupted"


SUPERVISOR = str(Path(__file__).with_name("_supervisor.py"))
#: A trial that exits 130 was interrupted (Ctrl-C's conventional status), not failed.
INTERRUPTED_EXIT_CODES = frozenset({130, -signal.SIGINT})


@dataclass
class TrialSpec:
    """What to run: the scheduler's whole view of a trial.

    The token is the trial's proof of authorship for its result file; the search chooses it
    (and journals it) so that a result written while the tuner was down can still be trusted.
    """

    key: str
    argv: List[str]
    log_path: Path
    result_path: Path
    cwd: Optional[str] = None
    timeout: Optional[float] = None
    env: Dict[str, str] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass(frozen=True)
class ProcessIdentity:
    """A process group as it can be found again after the tuner died: pid + kernel start time."""

    pid: int
    start_ticks: Optional[int]
    #: The Dask worker whose machine runs the group; None: this machine (see backends/dask.py).
    worker: Optional[str] = None

    @classmethod
    def of(cls, pid: int) -> "ProcessIdentity":
        return cls(pid, process_start_ticks(pid))


def process_start_ticks(pid: int) -> Optional[int]:
    """Field 22 of /proc/PID/stat: tells a live process from a later one that reused its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
        return int(text[text.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def stop_stale_group(pid: int, start_ticks: Optional[int], grace: float = 2.0) -> bool:
    """Stop what is left of a trial group from a killed tuner run; True if something was found.

    The group is only signalled when its leader is gone (orphans only) or is provably the same
    process (same start time), never a newcomer that happens to have the same pid.
    """
    leader_ticks = process_start_ticks(pid)
    if leader_ticks is not None and start_ticks is not None and leader_ticks != start_ticks:
        return False  # the pid now belongs to someone else
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            time.sleep(0.05)
            os.killpg(pid, 0)
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return True


@dataclass
class TrialOutcome:
    spec: TrialSpec
    status: str
    score: Optional[float]
    exit_code: Optional[int]
    slot: Slot
    started: float
    finished: float
    message: str = ""

    @property
    def duration(self) -> float:
        return self.finished - self.started


@dataclass
class _Running:
    spec: TrialSpec
    slot: Slot
    process: subprocess.Popen
    started: float
    deadline: Optional[float]
    stop_reason: Optional[str] = None  # TIMEOUT or INTERRUPTED once we asked it to stop
    kill_at: Optional[float] = None
    lifeline: Optional[int] = None  # the tuner's end of the socket pair shared with the supervisor


def trial_status(lifeline: int, supervisor_code: int) -> int:
    """The trial's own exit status, as its supervisor reported it before killing the group.

    The supervisor always ends by SIGKILL; if it never reported (it was killed first, e.g. by
    the tuner's grace-period SIGKILL), its own status is all there is.
    """
    os.set_blocking(lifeline, False)
    try:
        report = os.read(lifeline, 64).decode(errors="replace").split()
    except OSError:
        return supervisor_code
    if len(report) == 2 and report[1].lstrip("-").isdigit():
        if report[0] == "exit":
            return int(report[1])
        if report[0] == "signal":
            return -int(report[1])
    return supervisor_code


NO_REPORT = "no result reported (report_final_result was never called)"
#: A result file larger than this is not a report (they are a few dozen bytes); reading no
#: more keeps a lying trial from filling the tuner's memory.
RESULT_LIMIT = 1 << 20


def read_result(result_path: Path, token: Optional[str]) -> "tuple[Optional[Any], str]":
    """The reported score, or None with the reason; a foreign token counts as no report."""
    try:
        with open(result_path, "rb") as handle:
            data = handle.read(RESULT_LIMIT + 1)
    except FileNotFoundError:
        return None, NO_REPORT
    except OSError as error:
        return None, f"unreadable result file {result_path}: {error}"
    if len(data) > RESULT_LIMIT:
        return None, f"result file {result_path} is larger than {RESULT_LIMIT} bytes"
    return parse_result(data.decode("utf-8", errors="replace"), result_path, token)


def parse_result(text: str, result_path: Any, token: Optional[str]) -> "tuple[Optional[Any], str]":
    """`read_result` for a result file's text read elsewhere (a Dask worker returns it)."""
    try:
        record = json.loads(text)
    except ValueError as error:
        return None, f"unreadable result file {result_path}: {error}"
    if not isinstance(record, dict) or "score" not in record:
        return None, f"result file {result_path} has no 'score'"
    if token is not None and record.get("token") != token:
        return None, f"result file {result_path} was not written by this trial"
    return record["score"], ""


def judge_score(raw: Any) -> "tuple[Optional[float], str]":
    """A valid score is a finite number at most 1 (SPEC A3); anything else is invalid."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None, f"reported score {raw!r} is not a number"
    value = float(raw)
    if math.isnan(value) or math.isinf(value):
        return None, f"reported score {value!r} is not finite"
    if value > 1.0:
        return None, f"reported score {value!r} is above 1 (scores must lie in (-inf, 1])"
    return value, ""


def judge_trial(spec: TrialSpec, exit_code: int, stop_reason: Optional[str],
                result: Callable[[], "tuple[Optional[Any], str]"]) -> "tuple[str, Optional[float], str]":
    """A finished trial's status, score and message from how it ended and what it reported.

    `stop_reason` is TIMEOUT or INTERRUPTED when the scheduler stopped it; `result` reads the
    report (see `read_result`) and is only called for a trial that exited 0 on its own.
    """
    if stop_reason == TIMEOUT:
        return TIMEOUT, None, f"stopped after the {spec.timeout:g} s timeout"
    if stop_reason == INTERRUPTED:
        return INTERRUPTED, None, "stopped by the tuner's shutdown"
    if exit_code in INTERRUPTED_EXIT_CODES:
        return INTERRUPTED, None, f"the trial exited with status {exit_code} (interrupted)"
    if exit_code != 0:
        how = f"killed by signal {signal.Signals(-exit_code).name}" if exit_code < 0 and -exit_code in signal.valid_signals() else f"exit code {exit_code}"
        return FAILED, None, how
    raw, why = result()
    if why:
        return FAILED, None, why
    score, why = judge_score(raw)
    if why:
        return INVALID, None, why
    return OK, score, ""


class LocalScheduler:
    """Child processes on this machine, one per free slot, started the moment a slot frees."""

    def __init__(self, slots: Sequence[Slot], kill_grace: float = 5.0,
                 on_start: Optional[Callable[[TrialSpec, Slot, ProcessIdentity], None]] = None) -> None:
        if not slots:
            raise ValueError("at least one slot is needed")
        self.slots = list(slots)
        self.kill_grace = kill_grace
        self._free: Deque[Slot] = deque(self.slots)
        self._queue: Deque[TrialSpec] = deque()
        self._running: Dict[int, _Running] = {}
        self._exits: "queue.Queue[tuple[int, int]]" = queue.Queue()
        self._launching = True
        self._unstarted: List[TrialOutcome] = []  # trials whose process could not even start
        self._on_start = on_start

    # -- public -----------------------------------------------------------------------------
    def submit(self, spec: TrialSpec) -> None:
        self._queue.append(spec)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    def wait_any(self, timeout: Optional[float] = None) -> List[TrialOutcome]:
        """Start what fits, then block until at least one trial ends (or `timeout` passes)."""
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            self._launch_ready()
            outcomes, self._unstarted = self._unstarted + self._drain_exits(block=False), []
            if outcomes:
                return outcomes
            if not self._running:
                return []
            now = time.monotonic()
            self._enforce_deadlines(now)
            wake = [t for t in self._wakeups() if t is not None]
            if give_up is not None:
                wake.append(give_up)
            wait = max(0.0, min(wake) - now) if wake else None
            outcomes = self._drain_exits(block=True, timeout=wait)
            if outcomes:
                return outcomes
            if give_up is not None and time.monotonic() >= give_up:
                return []

    def stop_launching(self) -> List[TrialSpec]:
        """Stop starting new trials; return the queued specs that will now never run."""
        self._launching = False
        dropped = list(self._queue)
        self._queue.clear()
        return dropped

    def shutdown(self, grace: Optional[float] = None) -> List[TrialOutcome]:
        """Stop every running trial's whole process group (TERM, then KILL) and reap it."""
        self.stop_launching()
        for running in self._running.values():
            self._terminate(running, INTERRUPTED, grace)
        outcomes: List[TrialOutcome] = []
        while self._running:
            now = time.monotonic()
            self._enforce_deadlines(now)
            wake = [t for t in self._wakeups() if t is not None]
            wait = max(0.0, min(wake) - now) if wake else 0.1
            outcomes.extend(self._drain_exits(block=True, timeout=min(wait, 0.5)))
        return outcomes

    # -- internals --------------------------------------------------------------------------
    def _launch_ready(self) -> None:
        while self._launching and self._queue and self._free:
            spec = self._queue.popleft()
            slot = self._free.popleft()
            self._launch(spec, slot)

    def _launch(self, spec: TrialSpec, slot: Slot) -> None:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            spec.result_path.unlink()
        except FileNotFoundError:
            pass
        env = dict(os.environ)
        env.update(spec.env)
        env["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible_devices
        env[RESULT_FILE_ENV] = str(spec.result_path)
        env[TRIAL_TOKEN_ENV] = spec.token
        env.setdefault("PYTHONUNBUFFERED", "1")  # logs a user can tail while the trial runs
        started = time.monotonic()
        # The supervisor holds one end of a socket pair; the tuner's end is close-on-exec, so
        # only this tuner keeps it open and the kernel closes it however the tuner dies. The
        # supervisor writes the trial's exit status back on it (see _supervisor.py).
        lifeline, theirs = socket.socketpair()
        lifeline_write, lifeline_read = lifeline.detach(), theirs.detach()
        try:
            with open(spec.log_path, "wb") as log_file:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-S", SUPERVISOR, str(lifeline_read), "--", *spec.argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=env,
                    start_new_session=True,  # own process group: kill the tree, not the tuner
                    pass_fds=(lifeline_read,),
                )
        except OSError as error:
            os.close(lifeline_write)
            try:
                with open(spec.log_path, "ab") as log_file:
                    log_file.write(f"autofinetune: could not start {spec.argv[0]}: {error}\n".encode())
            except OSError:
                pass
            self._free.append(slot)
            self._unstarted.append(TrialOutcome(spec, FAILED, None, None, slot, started, time.monotonic(), f"could not start: {error}"))
            return
        finally:
            os.close(lifeline_read)
        deadline = started + spec.timeout if spec.timeout else None
        self._running[process.pid] = _Running(spec, slot, process, started, deadline, lifeline=lifeline_write)
        if self._on_start is not None:
            self._on_start(spec, slot, ProcessIdentity.of(process.pid))
        threading.Thread(target=self._reap, args=(process, lifeline_write), daemon=True, name=f"reap-{spec.key}").start()

    def _reap(self, process: subprocess.Popen, lifeline: int) -> None:
        code = process.wait()
        self._exits.put((process.pid, trial_status(lifeline, code)))

    def _drain_exits(self, block: bool, timeout: Optional[float] = None) -> List[TrialOutcome]:
        outcomes: List[TrialOutcome] = []
        try:
            item = self._exits.get(block=block, timeout=timeout) if block else self._exits.get_nowait()
        except queue.Empty:
            return outcomes
        while True:
            outcome = self._finish(*item)
            if outcome is not None:
                outcomes.append(outcome)
            try:
                item = self._exits.get_nowait()
            except queue.Empty:
                return outcomes

    def _finish(self, pid: int, exit_code: int) -> Optional[TrialOutcome]:
        running = self._running.pop(pid, None)
        if running is None:
            return None
        finished = time.monotonic()
        self._kill_group(running.process.pid, signal.SIGKILL)  # leftover grandchildren
        if running.lifeline is not None:
            os.close(running.lifeline)
        self._free.append(running.slot)
        status, score, message = self._judge(running, exit_code)
        return TrialOutcome(running.spec, status, score, exit_code, running.slot, running.started, finished, message)

    def _judge(self, running: _Running, exit_code: int) -> "tuple[str, Optional[float], str]":
        spec = running.spec
        return judge_trial(spec, exit_code, running.stop_reason, lambda: read_result(spec.result_path, spec.token))

    def close(self) -> None:
        """Release what the scheduler holds once the search is over (nothing, for child processes)."""

    def kill_now(self) -> None:
        """The second Ctrl-C: SIGKILL every running group at once, no grace."""
        self.stop_launching()
        for running in self._running.values():
            running.stop_reason = running.stop_reason or INTERRUPTED
            self._kill_group(running.process.pid, signal.SIGKILL)

    def _terminate(self, running: _Running, reason: str, grace: Optional[float] = None) -> None:
        if running.stop_reason is None:
            running.stop_reason = reason
            running.kill_at = time.monotonic() + (self.kill_grace if grace is None else grace)
            self._kill_group(running.process.pid, signal.SIGTERM)

    def _enforce_deadlines(self, now: float) -> None:
        for running in list(self._running.values()):
            if running.deadline is not None and now >= running.deadline and running.stop_reason is None:
                self._terminate(running, TIMEOUT)
            if running.kill_at is not None and now >= running.kill_at:
                self._kill_group(running.process.pid, signal.SIGKILL)
                running.kill_at = None

    def _wakeups(self) -> List[Optional[float]]:
        times: List[Optional[float]] = []
        for running in self._running.values():
            times.append(running.kill_at if running.stop_reason else running.deadline)
        return times

    @staticmethod
    def _kill_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
