"""Trials as tasks of a Dask cluster (`--backend=dask`): a `Backend` (backends/base.py), scaled out.

Each trial is one Dask task (`dask_task.run_trial`) that takes one unit of a worker resource:
`GPU` when the search runs on GPUs, `trial` for CPU trials. The cluster's resources decide how
many trials run at once; Dask queues the rest and starts each as soon as a unit frees.

* `--scheduler_address=tcp://host:8786` connects to a running cluster (SLURM/PBS through
  dask-jobqueue, Kubernetes through dask-kubernetes, or `dask scheduler` + `dask worker`; see
  docs/dask.md). Workers are started with `--resources GPU=<gpus>` (or `trial=<n>` for CPU
  trials) and `--nthreads` at least that number. With such a cluster, the kind of resource is
  the cluster's: `GPU` if a worker offers it, else `trial`.
* Without an address, a cluster is started in this process, bound to 127.0.0.1, with one worker
  per slot (`--gpu` ids or `--workers`), each pinned to its slot's GPU, and closed at the end.

The output directory (logs, models, result files) must be on a filesystem every worker shares
with the tuner at the same path; each task proves it by opening the log file the tuner created
and fails the search with a clear error otherwise. Trials run in the worker's environment
(plus CUDA_VISIBLE_DEVICES, chosen on the worker), and a `.py` script runs with the worker's
Python. Stopping is done on the worker (see dask_task.py): timeouts there, the tuner's
shutdown through Dask events, and if the tuner dies its tasks are cancelled and their trial
groups stopped; if a worker dies, the trial launcher's lifeline takes the trial and its descendants down.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import secrets
import shutil
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import distributed

from .. import __version__
from ..devices import Slot
from ..errors import ConfigError
from ..runner import (FAILED, INTERRUPTED, ProcessIdentity, Report, TrialOutcome, TrialSpec, judge_trial, parse_result,
                      prepare_files, stop_stale_group)
from .base import OnStart, take_all, wait_for_outcomes
from .messages import GPU, TRIAL, ReportState, StopNames, TrialPayload, TrialReport, TrialStarted

log = logging.getLogger("autofinetune")

#: What a cancelled future raises, across distributed versions (asyncio's is a BaseException).
_CANCELLED = tuple({asyncio.CancelledError, concurrent.futures.CancelledError,
                    getattr(distributed.client, "FutureCancelledError", concurrent.futures.CancelledError)})

#: Seconds to reach a --scheduler_address before giving up with one line.
CONNECT_TIMEOUT = 8.0
#: Seconds a stopped trial's worker has, beyond the grace, to confirm that its group is gone.
STOP_SLACK = 15.0
#: Seconds between reminders that no worker offers the resource the queued trials wait for.
NO_WORKER_REMINDER = 300.0


def _by_value(name: str) -> Callable[..., Any]:
    """`dask_task.<name>` as Dask ships it: a closure, which cloudpickle sends by value.

    Sent by reference, the function would be imported while the worker reads the message, and
    a worker without autofinetune would drop its connection to the scheduler (the worker dies,
    Dask retries elsewhere, and so on). Sent by value, the import happens when the task runs,
    so the task fails with an ImportError that the tuner turns into one clear error.
    """
    def call(*args: Any) -> Any:
        import importlib

        return getattr(importlib.import_module("autofinetune.backends.dask_task"), name)(*args)

    call.__name__ = call.__qualname__ = f"autofinetune_{name}"  # what the dashboard shows
    return call


class DaskBackendError(ConfigError):
    """The cluster cannot run the search as set up (no shared filesystem, autofinetune missing)."""


@dataclass(frozen=True)
class WorkerSlot(Slot):
    """Where a trial ran on a cluster: a GPU id (or CPU position) on one worker."""

    worker: str = ""

    @property
    def label(self) -> str:
        where = self.worker.split("://", 1)[-1]
        return f"{Slot(self.index, self.gpu).label}@{where}" if where else Slot(self.index, self.gpu).label


@dataclass
class _Task:
    spec: TrialSpec
    future: Any
    key: str
    started: Optional[float] = None  # tuner clock, when the worker said it started
    slot: Optional[Slot] = None
    identity: Optional[ProcessIdentity] = None


class DaskBackend:
    """A `Backend` over a Dask cluster: one task per trial, stopped on its worker."""

    def __init__(self, slots: Sequence[Slot], kill_grace: float = 5.0, on_start: Optional[OnStart] = None,
                 address: Optional[str] = None) -> None:
        if not slots and address is None:
            raise ValueError("at least one slot is needed")
        self.slots = list(slots)
        self.kill_grace = kill_grace
        self._on_start = on_start
        self.run_id = secrets.token_hex(6)
        self._topic = f"autofinetune-{self.run_id}-started"
        self._stop_names = StopNames.for_run(self.run_id)
        self._tasks: Dict[str, _Task] = {}
        self._events: "queue.Queue[tuple]" = queue.Queue()
        self._ready: List[TrialOutcome] = []
        self._launching = True
        self._stopping = False
        self._closed = False
        self._count = 0
        self._warned_version = False
        self._no_worker_since: Optional[float] = None
        self._reminded_at = 0.0
        self.cluster: Any = None
        self.scratch: Optional[str] = None  # the in-process workers' scratch space, removed on close
        self.local_slots: Dict[str, Tuple[int, Optional[str]]] = {}
        quiet = logging.getLogger("distributed")
        restore_level = quiet.level  # only the cluster started here is quietened (see _start_local_cluster)
        self.client = self._start_local_cluster() if address is None else self._connect(address)
        self._finalizer = weakref.finalize(self, _close_quietly, self.client, self.cluster,
                                           restore_level if address is None else None, self.scratch)  # also runs at exit
        try:
            self.resource = self._choose_resource() if address is not None else GPU if any(s.gpu is not None for s in self.slots) else TRIAL
            self.address = self.client.scheduler.address
            self.client.subscribe_topic(self._topic, self._on_topic)
            distributed.Variable(self._stop_names.grace, client=self.client).set(float(kill_grace))
            capacity, workers = self._capacity()
        except BaseException:
            self._finalizer()
            raise
        self.description = (f"Dask cluster {self.address} ({workers} worker(s) with {self.resource}={capacity:g} in all; "
                            f"each trial takes {self.resource}=1); fence: one launcher per task on each worker "
                            f"(subreaper + environment cookie on Linux workers; see docs/dask.md)")
        if address is not None:
            self._explain_resources(capacity, workers)

    # -- setting up ----------------------------------------------------------------------------
    def _start_local_cluster(self) -> Any:
        """A cluster in this process on 127.0.0.1: one single-thread worker per slot, pinned to its GPU.

        Its workers' INFO chatter would fill the tuner's terminal, so distributed logs only
        warnings until the cluster is closed, when the level it had comes back.
        """
        logging.getLogger("distributed").setLevel(logging.WARNING)
        resource = GPU if any(s.gpu is not None for s in self.slots) else TRIAL
        # Dask's default scratch space is a shared folder of the system's temp dir, left behind;
        # ours is private to this run and removed with the cluster (docs/security.md).
        self.scratch = tempfile.mkdtemp(prefix="autofinetune-dask-")
        workers = {}
        for slot in self.slots:
            name = f"autofinetune-slot{slot.index}"
            self.local_slots[name] = (slot.index, slot.gpu)
            workers[name] = {"cls": distributed.Worker, "options": {
                "nthreads": 1, "resources": {resource: 1}, "host": "127.0.0.1", "memory_limit": 0, "dashboard": False,
                "local_directory": self.scratch}}
        scheduler = {"cls": distributed.Scheduler, "options": {
            "host": "127.0.0.1", "port": 0, "dashboard": False, "dashboard_address": "127.0.0.1:0", "local_directory": self.scratch}}
        try:
            self.cluster = distributed.SpecCluster(workers=workers, scheduler=scheduler, name="autofinetune")
            try:
                return distributed.Client(self.cluster, set_as_default=False)
            except BaseException:
                self.cluster.close()
                raise
        except BaseException:
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise

    @staticmethod
    def _connect(address: str) -> Any:
        """Connect, or say why in one line within CONNECT_TIMEOUT seconds (Dask's own default
        retries for 30 s and more)."""
        try:
            return distributed.Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError, TypeError) as error:
            raise ConfigError(f"--scheduler_address={address}: cannot reach the Dask scheduler ({error}); fix: start it "
                              f"(`dask scheduler`, or a dask-jobqueue/dask-kubernetes cluster) and pass its address, "
                              f"e.g. tcp://10.0.0.5:8786") from None

    def _workers(self) -> Dict[str, Any]:
        try:
            return dict(self.client.scheduler_info(n_workers=-1)["workers"])
        except TypeError:  # distributed before n_workers=
            return dict(self.client.scheduler_info()["workers"])

    def _choose_resource(self) -> str:
        offered = {name for info in self._workers().values() for name in (info.get("resources") or {})}
        if GPU in offered:
            return GPU
        if TRIAL in offered:
            return TRIAL
        return GPU if any(s.gpu is not None for s in self.slots) else TRIAL

    def _capacity(self) -> "tuple[float, int]":
        workers = self._workers()
        return sum(float((w.get("resources") or {}).get(self.resource, 0)) for w in workers.values()), len(workers)

    def _explain_resources(self, capacity: float, workers: int) -> None:
        if capacity:
            log.info("Dask cluster %s: %d worker(s) offer %s=%g in all; each trial takes %s=1",
                     self.address, workers, self.resource, capacity, self.resource)
            if any(s.gpu is not None for s in self.slots):
                if self.resource == GPU:
                    log.info("GPU ids are chosen on each worker (its CUDA_VISIBLE_DEVICES); --gpu only applies without --scheduler_address")
                else:
                    log.warning("the Dask cluster at %s offers no GPU resource: trials run on its CPU workers (trial=1 each, "
                                "CUDA_VISIBLE_DEVICES empty); start GPU workers with --resources GPU=<gpus per worker>", self.address)
        else:
            log.warning("no worker of the Dask cluster at %s offers %s (%d worker(s) now); trials wait until one joins. "
                        "Start workers with `dask worker %s --resources %s=1 --nthreads 1` (see docs/dask.md)",
                        self.address, self.resource, workers, self.address, self.resource)

    # -- the Backend interface -------------------------------------------------------------------
    def submit(self, spec: TrialSpec) -> None:
        if not self._launching:
            return  # never sent: the journal still has it queued, for --resume
        os.close(prepare_files(spec))
        spec.log_path.write_bytes(b"")  # the worker must see this very file: the shared-filesystem check
        self._count += 1
        key = f"autofinetune-{self.run_id}-{spec.key}-{self._count}"
        payload = TrialPayload(key, list(spec.argv), str(spec.log_path), str(spec.result_path), spec.token, self.resource,
                               python=sys.executable, cwd=spec.cwd, env=dict(spec.env), timeout=spec.timeout,
                               kill_grace=self.kill_grace, topic=self._topic, stop_names=self._stop_names,
                               local_slots=dict(self.local_slots),
                               intermediate_path=None if spec.intermediate_path is None else str(spec.intermediate_path),
                               stop_path=None if spec.stop_path is None else str(spec.stop_path), prune_grace=spec.prune_grace)
        future = self.client.submit(_by_value("run_trial"), payload.to_dict(), key=key, pure=False, resources={self.resource: 1})
        self._tasks[key] = _Task(spec, future, key)
        future.add_done_callback(lambda _f, key=key: self._events.put(("done", key)))

    def counts(self) -> Tuple[int, int]:
        running = sum(1 for t in self._tasks.values() if t.started is not None)
        return running, len(self._tasks) - running

    def wait_any(self, timeout: Optional[float] = None) -> List[TrialOutcome]:
        """Block until at least one trial ends (or `timeout` passes); [] when nothing is running."""
        def ready() -> List[TrialOutcome]:
            outcomes, self._ready = self._ready + self._drain(0.0), []
            return outcomes

        def block(left: Optional[float]) -> List[TrialOutcome]:
            self._remind_if_no_worker()
            return self._drain(1.0 if left is None else min(1.0, left))  # wakes for the reminder

        return wait_for_outcomes(timeout, ready, lambda: not self._tasks, block)


    def shutdown(self, grace: Optional[float] = None) -> List[TrialOutcome]:
        """Stop every running trial's group on its worker (TERM, KILL after the grace) and wait for it."""
        grace = self.kill_grace if grace is None else grace
        self._signal_stop(grace)
        self._stop_launching()
        outcomes, self._ready = self._ready, []
        give_up = time.monotonic() + grace + STOP_SLACK
        while self._tasks and time.monotonic() < give_up:
            outcomes.extend(self._drain(0.5))
        for task in list(self._tasks.values()):  # its worker never answered: lost or unreachable
            del self._tasks[task.key]
            self._quiet(task.future.cancel)
            now = time.monotonic()
            outcomes.append(TrialOutcome(task.spec, INTERRUPTED, None, None, task.slot or self._unknown_slot(), task.started or now, now,
                                         "stopped by the tuner's shutdown; its Dask worker did not confirm the stop"))
        return outcomes

    def kill_now(self) -> None:
        """The second Ctrl-C: every running trial group is SIGKILLed on its worker, no grace."""
        self._signal_stop(0.0, kill=True)
        self._stop_launching()

    def close(self) -> None:
        """Stop what still runs, then disconnect (and close the cluster this scheduler started)."""
        if self._closed:
            return
        try:
            if self._tasks:
                self.shutdown(grace=min(self.kill_grace, 3.0))
            for name in (self._stop_names.stop, self._stop_names.kill):
                self._quiet(distributed.Event(name, client=self.client).clear)
            self._quiet(distributed.Variable(self._stop_names.grace, client=self.client).delete)
            self._quiet(self.client.unsubscribe_topic, self._topic)
        finally:
            self._closed = True
            self._finalizer()

    def stop_leftover(self, identity: ProcessIdentity) -> bool:
        """`--resume`: a group on a worker is stopped by that worker, if it is still here; never by a local pid."""
        worker = identity.worker
        if worker is None:
            return stop_stale_group(identity)  # the tuner's own in-process cluster: this machine
        if worker not in self._workers():
            return False  # gone, and its trials with it (the launcher's lifeline)
        try:
            answers = self.client.run(_by_value("stop_leftover"), identity.to_json(), workers=[worker])
        except Exception as error:  # noqa: BLE001 - resume goes on; the trial is re-run anyway
            log.warning("could not ask Dask worker %s to stop a leftover trial (pid %d): %s", worker, identity.pid, error)
            return False
        return answers.get(worker) is True

    # -- internals -------------------------------------------------------------------------------
    def _stop_launching(self) -> None:
        """Start nothing more: cancel the tasks no worker has started (the journal keeps them for --resume)."""
        self._launching = False
        self._ready.extend(self._drain(0.0))  # take in what has arrived: starts, and ends to report
        dropped = [t for t in self._tasks.values() if t.started is None]
        for task in dropped:
            del self._tasks[task.key]
        if dropped:
            self._quiet(self.client.cancel, [t.future for t in dropped])

    def _signal_stop(self, grace: float, kill: bool = False) -> None:
        self._stopping = True
        try:
            distributed.Variable(self._stop_names.grace, client=self.client).set(float(grace))
            distributed.Event(self._stop_names.stop, client=self.client).set()
            if kill:
                distributed.Event(self._stop_names.kill, client=self.client).set()
        except Exception as error:  # noqa: BLE001 - scheduler gone: its workers' tasks are cancelled anyway
            log.warning("could not tell the Dask cluster to stop the trials (%s); trials whose tasks are cancelled stop on their own", error)

    def _on_topic(self, event: Any) -> None:
        """Runs in the client's thread: hand the start report to the search's thread."""
        message = event[1] if isinstance(event, (tuple, list)) and len(event) == 2 else event
        try:
            self._events.put(("started", TrialStarted.from_dict(message)))
        except (KeyError, TypeError, ValueError):  # another version's message: the task's report carries the start too
            pass

    def _drain(self, wait: Optional[float]) -> List[TrialOutcome]:
        """Take in the starts and the ends that arrived, waiting up to `wait` seconds for the first."""
        outcomes: List[TrialOutcome] = []
        for kind, item in take_all(self._events, wait):
            if kind == "started":
                self._started(item)
            else:
                outcome = self._finish(item)
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    def _started(self, message: TrialStarted, at: Optional[float] = None) -> None:
        task = self._tasks.get(message.key)
        if task is None:
            return  # finished already, or dropped
        identity = message.identity
        if self.cluster is not None:  # the tuner's own workers: this machine, resume stops them locally
            identity = replace(identity, worker=None)
        slot = self._slot_of(message)
        if task.identity is not None and (task.identity, task.slot) == (identity, slot):
            return  # heard already
        # A first start, or Dask running the task again after its worker was lost: journal where it runs now.
        if task.identity is not None:
            log.warning("trial %s: its Dask worker %s was lost; Dask runs it again on %s (log: %s)", task.spec.key,
                        task.identity.worker or task.slot, message.identity.worker, task.spec.log_path)
        task.started = time.monotonic() if at is None else at
        task.slot = slot
        task.identity = identity
        self._no_worker_since = None
        if self._on_start is not None:
            self._on_start(task.spec, task.slot, task.identity)

    def _slot_of(self, message: TrialStarted) -> Slot:
        gpu = message.gpu if message.gpu is not None and self.resource == GPU else None
        if self.cluster is not None:
            return next((s for s in self.slots if s.index == message.position), Slot(message.position, gpu))
        return WorkerSlot(message.position, gpu, message.identity.worker or "")

    def _unknown_slot(self) -> Slot:
        return WorkerSlot(0, None, "unknown worker")

    def _finish(self, key: str) -> Optional[TrialOutcome]:
        task = self._tasks.pop(key, None)
        if task is None:
            return None  # dropped by _stop_launching
        finished = time.monotonic()
        try:
            wire = task.future.result()
        except _CANCELLED as error:
            return self._failed(task, finished, f"its Dask task was cancelled ({error})")
        except ImportError as error:
            self._abort(f"a Dask worker cannot import autofinetune's trial task ({type(error).__name__}: {error}); fix: install "
                        f"autofinetune {__version__} in the Python environment of every worker (pip install 'autofinetune[dask]')")
        except Exception as error:  # noqa: BLE001 - the worker died (KilledWorker) or the task broke
            return self._failed(task, finished, f"its Dask task failed: {type(error).__name__}: {error}")
        try:
            report = TrialReport.from_dict(wire)
        except (KeyError, TypeError, ValueError) as error:
            self._abort(f"a Dask worker returned a trial report this tuner cannot read ({type(error).__name__}: {error}); fix: "
                        f"install autofinetune {__version__}, the tuner's version, on every worker")
        return self._outcome(task, report, finished)

    def _failed(self, task: _Task, finished: float, message: str) -> TrialOutcome:
        status = INTERRUPTED if self._stopping else FAILED
        return TrialOutcome(task.spec, status, None, None, task.slot or self._unknown_slot(), task.started or finished, finished, message)

    def _outcome(self, task: _Task, report: TrialReport, finished: float) -> Optional[TrialOutcome]:
        if report.version != __version__ and not self._warned_version:
            self._warned_version = True
            log.warning("Dask worker %s runs autofinetune %s, the tuner %s; install the same version on every worker",
                        report.worker, report.version, __version__)
        if report.state is ReportState.NOT_STARTED:  # it saw the search stopping before it started: --resume runs it
            return None if self._stopping else TrialOutcome(task.spec, INTERRUPTED, None, None, self._unknown_slot(), finished, finished,
                                                            "not started: the search was stopping")
        if report.state is ReportState.NO_SHARED_FS:
            self._abort(f"Dask worker {report.worker} ({report.host}): {report.message}; fix: put --output_dir "
                        f"(and the training script) on a shared filesystem (NFS, Lustre, ...) mounted at the same path on every worker")
        started = finished - report.duration
        if task.started is None and report.started is not None:  # the result overtook the start report
            self._started(replace(report.started, key=task.key), at=started)
        slot = task.slot or (self._slot_of(report.started) if report.started is not None else self._unknown_slot())
        if report.state is not ReportState.EXITED or report.exit_code is None:
            return TrialOutcome(task.spec, FAILED, None, None, slot, started, finished, report.message or str(report.state))
        spec = task.spec

        def read_report() -> Report:
            if report.result is None:
                return None, report.result_error
            return parse_result(report.result, spec.result_path, spec.token)

        status, score, message = judge_trial(spec, report.exit_code, report.stop_reason, read_report)
        return TrialOutcome(spec, status, score, report.exit_code, slot, started, finished, message)

    def _abort(self, message: str) -> NoReturn:
        """A problem of the cluster, not of the candidate: stop everything and fail the search."""
        self.shutdown(grace=min(self.kill_grace, 3.0))
        raise DaskBackendError(message)

    def _remind_if_no_worker(self) -> None:
        running, queued = self.counts()
        if running or not self._tasks:
            self._no_worker_since = None
            return
        now = time.monotonic()
        if self._no_worker_since is None:
            self._no_worker_since = now
            return
        if now - self._no_worker_since < 30.0 or now - self._reminded_at < NO_WORKER_REMINDER:
            return
        self._reminded_at = now
        capacity, workers = self._capacity()
        if not capacity:
            log.warning("%d trial(s) wait for a Dask worker that offers %s; the cluster at %s has %d worker(s) and none does. "
                        "Start workers with --resources %s=1 (see docs/dask.md)", queued, self.resource, self.address, workers, self.resource)

    @staticmethod
    def _quiet(call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except Exception:  # noqa: BLE001 - best effort while stopping
            pass


def _close_quietly(client: Any, cluster: Any, restore_level: Optional[int], scratch: Optional[str] = None) -> None:
    """Disconnect and close a cluster we started without distributed's shutdown chatter.

    `restore_level`: distributed's log level before the in-process cluster quietened it;
    `scratch`: the in-process workers' scratch folder, removed once they are gone.
    """
    logger = logging.getLogger("distributed")
    level = logger.level if restore_level is None else restore_level
    logger.setLevel(logging.CRITICAL)
    try:
        try:
            client.close(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        if cluster is not None:
            try:
                cluster.close(timeout=10)
            except Exception:  # noqa: BLE001
                pass
    finally:
        logger.setLevel(level)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
