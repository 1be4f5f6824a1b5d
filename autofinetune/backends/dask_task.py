"""The worker side of the Dask backend: one trial, run under its own launcher on a Dask worker.

`run_trial(payload)` is the Dask task. It runs on the worker that holds the trial's resource
(`GPU=1`, or `trial=1` for CPU trials), picks the trial's device and lives the trial's life
through runner.py, exactly as the local backend does on the tuner's machine: the trial a child
of `_launcher.py` (one per task) with a lifeline held by this worker process, output
streamed to the trial's log, the timeout and kill grace enforced by `TrialProcess`. It returns
the exit status, the timings and the text of the result file (the tuner judges it with the
trial's token). See docs/dask.md.

Stopping, and the lifeline on a worker:
* the tuner's shutdown sets the search's Dask `Event` "stop" (grace in a `Variable`), kill_now
  also sets "kill"; a watcher thread per trial long-polls them;
* if the task is cancelled (the tuner died, its client went away) the trial is stopped too;
* if the worker process dies, the kernel closes its end of the lifeline and the launcher kills
  the trial and every descendant it attributes to it: the same guarantee as on the tuner's machine.

This module imports the standard library and autofinetune's stdlib-only modules; `distributed`
is imported inside functions, only on a worker (it is not needed to import the module).
"""
from __future__ import annotations

import dataclasses
import errno
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .. import __version__
from ..runner import (INTERRUPTED, Launcher, ProcessIdentity, TrialProcess, TrialSpec, build_env, open_regular,
                      read_result_text, stop_stale_group)
from .messages import GPU, TRIAL, ReportState, TrialPayload, TrialReport, TrialStarted

__all__ = ["GPU", "TRIAL", "run_trial", "stop_leftover", "gpu_choices", "DeviceUse"]

#: How long a worker waits to see the log file the tuner created before it concludes that the
#: output directory is not on a filesystem it shares with the tuner (NFS attribute caches).
SHARED_FS_WAIT = 10.0
#: Seconds between the watcher's long polls of the stop events (each returns at once when set).
STOP_POLL = 5.0
#: Seconds between the trial loop's looks at the stop flags and the task's cancellation.
LOOP_POLL = 0.05


def run_trial(wire: Dict[str, Any]) -> Dict[str, Any]:
    """The Dask task: run one trial on this worker; never raises for anything the trial does.

    Takes a `TrialPayload` and returns a `TrialReport`, both as dicts (see messages.py).
    """
    payload = TrialPayload.from_dict(wire)
    here = _Here.current()
    report = _attempt(payload, here)
    report.worker, report.host, report.version = here.address, socket.gethostname(), __version__
    return report.to_dict()


def _attempt(payload: TrialPayload, here: "_Here") -> TrialReport:
    log_fd, why, state = _open_shared(payload.log_path)
    if log_fd is None:
        return _report(state, message=why)
    try:
        missing = _missing_paths(payload)
        if missing:
            return _report(ReportState.NO_SHARED_FS, message=missing)
        watch = _StopWatch(here, payload)
        if watch.already_stopping():
            return _report(ReportState.NOT_STARTED)
        position, gpu = here.take_device(payload)
        try:
            return _run(payload, here, watch, log_fd, position, gpu)
        finally:
            here.release_device(payload, position)
            watch.done()
    finally:
        os.close(log_fd)


def _report(state: ReportState, **facts: Any) -> TrialReport:
    return TrialReport(state, worker="", host="", version="", **facts)  # run_trial fills in where


