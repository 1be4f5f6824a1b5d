"""The search loop: ask the strategy, plan with the evaluator, run, record, tell.

Data flows one way (docs/architecture.md): strategy (what to try) -> evaluator (how) ->
backend (where, when) -> journal and records (what happened) -> views (what people see, from a
read-only snapshot). There is one loop; *when* the next trial starts is a launch policy
(policies.py: rounds as generations, or `--async`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import json
import logging
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from . import __version__
from .backends import make_backend
from .backends.base import Backend
from .devices import Slot
from .errors import AutofinetuneError, ConfigError, SearchFailed, path_error, shown
from .evaluators import Evaluator, make_evaluator
from .journal import (JOURNAL, SCHEMA_VERSION, FinishEvent, IntermediateEvent, InterruptedEvent, Journal, QueuedEvent,
                      ResumeEvent, RetryEvent, RoundEvent, SearchState, StartedEvent, StartEvent)
from .options import journaled
from .policies import AsyncPolicy, LaunchPolicy, RoundPolicy
from .records import BEST_MODEL, SearchRecords, TrialRecord, write_atomic
from .preflight import Accepted, preflight, refuse_missing
from .rules import SAVED_PARAMS_DIR, SCHEDULE_NOTE, TrialCommand, schedule
from .pruners import Pruner, check_pruner_options, make_pruner
from .runner import (MAX_REPORTS, IntermediateReader, ProcessIdentity, Status, TrialOutcome, TrialSpec, clear_path, log_tail,
                     token_digest)
from .space import SearchSpace
from .strategies import Strategy, check_strategy, make_strategy
from .strategies.registry import resumed_options

log = logging.getLogger("autofinetune")

Key = Tuple[int, int]

#: The schedule of the best model, as `autofinetune retrain` reads it.
SCHEDULE_FILE = "best_schedule.json"
#: Where a trial finds its model folder, whether or not it takes --saved_params_dir.
SAVED_PARAMS_ENV = "AUTOFINETUNE_SAVED_PARAMS_DIR"
#: The thread pools of the numeric libraries a trial may load (OpenMP: PyTorch, scikit-learn...).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
#: Seconds between looks at the running trials' intermediate files: often while a pruner
#: decides, seldom when they only feed the learning curves (docs/pruning.md).
PRUNING_LOOK = 0.1
CURVES_LOOK = 1.0


@dataclass
class SearchConfig:
    """A search's inputs: the script, its space, where it writes, and the options of options.py."""

    script: Path
    space: SearchSpace
    output_dir: Path
    slots: List[Slot]
    options: Dict[str, Any]
    passthrough: List[Tuple[str, str]] = field(default_factory=list)
    cwd: str = field(default_factory=os.getcwd)

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options")
        if options is not None and name in options:
            return options[name]
        raise AttributeError(name)

    def program(self) -> List[str]:
        """How to start the script: `.py` with the tuner's own Python, anything else directly."""
        script = self.script
        try:
            is_file = script.is_file()
        except OSError as error:
            raise path_error("the training script", script, error, "pass the path of your train.py as the first argument") from None
        if not is_file:
            raise ConfigError(f"{shown(script)}: training script not found; fix: pass the path of your train.py as the first argument")
        if script.suffix == ".py":
            return [sys.executable, str(script)]
        if not os.access(script, os.X_OK):
            raise ConfigError(f"{shown(script)}: not executable; fix: chmod +x it (or give a .py script, which runs with {sys.executable})")
        return [str(script)]


@dataclass
class SearchResult:
    """What a finished search found, for the Python API and the CLI's last lines."""

    output_dir: Path
    best: Optional[TrialRecord]
    trials: List[TrialRecord]
    seed: int

    @property
    def best_params(self) -> Optional[Dict[str, Any]]:
        return dict(self.best.params) if self.best else None

    @property
    def best_score(self) -> Optional[float]:
        return self.best.score if self.best else None

    @property
    def best_model_dir(self) -> Optional[Path]:
        return self.output_dir / BEST_MODEL if self.best else None


@dataclass(frozen=True)
class SearchSnapshot:
    """What a view may know of the search at one moment, built by the search's own thread, so a
    view (or its ticker thread) never reads what the loop mutates.

    `trials` is a read-only window on the append-only list of finished trials, its length fixed
    when the snapshot was made: one is made per hook, and copying the list there made every
    trial cost more than the one before (docs/overhead.md).
    """

    output_dir: Path
    script: str
    space: SearchSpace
    popsize: int
    rounds: int
    round_index: int
    trials: Sequence[TrialRecord]
    best: Optional[TrialRecord]
    running: int
    queued: int
    rounds_complete: FrozenSet[int]
    resumed: bool
    started_at: float  # time.monotonic() when this run started
    failed: int = 0  # finished trials that did not succeed (pruned ones aside), counted as they finish
    pruned: int = 0  # finished trials the pruner stopped
    #: Each trial's intermediate results, (round, index) -> [(step, score)...], of its latest
    #: attempt; only ever appended to, by the search's thread, which runs every hook.
    curves: Mapping[Tuple[int, int], Sequence[Tuple[int, float]]] = field(default_factory=dict)


