"""The worker side of the Dask backend: one trial, run under its supervisor on a Dask worker.

`run_trial(payload)` is the Dask task. It runs on the worker that holds the trial's resource
(`GPU=1`, or `trial=1` for CPU trials) and does there what LocalScheduler does on the tuner's
machine: picks the trial's device, starts `_supervisor.py` + the trial as their own process
group with a lifeline socket held by this worker process, streams the output to the trial's log
file, enforces the timeout and the kill grace, and returns the exit status, the timings and the
text of the result file (the tuner judges it with the trial's token).

Stopping, and the lifeline on a worker:
* the tuner's shutdown sets the search's Dask `Event` "stop" (grace in a `Variable`), kill_now
  also sets "kill"; a watcher thread per trial long-polls them;
* if the task is cancelled (the tuner died, its client went away) the trial is stopped too;
* if the worker process dies, the kernel closes its end of the lifeline and the supervisor
  kills the group: the same guarantee as on the tuner's machine.

This module imports the standard library and autofinetune's stdlib-only modules; `distributed`
is imported inside functions, only on a worker (it is not needed to import the module).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import __version__
from ..reporting import RESULT_FILE_ENV, TRIAL_TOKEN_ENV
from ..scheduler import INTERRUPTED, RESULT_LIMIT, SUPERVISOR, TIMEOUT, process_start_ticks, stop_stale_group, trial_status

#: How long a worker waits to see the log file the tuner created before it concludes that the
#: output directory is not on a filesystem it shares with the tuner (NFS attribute caches).
SHARED_FS_WAIT = 10.0
#: Seconds between the watcher's long polls of the stop events (each returns at once when set).
STOP_POLL = 5.0

GPU, TRIAL = "GPU", "trial"  # the worker resources a trial takes one of

# Which device positions the trials running in this worker process use: (worker, resource) -> counts.
_busy_lock = threading.Lock()
_busy: Dict[Tuple[str, str], List[int]] = {}


def run_trial(payload: Dict[str, Any]) -> Dict[str, Any]:
    """Run one trial on this worker; never raises for anything the trial does.

    The returned dict's `state` is `exited` (with `exit_code`, `stop_reason` and `result`),
    `not_started` (the search was stopping already), `no_shared_fs` or `start_failed` (with
    `message`).
    """
    here = _Here.current()
    common = {"worker": here.address, "host": socket.gethostname(), "version": __version__}
    log_fd, why = _open_shared(payload["log_path"])
    if log_fd is None:
        return {**common, "state": "no_shared_fs", "message": why}
    try:
        missing = _missing_paths(payload)
        if missing:
            return {**common, "state": "no_shared_fs", "message": missing}
        watch = _StopWatch(here, payload)
        if watch.already_stopping():
            return {**common, "state": "not_started"}
        position, gpu = here.take_device(payload)
        try:
            return {**common, **_run(payload, here, watch, log_fd, position, gpu)}
        finally:
            here.release_device(payload, position)
            watch.done()
    finally:
        os.close(log_fd)


def _run(payload: Dict[str, Any], here: "_Here", watch: "_StopWatch", log_fd: int, position: int,
         gpu: Optional[str]) -> Dict[str, Any]:
    argv = list(payload["argv"])
    if argv and argv[0] == payload.get("python"):
        argv[0] = sys.executable  # the tuner's interpreter path may not exist here; this worker's runs the script
    env = dict(os.environ)
    env.update(payload.get("env") or {})
    env["CUDA_VISIBLE_DEVICES"] = gpu if gpu is not None else ""
    env[RESULT_FILE_ENV] = payload["result_path"]
    env[TRIAL_TOKEN_ENV] = payload["token"]
    env.setdefault("PYTHONUNBUFFERED", "1")
    if os.fstat(log_fd).st_size:  # Dask re-runs a task whose worker was lost: keep the first run's output
        os.write(log_fd, f"\nautofinetune: the worker running this trial was lost; running it again on {here.address}\n".encode())
    started = time.monotonic()
    lifeline, theirs = socket.socketpair()
    mine, supervisor_end = lifeline.detach(), theirs.detach()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", SUPERVISOR, str(supervisor_end), "--", *argv],
            stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT, cwd=payload.get("cwd"), env=env,
            start_new_session=True, pass_fds=(supervisor_end,))
    except OSError as error:
        os.close(mine)
        os.write(log_fd, f"autofinetune: could not start {argv[0]}: {error}\n".encode())
        return {"state": "start_failed", "message": f"could not start on {here.address}: {error}", "duration": time.monotonic() - started}
    finally:
        os.close(supervisor_end)
    ticks = process_start_ticks(process.pid)
    here.announce(payload, {"key": payload["key"], "pid": process.pid, "start_ticks": ticks, "worker": here.address,
                            "host": socket.gethostname(), "position": position, "gpu": gpu})
    watch.start()
    deadline = started + payload["timeout"] if payload.get("timeout") else None
    kill_grace = float(payload.get("kill_grace", 5.0))
    stop_reason: Optional[str] = None
    stopped_at = kill_at = None
    killed = False
    code: Optional[int] = None
    try:
        while code is None:
            try:
                code = process.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if stop_reason is None:
                reason, grace = None, kill_grace
                if deadline is not None and now >= deadline:
                    reason = TIMEOUT
                elif watch.grace is not None:
                    reason, grace = INTERRUPTED, watch.grace
                elif here.cancelled():
                    reason = "cancelled"  # nobody waits for this trial any more (the tuner is gone)
                if reason is not None:
                    stop_reason, stopped_at, kill_at = reason, now, now + grace
                    _signal_group(process.pid, signal.SIGTERM)
            elif watch.grace is not None and stopped_at is not None and kill_at is not None:
                kill_at = min(kill_at, stopped_at + watch.grace)  # a shutdown during a timeout's grace shortens it
            if (watch.kill or (kill_at is not None and now >= kill_at)) and not killed:
                _signal_group(process.pid, signal.SIGKILL)
                killed = True
    finally:
        if code is None:  # this thread failed: never leave the trial behind
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        exit_code = trial_status(mine, process.returncode)
        os.close(mine)
        _signal_group(process.pid, signal.SIGKILL)  # the trial's leftovers, if the supervisor could not
    duration = time.monotonic() - started
    result, result_error = _read_result(payload["result_path"])
    return {"state": "exited", "exit_code": exit_code, "stop_reason": stop_reason, "duration": duration,
            "result": result, "result_error": result_error, "pid": process.pid, "start_ticks": ticks,
            "position": position, "gpu": gpu}


def _missing_paths(payload: Dict[str, Any]) -> str:
    """What the trial needs from the shared filesystem besides its log: its cwd and its script."""
    cwd = payload.get("cwd")
    if cwd and not os.path.isdir(cwd):
        return f"the trial's working directory {cwd} does not exist on this worker"
    argv = payload["argv"]
    script = argv[1] if len(argv) > 1 and argv[0] == payload.get("python") else argv[0] if argv else ""
    if os.path.isabs(script) and not os.path.exists(script):
        return f"the training script {script} does not exist on this worker"
    return ""


def _open_shared(path: str) -> "tuple[Optional[int], str]":
    """Open the log the tuner created; not finding it means no shared filesystem here."""
    give_up = time.monotonic() + SHARED_FS_WAIT
    delay = 0.05
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC), ""
        except FileNotFoundError:
            if time.monotonic() >= give_up:
                return None, (f"{path} (created by the tuner) is not visible on this worker after {SHARED_FS_WAIT:g} s: the Dask backend "
                              f"needs --output_dir on a filesystem shared by the tuner and every worker, at the same path")
        except OSError as error:
            return None, f"cannot write {path} on this worker ({error.strerror or error}): the Dask backend needs --output_dir writable by every worker"
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _read_result(path: str) -> "tuple[Optional[str], str]":
    try:
        with open(path, "rb") as handle:
            data = handle.read(RESULT_LIMIT + 1)
    except FileNotFoundError:
        return None, ""
    except OSError as error:
        return None, f"unreadable result file {path}: {error}"
    if len(data) > RESULT_LIMIT:
        return None, f"result file {path} is larger than {RESULT_LIMIT} bytes"
    return data.decode("utf-8", errors="replace"), ""


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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


def least_busy(key: Tuple[str, str], size: int) -> int:
    """Take the least used position of `size` (ties: the first) for this worker and resource."""
    with _busy_lock:
        counts = _busy.setdefault(key, [])
        counts.extend([0] * (size - len(counts)))
        position = min(range(size), key=lambda i: (counts[i], i))
        counts[position] += 1
        return position


def release(key: Tuple[str, str], position: int) -> None:
    with _busy_lock:
        counts = _busy.get(key)
        if counts is not None and position < len(counts) and counts[position] > 0:
            counts[position] -= 1


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

    def take_device(self, payload: Dict[str, Any]) -> "tuple[int, Optional[str]]":
        """(position, CUDA id or None for a CPU trial) for a trial starting on this worker."""
        name = str(getattr(self.worker, "name", ""))
        pinned = (payload.get("local_slots") or {}).get(name)
        if pinned is not None:  # the tuner's own LocalCluster: one worker per --gpu/--workers slot
            return int(pinned[0]), pinned[1]
        resource = payload["resource"]
        capacity = self.capacity(resource)
        if resource == GPU:
            choices: List[Optional[str]] = list(gpu_choices(os.environ.get("CUDA_VISIBLE_DEVICES"), capacity,
                                                            [] if "CUDA_VISIBLE_DEVICES" in os.environ else _nvml_ids()))
        else:
            choices = [None] * capacity
        position = least_busy((self.address, resource), len(choices))
        return position, choices[position]

    def release_device(self, payload: Dict[str, Any], position: int) -> None:
        name = str(getattr(self.worker, "name", ""))
        if (payload.get("local_slots") or {}).get(name) is None:
            release((self.address, payload["resource"]), position)

    def announce(self, payload: Dict[str, Any], message: Dict[str, Any]) -> None:
        """Tell the tuner the trial started (and where: it journals the pid)."""
        if self.worker is None or not payload.get("topic"):
            return
        try:
            self.worker.log_event(payload["topic"], message)
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

    def __init__(self, here: _Here, payload: Dict[str, Any]) -> None:
        self.names = payload.get("stop_names") or {}
        self.default_grace = float(payload.get("kill_grace", 5.0))
        self.grace: Optional[float] = None  # set once the tuner asked every trial to stop
        self.kill = False
        self._finished = threading.Event()
        self._client = here.client() if self.names else None

    def already_stopping(self) -> bool:
        if self._client is None:
            return False
        from distributed import Event
        try:
            return bool(Event(self.names["stop"], client=self._client).is_set())
        except Exception:  # noqa: BLE001 - the trial's own loop watches again
            return False

    def start(self) -> None:
        if self._client is not None:
            threading.Thread(target=self._watch, daemon=True, name="autofinetune-stop-watch").start()

    def done(self) -> None:
        self._finished.set()

    def _watch(self) -> None:
        from distributed import Event, Variable
        stop, kill = Event(self.names["stop"], client=self._client), Event(self.names["kill"], client=self._client)
        if not self._wait(stop):
            return
        try:
            grace = float(Variable(self.names["grace"], client=self._client).get(timeout=5))
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


def stop_leftover(pid: int, start_ticks: Optional[int]) -> bool:
    """Run by `--resume` on the worker that ran a trial of the killed tuner: stop its group."""
    return stop_stale_group(pid, start_ticks)