def _run(payload: TrialPayload, here: "_Here", watch: "_StopWatch", log_fd: int, position: int,
         gpu: Optional[str]) -> TrialReport:
    argv = list(payload.argv)
    if argv and argv[0] == payload.python:
        argv[0] = sys.executable  # the tuner's interpreter path may not exist here; this worker's runs the script
    spec = TrialSpec(payload.key, argv, log_path=Path(payload.log_path), result_path=Path(payload.result_path),
                     cwd=payload.cwd, timeout=payload.timeout, env=dict(payload.env), token=payload.token,
                     intermediate_path=Path(payload.intermediate_path) if payload.intermediate_path else None,
                     stop_path=Path(payload.stop_path) if payload.stop_path else None, prune_grace=payload.prune_grace)
    if os.fstat(log_fd).st_size:  # Dask re-runs a task whose worker was lost: keep the first run's output
        os.write(log_fd, f"\nautofinetune: the worker running this trial was lost; running it again on {here.address}\n".encode())
    started = time.monotonic()
    try:
        # One launcher per task, started by the thread that runs the task: the launcher's
        # PR_SET_PDEATHSIG follows the thread that started it, and a pool thread may end
        # between tasks (docs/dask.md, "Process fence").
        launcher = Launcher()
        launcher.wait_ready()  # a launcher that cannot start is this trial's start failure
    except OSError as error:
        return _report(ReportState.START_FAILED, message=f"could not start on {here.address}: {error}",
                       duration=time.monotonic() - started)
    try:
        return _supervise(payload, here, watch, log_fd, gpu, spec, argv, position, launcher)
    finally:
        launcher.close()  # end-of-file: it kills whatever the trial left behind


def _supervise(payload: TrialPayload, here: "_Here", watch: "_StopWatch", log_fd: int, gpu: Optional[str], spec: TrialSpec,
               argv: List[str], position: int, launcher: Launcher) -> TrialReport:
    started = time.monotonic()
    try:
        trial = TrialProcess.start(launcher, argv, build_env(spec, gpu if gpu is not None else ""), payload.cwd, log_fd,
                                   payload.timeout, payload.kill_grace, spec.stop_path, spec.prune_grace)
    except OSError as error:
        return _report(ReportState.START_FAILED, message=f"could not start on {here.address}: {error}",
                       duration=time.monotonic() - started)
    announced = TrialStarted(payload.key, dataclasses.replace(ProcessIdentity.of(trial.pid, trial.cookie, trial.cgroup), worker=here.address), position, gpu)
    here.announce(payload, announced)
    watch.start()
    code: Optional[int] = None
    try:
        code = _wait(trial, here, watch)
    finally:
        if code is None:  # this thread failed: never leave the trial behind
            trial.kill_now()
            code = _exit_status(trial, None)
        exit_code = trial.finish(code)
    duration = time.monotonic() - trial.started
    result, result_error = read_result_text(payload.result_path)
    return _report(ReportState.EXITED, exit_code=exit_code, stop_reason=trial.stop_reason, duration=duration,
                   result=result, result_error=result_error, started=announced)


def _exit_status(trial: TrialProcess, wait: Optional[float]) -> Optional[int]:
    """The trial's status once the launcher reports it (or -SIGKILL if the launcher is gone)."""
    for ident, code in trial.launcher.exits(wait):
        if ident == trial.ident:
            return code
    return -9 if trial.launcher.lost else None


def _wait(trial: TrialProcess, here: "_Here", watch: "_StopWatch") -> int:
    """Wait for the trial's end, turning the tuner's stop signals into the trial's stop."""
    while True:
        code = _exit_status(trial, LOOP_POLL)
        if code is not None:
            return code
        now = time.monotonic()
        if watch.grace is not None:
            trial.request_stop(INTERRUPTED, watch.grace, now)  # a shutdown during a timeout's grace shortens it
        elif here.cancelled():
            trial.request_stop(INTERRUPTED, trial.kill_grace, now)  # nobody waits for this trial any more: the tuner is gone
        if watch.kill:
            trial.kill_now()
        trial.enforce(now)


def _missing_paths(payload: TrialPayload) -> str:
    """What the trial needs from the shared filesystem besides its log: its cwd and its script."""
    cwd = payload.cwd
    if cwd and not os.path.isdir(cwd):
        return f"the trial's working directory {cwd} does not exist on this worker"
    argv = payload.argv
    script = argv[1] if len(argv) > 1 and argv[0] == payload.python else argv[0] if argv else ""
    if os.path.isabs(script) and not os.path.exists(script):
        return f"the training script {script} does not exist on this worker"
    return ""