class SearchObserver:
    """What views (VisualDL, progress, ...) hear of a search; every hook is optional.

    Hooks run in the tuner's thread after the journal has the event, and receive a
    `SearchSnapshot`, never the search itself; a view that raises is switched off, never the
    search. `writing()` may return a context manager the search enters around each line it
    prints (the progress bar clears itself there), so no view needs to replace the output.
    """

    def on_start(self, view: SearchSnapshot) -> None: ...

    def on_trial_started(self, view: SearchSnapshot, record: TrialRecord) -> None: ...

    def on_trial_finished(self, view: SearchSnapshot, record: TrialRecord, is_best: bool) -> None: ...

    def on_intermediate(self, view: SearchSnapshot, record: TrialRecord, reports: Sequence[Tuple[int, float]]) -> None:
        """New intermediate results of a running trial (step, score), in the order reported."""

    def on_round_finished(self, view: SearchSnapshot, round_index: int, trials: Sequence[TrialRecord]) -> None: ...

    def on_finish(self, view: SearchSnapshot, result: Optional[SearchResult]) -> None: ...

    def writing(self) -> Optional[ContextManager[None]]:
        return None


class SearchInterrupted(AutofinetuneError):
    """Ctrl-C or SIGTERM: the search stopped cleanly and can be resumed."""

    exit_code = 130

    def __init__(self, message: str, output_dir: Path) -> None:
        super().__init__(message)
        self.output_dir = output_dir


class OutputError(AutofinetuneError):
    """The output directory stopped accepting writes mid-search (disk full, permissions)."""


def default_output_dir() -> Path:
    return Path(f"output_{_dt.datetime.now().strftime('%Y%m%d%H%M%S')}")


def prepare_output_dir(path: Path) -> Path:
    """Refuse to mix two searches in one folder; prove the folder is writable before any trial."""
    try:
        path = path.resolve()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--output_dir={shown(path)}: exists and is not a directory; fix: choose another path")
        if path.is_dir() and any(path.iterdir()):
            raise ConfigError(f"--output_dir={shown(path)}: not empty (a search already wrote there); fix: choose a new --output_dir "
                              f"or use --resume to continue that search")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop, on older Pythons
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"--output_dir={shown(path)}: cannot write there ({reason}); fix: choose a writable directory with free space") from None
    return path