def _open_shared(path: str) -> "tuple[Optional[int], str, ReportState]":
    """Open the log the tuner created; not finding it means no shared filesystem here.

    Only a regular file is opened, never through a symlink and never waiting on a FIFO: another
    trial may have put one at this path since the tuner created it (docs/security.md). That
    fails this trial (START_FAILED), not the search.
    """
    give_up = time.monotonic() + SHARED_FS_WAIT
    delay = 0.05
    while True:
        try:
            return open_regular(path, os.O_WRONLY | os.O_APPEND), "", ReportState.EXITED
        except FileNotFoundError:
            if time.monotonic() >= give_up:
                return None, (f"{path} (created by the tuner) is not visible on this worker after {SHARED_FS_WAIT:g} s: the Dask backend "
                              f"needs --output_dir on a filesystem shared by the tuner and every worker, at the same path"), ReportState.NO_SHARED_FS
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return None, (f"cannot write {path} on this worker ({error.strerror or error}): the Dask backend needs "
                              f"--output_dir writable by every worker"), ReportState.NO_SHARED_FS
            return None, f"refused the trial's log {path} on this worker: {error.strerror or error}", ReportState.START_FAILED
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def gpu_choices(visible: Optional[str], capacity: int, discovered: List[str]) -> List[str]:
    """The GPU ids trials on this worker may use, one entry per position.

    `visible` is the worker's CUDA_VISIBLE_DEVICES (None when unset, then `discovered`, the GPUs
    pynvml sees, or 0..capacity-1); `capacity` its GPU resource. A worker that holds fewer GPU
    units than it sees ids uses the first ones (dask-cuda lists a worker's own GPU first); one
    that holds more runs several trials per id.
    """
    if visible is None:
        ids = list(discovered) or [str(i) for i in range(max(capacity, 1))]
    else:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        if not ids:
            return [""]  # the worker was told to see no GPU: neither does its trial
    return ids[:capacity] if 0 < capacity < len(ids) else ids


class DeviceUse:
    """How many trials of this worker process use each device position: (worker, resource) -> counts.

    One instance per worker process (`DEVICES`), shared by the trials its threads run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Dict[Tuple[str, str], List[int]] = {}

    def take(self, key: Tuple[str, str], size: int) -> int:
        """Take the least used position of `size` (ties: the first) for this worker and resource."""
        with self._lock:
            counts = self._counts.setdefault(key, [])
            counts.extend([0] * (size - len(counts)))
            position = min(range(size), key=lambda i: (counts[i], i))
            counts[position] += 1
            return position

    def release(self, key: Tuple[str, str], position: int) -> None:
        with self._lock:
            counts = self._counts.get(key)
            if counts is not None and position < len(counts) and counts[position] > 0:
                counts[position] -= 1


DEVICES = DeviceUse()


def _nvml_ids() -> List[str]:
    try:
        from ..devices import visible_gpus
    except ImportError:
        return []
    return visible_gpus()


class _Here:
    """The worker this task runs on (or nothing, when called outside Dask, e.g. in a test)."""

    def __init__(self, worker: Any = None) -> None:
        self.worker = worker
        self.address = getattr(worker, "address", None) or f"local:{os.getpid()}"
        self.key = None
        if worker is not None:
            try:
                self.key = worker.get_current_task()
            except Exception:  # noqa: BLE001 - an older distributed: cancellation is then not watched
                self.key = None

    @classmethod
    def current(cls) -> "_Here":
        try:
            from distributed import get_worker
            return cls(get_worker())
        except (ImportError, ValueError):
            return cls(None)

    def client(self) -> Any:
        if self.worker is None:
            return None
        from distributed import get_client
        return get_client()

    def capacity(self, resource: str) -> int:
        state = getattr(self.worker, "state", None)
        totals = getattr(state, "total_resources", None) or getattr(self.worker, "total_resources", None) or {}
        try:
            return max(1, int(totals.get(resource, 1)))
        except (TypeError, ValueError):
            return 1

    def _pinned(self, payload: TrialPayload) -> Optional[Tuple[int, Optional[str]]]:
        """The slot this worker is pinned to in the tuner's own cluster: one worker per --gpu/--workers slot."""
        return payload.local_slots.get(str(getattr(self.worker, "name", "")))

    def take_device(self, payload: TrialPayload) -> Tuple[int, Optional[str]]:
        """(position, CUDA id or None for a CPU trial) for a trial starting on this worker."""
        pinned = self._pinned(payload)
        if pinned is not None:
            return pinned
        resource = payload.resource
        capacity = self.capacity(resource)
        if resource == GPU:
            choices: List[Optional[str]] = list(gpu_choices(os.environ.get("CUDA_VISIBLE_DEVICES"), capacity,
                                                            [] if "CUDA_VISIBLE_DEVICES" in os.environ else _nvml_ids()))
        else:
            choices = [None] * capacity
        position = DEVICES.take((self.address, resource), len(choices))
        return position, choices[position]

    def release_device(self, payload: TrialPayload, position: int) -> None:
        if self._pinned(payload) is None:
            DEVICES.release((self.address, payload.resource), position)

    def announce(self, payload: TrialPayload, message: TrialStarted) -> None:
        """Tell the tuner the trial started (and where: it journals the pid)."""
        if self.worker is None or not payload.topic:
            return
        try:
            self.worker.log_event(payload.topic, message.to_dict())
        except Exception:  # noqa: BLE001 - the result carries the same facts
            pass

    def cancelled(self) -> bool:
        """True once the scheduler no longer wants this task: its client (the tuner) is gone."""
        if self.worker is None or self.key is None:
            return False
        try:
            task = self.worker.state.tasks.get(self.key)
        except Exception:  # noqa: BLE001 - internals of another distributed version
            return False
        return task is None or task.state in ("cancelled", "released", "forgotten")