class Search:
    """One search, run once; `run()` returns a SearchResult or raises SearchFailed.

    Everything is checked before anything is touched: the options, the strategy, the trial
    command, the resume journal; then the backend is built (it may fail: Dask missing, a
    scheduler unreachable) and only then is the output dir created or written.
    """

    def __init__(self, config: SearchConfig, echo: Optional[Callable[[str], None]] = print,
                 observers: Sequence[SearchObserver] = (), resume: bool = False,
                 warn: Optional[Callable[[str], None]] = None) -> None:
        self.config = config
        self.space = config.space
        self.echo_line = echo
        self.warn_line = warn
        self.resuming = resume
        self.strategy_options = check_strategy(config.tuning_strategy, self.space.dim, config.popsize,
                                               config.strategy_options, config.asynchronous)
        self.pruner_options = check_pruner_options(config.pruner, config.pruner_options)
        self.pruner: Pruner = make_pruner(config.pruner, self.pruner_options)
        self.evaluator: Evaluator = make_evaluator(config.evaluator, config.resume_epochs)
        command = TrialCommand(tuple(config.program()), self.space, tuple(config.passthrough), self.evaluator.options,
                               self.evaluator.name)
        command.check()
        # The local backend first: making it starts the trial launcher, whose start-up (~40 ms)
        # then runs while the script prints its usage for the preflight (docs/overhead.md). A
        # refusal below closes it again; a Dask cluster is contacted only once nothing refused.
        early: Optional[Backend] = self._make_backend() if config.backend == "local" else None
        try:
            self.accepted = self._preflight(command.program)
            self.command = dataclasses.replace(command, accepted=self.accepted.options)
            self.threads = self._thread_budget()
            self.replayed: Optional[SearchState] = None
            #: The strategy options as the journal keeps them (a resumed search keeps the journal's own).
            self.journaled_strategy_options: Optional[Dict[str, Any]] = self.strategy_options
            self.seed: int = config.seed if config.seed is not None else secrets.randbelow(2**31 - 1) + 1
            if resume:
                from .resume import read_for_resume

                self.replayed = read_for_resume(config)
                self.seed = int(self.replayed.config["seed"])
                # Options the command line does not name run at the defaults of the release that wrote
                # the journal (read_for_resume has checked that the command line agrees with it).
                journaled_options = self.replayed.config.get("strategy_options")
                self.strategy_options = resumed_options(config.tuning_strategy, self.space.dim, config.popsize,
                                                        journaled_options, config.strategy_options, config.asynchronous)
                # Journaled again as they were, not filled in: a journal that lacks an option must go
                # on lacking it, or the next resume would take today's defaults for it.
                self.journaled_strategy_options = journaled_options
            # The strategy before a Dask cluster and the output dir: a plugin whose library is
            # missing fails here, in one line, with nothing left running and nothing written.
            self.strategy: Strategy = make_strategy(config.tuning_strategy, self.space.dim, self.space.init_unit(),
                                                    config.popsize, self.seed, self.strategy_options)
            self.backend: Backend = early if early is not None else self._make_backend()
        except BaseException:
            if early is not None:
                early.close()
            raise
        try:
            self.output_dir = config.output_dir.resolve() if resume else prepare_output_dir(config.output_dir)
            self.journal = Journal(self.output_dir / JOURNAL)
        except BaseException:
            self.backend.close()
            raise
        self.records = SearchRecords(self.output_dir, self.space.names, header=self._header())
        self.policy: LaunchPolicy = AsyncPolicy(self) if config.asynchronous else RoundPolicy(self)
        self.started = time.monotonic()
        self.observers: List[SearchObserver] = list(observers)
        self.round_index = 0
        self.rounds_complete: Set[int] = set()
        self._rounds_frozen: FrozenSet[int] = frozenset()
        self._pending: Dict[str, TrialRecord] = {}
        self._specs: Dict[str, Tuple[TrialRecord, TrialSpec]] = {}
        self._evaluator_args: Dict[str, List[Tuple[str, str]]] = {}
        self._hinted = False  # the missing-option hint is said once per search
        self._stopping = False  # set once the running trials are being stopped (Ctrl-C, an output error)
        self._failure_tails: Dict[Tuple[int, int], str] = {}  # the last log line of each failed trial
        # Intermediate results: a reader per queued or running attempt (by spec key), the
        # curves of every trial's latest attempt, and the worst final score so far (what a
        # pruned trial's told score is capped at, docs/pruning.md).
        self._readers: Dict[str, Tuple[TrialRecord, IntermediateReader]] = {}
        self.curves: Dict[Tuple[int, int], List[Tuple[int, float]]] = {}
        self.worst_final: Optional[float] = None
        self._next_look = 0.0

    # -- output --------------------------------------------------------------------------------
    def echo(self, line: str) -> None:
        if self.echo_line is not None:
            with self._writing():
                self.echo_line(line)

    def warn(self, line: str) -> None:
        if self.warn_line is not None:
            with self._writing():
                self.warn_line(line)

    def _writing(self) -> ContextManager[None]:
        stack = contextlib.ExitStack()
        for observer in self.observers:
            try:
                guard = observer.writing()
            except Exception:  # noqa: BLE001 - a view never stops a line from being printed
                guard = None
            if guard is not None:
                stack.enter_context(guard)
        return stack

    def snapshot(self) -> SearchSnapshot:
        running, queued = self.backend.counts()
        if len(self._rounds_frozen) != len(self.rounds_complete):  # rounds are only ever added
            self._rounds_frozen = frozenset(self.rounds_complete)
        return SearchSnapshot(self.output_dir, str(self.config.script), self.space, self.config.popsize, self.config.rounds,
                              self.round_index, self.records.view(), self.records.best, running, queued,
                              self._rounds_frozen, self.resuming, self.started, self.records.failed, self.records.pruned,
                              self.curves)

    def _notify(self, hook: str, *args: Any) -> None:
        if not self.observers:
            return
        view = self.snapshot()
        for observer in list(self.observers):
            try:
                getattr(observer, hook)(view, *args)
            except Exception as error:  # a view must never take the search down
                log.warning("view %s failed in %s (%s: %s); it is switched off", type(observer).__name__, hook, type(error).__name__, error)
                self.observers.remove(observer)

    def _make_backend(self) -> Backend:
        c = self.config
        return make_backend(c.backend, c.slots, c.kill_grace, on_start=self._on_process_start, address=c.scheduler_address)

    def _preflight(self, program: Tuple[str, ...]) -> Accepted:
        """Refuse, before anything runs, a search whose script lacks an option it would be given."""
        c = self.config
        self._preflight_notes: List[str] = []
        if c.skip_preflight:
            return Accepted(None)
        accepted = preflight(c.script, program, c.cwd)
        # Only rounds after the first resume from a parent: a one-round search needs no model back.
        needed = (SAVED_PARAMS_DIR, *self.evaluator.options) if self.evaluator.options and c.rounds > 1 else ()
        warning = refuse_missing(str(c.script), accepted, self.space.names, [name for name, _ in c.passthrough], needed,
                                 self.evaluator.name)
        self._preflight_notes = [line for line in (accepted.note, warning) if line]  # said once the search starts
        return accepted

    def _thread_budget(self) -> Optional[int]:
        """Each trial's share of the cores, so parallel trials do not each start a thread per core
        (two PyTorch trials on two cores ran 2.3x slower with their default threads)."""
        if self.config.threads_per_trial is not None:
            return int(self.config.threads_per_trial)
        if self.config.backend != "local":
            return None  # a worker's cores are the worker's to divide
        return max(1, (os.cpu_count() or 1) // max(1, len(self.config.slots)))

    def _trial_env(self, model_dir: Path) -> Dict[str, str]:
        env = {SAVED_PARAMS_ENV: str(model_dir)}
        if self.threads is not None:
            env.update({name: str(self.threads) for name in THREAD_VARIABLES if name not in os.environ})
        return env

    def _header(self) -> str:
        c = self.config
        pruner = f" | pruner {c.pruner}" if c.pruner != "none" else ""
        return (f"# autofinetune search of {c.script} | strategy {c.tuning_strategy} | evaluator {c.evaluator} | "
                f"popsize {c.popsize} x round {c.rounds} | seed {self.seed}{pruner}")

    def config_json(self) -> Dict[str, Any]:
        """The configuration journaled with every start and resume (options from options.py)."""
        c = self.config
        data = journaled(c.options)
        data.update({"script": str(c.script), "space": self.space.to_json(), "space_fingerprint": self.space.fingerprint(),
                     "space_source": self.space.source, "seed": self.seed, "passthrough": [list(p) for p in c.passthrough],
                     "strategy_options": self.journaled_strategy_options, "pruner_options": self.pruner_options, "slots": [s.label for s in c.slots], "cwd": c.cwd,
                     "accepted_options": sorted(self.accepted.options) if self.accepted.options is not None else None,
                     "version": __version__})
        return data

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        c = self.config
        result: Optional[SearchResult] = None
        try:
            if self.resuming:
                from .resume import restore

                assert self.replayed is not None
                restore(self, self.replayed)
                self.journal.append(ResumeEvent(config=self.config_json(), time=time.time()))
            else:
                self.journal.append(StartEvent(config=self.config_json(), time=time.time(), schema=SCHEMA_VERSION))
            threads = f"{self.threads} thread(s) per trial" if self.threads is not None else "the workers' own threads"
            settings = ", ".join(f"{k}={v:g}" for k, v in self.pruner_options.items())
            pruner = f", pruner {c.pruner} ({settings})" if c.pruner != "none" else ""
            self.echo(f"{'Resuming' if self.resuming else 'Tuning'} {c.script} over {', '.join(self.space.names)}: {c.popsize} candidates x "
                      f"{c.rounds} rounds on {self.backend.description}, {threads}{pruner}, seed {self.seed}, output {self.output_dir}")
            for note in self._preflight_notes:
                self.echo(note)
            self._notify("on_start")
            self.policy.begin()
            for record in self._finished_trials():
                self.policy.finished(record)
            self.records.close()
            result = self._result()
            return result
        except KeyboardInterrupt:
            self._stop_running_trials()
            raise SearchInterrupted(f"interrupted; {len(self.records.trials)} finished trial(s) are saved in {self.output_dir}; "
                                    f"continue with the same command plus --resume", self.output_dir) from None
        except OSError as error:
            if not self._is_output_error(error):
                raise
            self._stop_running_trials()
            raise OutputError(
                f"cannot write to {self.output_dir} ({error.strerror or error}); every finished trial is in the journal; "
                f"free space or fix permissions, then rerun the same command with --resume") from None
        finally:
            try:
                self._last_views()
                try:
                    self.journal.close()
                except OSError as error:
                    log.warning("could not make the journal durable (%s); it is complete on disk unless the machine "
                                "crashes now", error.strerror or error)
                self._notify("on_finish", result)
            finally:
                self.backend.close()

    def _last_views(self) -> None:
        """The views once more as the tuner stops early (docs/architecture.md: the journal has
        every finished trial already, so a write that fails here is said, not raised)."""
        try:
            self.records.close()
        except OSError as error:
            log.warning("could not rewrite the view files in %s (%s); `autofinetune summary` and --resume read the journal",
                        self.output_dir, error.strerror or error)

    def _finished_trials(self) -> Iterator[TrialRecord]:
        """Yield trials as they end for good (failed attempts retried, every result recorded);
        the policy may launch more while this runs."""
        while self._pending:
            outcomes = self.backend.wait_any(self._until_next_look())
            self._look_at_intermediates()
            for outcome in outcomes:
                record = self._pending[outcome.spec.key]
                self._read_intermediates(outcome.spec.key, final=True)  # every report before the end
                if self._maybe_retry(record, outcome):
                    continue
                del self._pending[outcome.spec.key]
                self._complete(record, outcome)
                yield record

    # -- intermediate results (docs/pruning.md) --------------------------------------------------
    def _until_next_look(self) -> Optional[float]:
        """How long the backend may block before the intermediate files are due a look."""
        if not self._readers:
            return None
        return max(0.0, self._next_look - time.monotonic())

    def _look_at_intermediates(self) -> None:
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + (PRUNING_LOOK if self.config.pruner != "none" else CURVES_LOOK)
        for key in list(self._readers):
            self._read_intermediates(key)

    def _read_intermediates(self, key: str, final: bool = False) -> None:
        """Journal, show and judge what the trial reported since the last look; ask it to stop
        when the pruner says so. `final`: the trial has ended, so this is the last look."""
        entry = self._readers.pop(key, None) if final else self._readers.get(key)
        if entry is None:
            return
        record, reader = entry
        reports = reader.read()
        if reports:
            attempt = (record.round, record.index, record.attempt)
            curve = self.curves.setdefault((record.round, record.index), [])
            for step, score in reports:
                self.journal.append(IntermediateEvent(round=record.round, index=record.index, attempt=record.attempt,
                                                      step=step, score=score), durable=False)
                curve.append((step, score))
                record.last_step = step
                if record.pruned_step is None and self.pruner.report(attempt, step, score):
                    record.pruned_step = step
                    self._ask_to_stop(record, step, score)
            self._notify("on_intermediate", record, list(reports))
        if reader.rejected and not reader.said_rejected:
            reader.said_rejected = True
            self.warn(f"[round {record.round}] trial {record.index}: ignored a line of its intermediate results "
                      f"({reader.first_problem}); see docs/pruning.md for the format")
        if reader.count >= MAX_REPORTS and not reader.said_full:
            reader.said_full = True
            self.warn(f"[round {record.round}] trial {record.index}: reported {MAX_REPORTS} intermediate results; "
                      f"the rest are ignored (report every few hundred steps, not every step)")

    def _ask_to_stop(self, record: TrialRecord, step: int, score: float) -> None:
        """The pruner's decision: the stop file, which the trial's next report sees and whose
        grace the runner enforces where the trial runs (this machine or a Dask worker)."""
        stop_path = self._stop_path(record)
        try:
            fd = os.open(stop_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
            os.write(fd, f"pruned at step {step}\n".encode())
            os.close(fd)
        except FileExistsError:
            pass
        self.echo(f"[round {record.round}] trial {record.index} pruned at step {step} (intermediate score {score:.6g}); "
                  f"asked to stop, SIGTERM in {self.config.prune_grace:g}s if it does not")

    def _stop_path(self, record: TrialRecord) -> Path:
        return self.output_dir / f"round{record.round}" / f"stop-{record.index}"

    def _stop_running_trials(self) -> None:
        """TERM every running trial group, KILL after a short grace (a second Ctrl-C: at once).

        Stopped trials are journaled as interrupted so --resume runs them again; one that ended
        on its own meanwhile is kept as finished. A write that fails here is said, not hidden.
        """
        self._stopping = True
        try:
            outcomes = self.backend.shutdown(grace=min(self.config.kill_grace, 3.0))
        except KeyboardInterrupt:
            self.backend.kill_now()
            outcomes = self.backend.shutdown(grace=0.0)
        for outcome in outcomes:
            record, _ = self._specs[outcome.spec.key]
            try:
                self._read_intermediates(outcome.spec.key, final=True)
                if outcome.status == Status.INTERRUPTED:
                    self.journal.append(InterruptedEvent(round=record.round, index=record.index))
                else:
                    self._complete(record, outcome)
            except OSError as error:
                log.warning("could not journal round %d trial %d while stopping (%s); --resume runs it again",
                            record.round, record.index, error.strerror or error)

    def _is_output_error(self, error: OSError) -> bool:
        name = getattr(error, "filename", None)
        if name and str(name).startswith(str(self.output_dir)):
            return True
        return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)

    # -- one trial -----------------------------------------------------------------------------
    def launch(self, round_index: int, index: int, point: np.ndarray) -> TrialRecord:
        """Plan, journal and hand one candidate to the backend."""
        self.round_index = max(self.round_index, round_index)
        round_dir = self.output_dir / f"round{round_index}"
        round_dir.mkdir(exist_ok=True)
        params = self.space.decode(point)
        plan = self.evaluator.plan(round_index, index)
        record = TrialRecord(round=round_index, index=index, params=params, point=[float(x) for x in point],
                             status=Status.QUEUED, parent=plan.parent, model_dir=str(round_dir / f"model-{index}"))
        self._evaluator_args[record_key(round_index, index)] = plan.args
        if plan.parent:
            self._say_parent(record)
        self._submit(record)
        self._pending[record_key(round_index, index)] = record
        self._notify("on_trial_started", dataclasses.replace(record))
        return record

    def _say_parent(self, record: TrialRecord) -> None:
        """Which model a trial resumes from and how its hyperparameters differ (PBT's exploit and
        explore, in one line)."""
        parent = record.parent or {}
        found = self.records.find(parent.get("round"), parent.get("index"))
        before = found.params if found is not None else None
        def short(value: Any) -> str:
            return f"{value:.4g}" if isinstance(value, float) else str(value)

        changes = []
        for p in self.space.params:
            now = short(record.params[p.name])
            old = short(before[p.name]) if before and p.name in before else "?"
            changes.append(f"{p.name} {old} -> {now}" if old != now else f"{p.name} {now}")
        score = parent.get("score")
        shown = f" (score {score:.6g})" if isinstance(score, (int, float)) else ""
        self.echo(f"[round {record.round}] trial {record.index} resumes from round{parent.get('round')}/model-{parent.get('index')}"
                  f"{shown}: {', '.join(changes)}")

    def _submit(self, record: TrialRecord) -> None:
        """Queue one attempt of a trial: a fresh model dir and its own log, journaled first."""
        round_dir = self.output_dir / f"round{record.round}"
        model_dir = Path(record.model_dir)
        # A retry or a re-run: its earlier attempt never finished ok, and may have left a FIFO or a
        # symlink where its folder was; removed, never followed (docs/security.md). The backend
        # makes the log (runner.prepare_files), removing what a trial planted at its name.
        clear_path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        suffix = f".retry{record.attempt}" if record.attempt else ""
        record.log_path = str(round_dir / f"log-{record.index}{suffix}.info")
        key = record_key(record.round, record.index)
        argv = self.command.argv(record.params, str(model_dir), self._evaluator_args.get(key, []))
        pruning = self.config.pruner != "none"
        spec = TrialSpec(key=key, argv=argv, log_path=Path(record.log_path), result_path=round_dir / f"result-{record.index}.json",
                         cwd=self.config.cwd, timeout=self.config.timeout, env=self._trial_env(model_dir),
                         intermediate_path=round_dir / f"intermediate-{record.index}.jsonl",
                         stop_path=self._stop_path(record) if pruning else None, prune_grace=self.config.prune_grace)
        record.last_step = record.pruned_step = None
        record.told_score = None
        self.curves[(record.round, record.index)] = []
        self._readers[key] = (record, IntermediateReader(spec.intermediate_path, spec.token))  # type: ignore[arg-type]
        self.journal.append(QueuedEvent(round=record.round, index=record.index, attempt=record.attempt, params=record.params,
                                        point=record.point, argv=argv, parent=record.parent, token_sha256=token_digest(spec.token),
                                        result_path=str(spec.result_path), log_path=record.log_path, model_dir=record.model_dir),
                            durable=False)  # see journal.NOT_FSYNCED
        self._specs[key] = (record, spec)
        self.backend.submit(spec)

    def _on_process_start(self, spec: TrialSpec, slot: Slot, identity: ProcessIdentity) -> None:
        record, _ = self._specs[spec.key]
        record.status = Status.RUNNING
        record.slot, record.gpu = slot.label, slot.gpu
        try:
            self.journal.append(StartedEvent(round=record.round, index=record.index, attempt=record.attempt, pid=identity.pid,
                                             start_ticks=identity.start_ticks, slot=slot.label, worker=identity.worker,
                                             host=identity.host, boot_id=identity.boot_id, cookie=identity.cookie,
                                             cgroup=identity.cgroup), durable=False)
        except OSError as error:
            # A start answered while the search stops for an output error (a full disk): the
            # trial is being stopped with the rest, and the error is already being said.
            if not self._stopping:
                raise
            log.warning("could not journal the start of round %d trial %d while stopping (%s)", record.round, record.index,
                        error.strerror or error)

    def _maybe_retry(self, record: TrialRecord, outcome: TrialOutcome) -> bool:
        if (outcome.status not in (Status.FAILED, Status.TIMEOUT) or record.attempt >= self.config.max_retries
                or record.pruned_step is not None):  # a pruned trial is not run again, however it ended
            return False
        self.journal.append(RetryEvent(round=record.round, index=record.index, attempt=record.attempt,
                                       status=outcome.status, message=outcome.message, log_path=record.log_path))
        self.pruner.finished((record.round, record.index, record.attempt), "failed")
        self.echo(f"[round {record.round}] trial {record.index} {outcome.status} ({outcome.message}); "
                  f"retry {record.attempt + 1} of {self.config.max_retries}, log kept in {record.log_path}")
        record.attempt += 1
        self._submit(record)
        return True

    def _complete(self, record: TrialRecord, outcome: TrialOutcome) -> None:
        record.status = Status(outcome.status)
        record.score = outcome.score
        record.exit_code = outcome.exit_code
        record.duration = outcome.duration
        record.slot = outcome.slot.label
        record.gpu = outcome.slot.gpu
        record.message = outcome.message
        # The tuner's decision makes a trial pruned, not how far it got before it heard of it:
        # that depends on timing, and a resumed search must judge its trials as the first run did.
        if record.pruned_step is not None and record.status != Status.INTERRUPTED:
            record.status = Status.PRUNED
        if record.status == Status.PRUNED:
            self._judge_pruned(record)
        self.journal.append(FinishEvent(trial=record))
        if record.ok and record.score is not None:
            self.worst_final = record.score if self.worst_final is None else min(self.worst_final, record.score)
        if record.status != Status.INTERRUPTED:
            self.pruner.finished((record.round, record.index, record.attempt),
                                 str(record.status) if record.status in (Status.OK, Status.PRUNED) else "failed")
        is_best = self.records.add(record)
        self.records.finished(record)
        if is_best:
            self.records.update_best_model()
        params = " ".join(f"{p.name}={p.format(record.params[p.name])}" for p in self.space.params)
        if record.ok:
            self.echo(f"[round {record.round}] trial {record.index} ok: score {record.score:.6g} in {record.duration or 0:.1f}s on {record.slot}"
                      f"{' (new best)' if is_best else ''}: {params}")
        elif record.pruned:
            shown = f"last score {record.score:.6g}, " if record.score is not None else ""
            self.echo(f"[round {record.round}] trial {record.index} pruned: {record.message} ({shown}{record.duration or 0:.1f}s on "
                      f"{record.slot}): {params}")
        else:
            tail = log_tail(record.log_path) if record.status == Status.FAILED else ""
            self._failure_tails[(record.round, record.index)] = tail
            self.warn(f"WARNING:Program which was ran with hyperparameters as {params} was crashed!"
                      + (f" Its last line: {tail}" if tail else ""))
            self.echo(f"[round {record.round}] trial {record.index} {record.status}: {record.message}; see {record.log_path}")
            self._hint_missing_options(record, tail)
        self._notify("on_trial_finished", record, is_best)

    def _judge_pruned(self, record: TrialRecord) -> None:
        """A pruned trial's score is the intermediate score the pruner judged (what it reported
        after that depends on timing); the strategy is told that score capped at the worst final
        score so far, so a trial stopped early never looks better than one that finished
        (docs/pruning.md, "What a pruned trial counts for")."""
        curve = self.curves.get((record.round, record.index)) or []
        if record.pruned_step is not None:
            curve = [(step, score) for step, score in curve if step <= record.pruned_step]
        last = next((score for _, score in reversed(curve) if math.isfinite(score)), None)
        record.score = last
        if last is not None:
            record.told_score = last if self.worst_final is None else min(last, self.worst_final)
        at = record.pruned_step if record.pruned_step is not None else record.last_step
        record.message = (f"stopped early by the pruner at step {at}" if at is not None
                          else "stopped early: a stop file appeared that the tuner did not write")

    def _hint_missing_options(self, record: TrialRecord, tail: str) -> None:
        """Say once, plainly, when trials die because train.py lacks an option the tuner passes
        (the preflight could not tell: a script that is not argparse, or builds it late)."""
        if record.status != Status.FAILED or self._hinted or "unrecognized arguments:" not in tail:
            return
        unknown = tail.split("unrecognized arguments:")[-1].split()
        flags = {f"--{name}" for name in self.command.tuner_options}
        ours = sorted({a.split("=")[0] for a in unknown if a.split("=")[0] in flags})
        if not ours:
            return
        self._hinted = True
        evaluator_flags = {f"--{name}" for name in self.evaluator.options}
        fix = ("add them to its argparse options (README, 'The training script')"
               + (", or run with --evaluator=fulltrail" if evaluator_flags & set(ours) else ""))
        log.warning("%s does not accept %s, which the tuner passes; %s", self.config.script, ", ".join(ours), fix)

    # -- rounds --------------------------------------------------------------------------------
    def close_round(self, round_index: int, trials: Sequence[TrialRecord]) -> None:
        """A round is complete: journal it, tell the views, print the original's round line."""
        self.rounds_complete.add(round_index)
        self.journal.append(RoundEvent(round=round_index, evaluator=self.evaluator.state_dict()))
        self.records.refresh(force=True)
        self._notify("on_round_finished", round_index, list(trials))
        scores = [t.score for t in trials if t.ok]
        if scores:
            self.echo(f"The local best eval value in the {round_index}-th round is {max(scores)}.")
        else:
            pruned = sum(1 for t in trials if t.pruned)
            self.echo(f"The local best eval value in the {round_index}-th round is unknown: "
                      + (f"no trial of the round finished ({pruned} pruned, {len(trials) - pruned} failed)." if pruned
                         else "every trial of the round failed."))

    def _result(self) -> SearchResult:
        """The original's closing lines, the schedule of the best model, the failures grouped by
        cause; SearchFailed (exit 1) when no trial succeeded or a whole round failed."""
        trials = self.records.trials
        failures = self._failures_line()
        best = self.records.best
        if best is None:
            if failures:
                self.echo(failures)
            first = self.records.ordered()[0]
            raise SearchFailed(f"no trial succeeded ({len(trials)} of {len(trials)} failed; first: {first.message}); "
                               f"see the logs, e.g. {first.log_path}")
        result = SearchResult(self.output_dir, best, list(trials), self.seed)
        self.echo("The final best hyperparameters:")
        for param in self.space.params:
            self.echo(f"{param.name}={param.format(best.params[param.name])}")
        self.echo(f"The final best eval score is {best.score}.")
        self.echo(f"The final best model parameters are saved as {result.best_model_dir} .")
        self._write_schedule(best)
        if failures:
            self.echo(failures)
        if self.records.pruned:
            self.echo(f"The pruner stopped {self.records.pruned} of {len(trials)} trials early; "
                      f"`autofinetune summary {self.output_dir}` estimates the trial time it saved.")
        dead = [r for r in sorted(self.rounds_complete) if not any(t.ok or t.pruned for t in trials if t.round == r)]
        if dead:
            raise SearchFailed(f"every trial of round {dead[0]} failed" + (f" (and of {len(dead) - 1} more round(s))" if len(dead) > 1 else "")
                               + f"; the best of the others is above, but the search is not a success; see the logs in "
                                 f"{self.output_dir / f'round{dead[0]}'}", result=result)
        return result

    def _failures_line(self) -> str:
        """`3 of 20 trials failed: 2 x exit code 2 (error: unrecognized ...), 1 x timeout: ...`."""
        failed = [t for t in self.records.trials if not t.ok and not t.pruned]
        if not failed:
            return ""
        causes: Dict[str, int] = {}
        for trial in failed:
            if trial.status == Status.FAILED:
                key = (trial.round, trial.index)
                tail = self._failure_tails[key] if key in self._failure_tails else log_tail(trial.log_path)
                cause = f"{trial.message} ({tail})" if tail else trial.message
            else:
                cause = f"{trial.status}: {trial.message}"
            causes[cause] = causes.get(cause, 0) + 1
        grouped = ", ".join(f"{count} x {cause}" for cause, count in sorted(causes.items(), key=lambda item: (-item[1], item[0])))
        return f"{len(failed)} of {len(self.records.trials)} trials failed: {grouped}"

    def _write_schedule(self, best: TrialRecord) -> None:
        """The best model's lineage as a schedule: printed, and in best_schedule.json, which
        `autofinetune retrain` replays."""
        resume_epochs = self.config.resume_epochs if self.evaluator.options else None
        steps = schedule(best, self.records.trials, resume_epochs)
        write_atomic(self.output_dir / SCHEDULE_FILE, json.dumps({"note": SCHEDULE_NOTE, "evaluator": self.evaluator.name,
                                                                  "steps": steps}, indent=1, allow_nan=False, default=str) + "\n")
        if len(steps) < 2:
            return
        self.echo(f"The best model's lineage: {' -> '.join(str(step['model']) for step in steps)}")
        self.echo(f"It was trained by this schedule, which `autofinetune retrain {self.output_dir} --output_dir NEW` replays "
                  f"(the last round's values alone are not the recipe):")
        for step in steps:
            values = " ".join(f"{p.name}={p.format(step['params'][p.name])}" for p in self.space.params)  # type: ignore[index]
            epochs = "the script's own epochs" if step["epochs"] is None else f"--epochs={step['epochs']} more"
            self.echo(f"  {step['model']}: {values}, {epochs}, score {float(step['score']):.6g}")  # type: ignore[arg-type]


def record_key(round_index: int, index: int) -> str:
    return f"r{round_index}-i{index}"


__all__ = ["Search", "SearchConfig", "SearchResult", "SearchSnapshot", "SearchObserver", "SearchInterrupted", "OutputError",
           "default_output_dir", "prepare_output_dir"]