class _StopWatch:
    """Long-polls the search's stop and kill events in a thread; the trial loop reads the flags."""

    def __init__(self, here: _Here, payload: TrialPayload) -> None:
        self.names = payload.stop_names
        self.default_grace = payload.kill_grace
        self.grace: Optional[float] = None  # set once the tuner asked every trial to stop
        self.kill = False
        self._finished = threading.Event()
        self._client = here.client() if self.names is not None else None

    def already_stopping(self) -> bool:
        if self._client is None or self.names is None:
            return False
        from distributed import Event
        try:
            return bool(Event(self.names.stop, client=self._client).is_set())
        except Exception:  # noqa: BLE001 - the trial's own loop watches again
            return False

    def start(self) -> None:
        if self._client is not None:
            threading.Thread(target=self._watch, daemon=True, name="autofinetune-stop-watch").start()

    def done(self) -> None:
        self._finished.set()

    def _watch(self) -> None:
        from distributed import Event, Variable
        assert self.names is not None  # start() runs this only with names
        stop, kill = Event(self.names.stop, client=self._client), Event(self.names.kill, client=self._client)
        if not self._wait(stop):
            return
        try:
            grace = float(Variable(self.names.grace, client=self._client).get(timeout=5))
        except Exception:  # noqa: BLE001 - no grace recorded: the trial's own
            grace = self.default_grace
        self.grace = max(0.0, grace)
        if self._wait(kill):
            self.kill = True

    def _wait(self, event: Any) -> bool:
        while not self._finished.is_set():
            try:
                if event.wait(timeout=STOP_POLL):
                    return True
            except Exception:  # noqa: BLE001 - scheduler unreachable for now; cancellation is watched too
                self._finished.wait(1.0)
        return False


def stop_leftover(identity: Dict[str, Any]) -> bool:
    """Run by `--resume` on the worker that ran a trial of the killed tuner: stop its group.

    `identity` is a `ProcessIdentity.to_json()`; its host and boot id, when the journal has
    them, must be this worker's machine's, or nothing is signalled.
    """
    return stop_stale_group(ProcessIdentity.from_json(identity))
