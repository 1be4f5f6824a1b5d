"""The search loop: ask the strategy, plan with the evaluator, run, record, tell.

Data flows one way: strategy (what to try) -> evaluator (how) -> scheduler (where, when) ->
records (what happened) -> views (what people see). Rounds are generations of the strategy,
but inside a round the scheduler is a work queue: a freed slot takes the next candidate at once.
"""
from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import __version__
from .backends import BACKENDS, make_scheduler
from .devices import Slot
from .errors import AutofinetuneError, ConfigError, SearchFailed
from .evaluators import lineage, make_evaluator
from .records import BEST_MODEL, JOURNAL, Journal, SearchRecords, TrialRecord
from .scheduler import (FAILED, INTERRUPTED, INVALID, OK, TIMEOUT, ProcessIdentity, TrialOutcome,
                        TrialSpec, judge_score, read_result, stop_stale_group)
from .space import SearchSpace
from .strategies import check_strategy, make_strategy

log = logging.getLogger("autofinetune")


@dataclass
class SearchConfig:
    script: Path
    space: SearchSpace
    output_dir: Path
    slots: List[Slot]
    seed: Optional[int] = None
    popsize: int = 5
    rounds: int = 10
    evaluator: str = "populationbased"
    strategy: str = "pshe2"
    passthrough: List[Tuple[str, str]] = field(default_factory=list)
    timeout: Optional[float] = None
    max_retries: int = 0
    kill_grace: float = 5.0
    backend: str = "local"
    scheduler_address: Optional[str] = None
    asynchronous: bool = False
    cwd: str = field(default_factory=os.getcwd)

    def validate(self) -> None:
        if self.popsize < 1:
            raise ConfigError(f"--popsize={self.popsize}: must be at least 1")
        if self.rounds < 1:
            raise ConfigError(f"--round={self.rounds}: must be at least 1")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout={self.timeout}: must be a positive number of seconds")
        if self.max_retries < 0:
            raise ConfigError(f"--max_retries={self.max_retries}: must be 0 or more")
        if not self.kill_grace >= 0:
            raise ConfigError(f"--kill_grace={self.kill_grace}: must be 0 or more seconds")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend={self.backend!r}: unknown backend; choose one of {', '.join(BACKENDS)}")
        if self.scheduler_address and self.backend != "dask":
            raise ConfigError(f"--scheduler_address={self.scheduler_address} needs --backend=dask; fix: add --backend=dask or drop the address")
        check_strategy(self.strategy, self.space.dim, self.popsize)
        make_evaluator(self.evaluator)
        self.command()

    def command(self) -> List[str]:
        """How to start the script: `.py` with the tuner's own Python, anything else directly."""
        script = self.script
        if not script.is_file():
            raise ConfigError(f"{script}: training script not found; fix: pass the path of your train.py as the first argument")
        if script.suffix == ".py":
            return [sys.executable, str(script)]
        if not os.access(script, os.X_OK):
            raise ConfigError(f"{script}: not executable; fix: chmod +x it (or give a .py script, which runs with {sys.executable})")
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


def default_output_dir() -> Path:
    return Path(f"output_{_dt.datetime.now().strftime('%Y%m%d%H%M%S')}")


def prepare_output_dir(path: Path) -> Path:
    """Refuse to mix two searches in one folder; prove the folder is writable before any trial."""
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output_dir={path}: exists and is not a directory; fix: choose another path")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"--output_dir={path}: not empty (a search already wrote there); fix: choose a new --output_dir or use --resume to continue that search")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"--output_dir={path}: cannot write there ({error.strerror or error}); fix: choose a writable directory with free space") from None
    return path


class SearchObserver:
    """What views (VisualDL, progress, ...) hear of a search; every hook is optional.

    Observers run in the tuner's process after the journal has the event, so a slow or broken
    view can never lose a result; an exception in one is logged and the view is dropped.
    """

    def on_start(self, search: "Search") -> None: ...

    def on_trial_started(self, search: "Search", record: TrialRecord) -> None: ...

    def on_trial_finished(self, search: "Search", record: TrialRecord, is_best: bool) -> None: ...

    def on_round_finished(self, search: "Search", round_index: int, trials: Sequence[TrialRecord]) -> None: ...

    def on_finish(self, search: "Search", result: Optional["SearchResult"]) -> None: ...


@dataclass
class JournalState:
    """What a journal says happened: the replay that `--resume` and `summary` build on."""

    config: Optional[Dict[str, Any]] = None
    queued: Dict[Tuple[int, int], Dict[str, Any]] = field(default_factory=dict)
    started: Dict[Tuple[int, int], Dict[str, Any]] = field(default_factory=dict)
    finished: Dict[Tuple[int, int], TrialRecord] = field(default_factory=dict)
    rounds: Dict[int, Dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def replay(cls, path: Path) -> "JournalState":
        state = cls()
        for event in Journal.read(path):
            kind = event.get("event")
            if kind == "start" and state.config is None:
                state.config = event.get("config")
            elif kind == "queued":
                state.queued[(event["round"], event["index"])] = event
                state.finished.pop((event["round"], event["index"]), None)
            elif kind == "started":
                state.started[(event["round"], event["index"])] = event
            elif kind == "finish":
                record = TrialRecord.from_json(event["trial"])
                state.finished[(record.round, record.index)] = record
            elif kind == "round":
                state.rounds[event["round"]] = event
        return state

    @property
    def last_round(self) -> int:
        return max(self.rounds) if self.rounds else -1


#: What may not change between a search and its --resume, and how to name it to the user.
RESUME_MUST_MATCH = [
    ("script", "the training script"),
    ("space_fingerprint", "the param file (--param_file content)"),
    ("strategy", "--tuning_strategy"),
    ("evaluator", "--evaluator"),
    ("popsize", "--popsize"),
    ("passthrough", "the trailing 'name value' arguments"),
    ("asynchronous", "--async"),
]


class SearchInterrupted(AutofinetuneError):
    """Ctrl-C or SIGTERM: the search stopped cleanly and can be resumed."""

    exit_code = 130


class Search:
    """One search, run once; `run()` returns a SearchResult or raises SearchFailed."""

    def __init__(self, config: SearchConfig, echo: Callable[[str], None] = print,
                 observers: Sequence[SearchObserver] = (), resume: bool = False) -> None:
        self.resuming = resume
        self.echo = echo
        self.replayed: Optional[JournalState] = None
        if resume:
            self.output_dir = config.output_dir.resolve()
            self.replayed = self._read_journal_for_resume(config)
        config.validate()
        self.config = config
        if config.seed is None:
            config.seed = secrets.randbelow(2**31 - 1) + 1
        if not resume:
            self.output_dir = prepare_output_dir(config.output_dir)
        self.space = config.space
        self.strategy = make_strategy(config.strategy, self.space.dim, self.space.init_unit(), config.popsize, config.seed)
        self.evaluator = make_evaluator(config.evaluator)
        self.records = SearchRecords(self.output_dir, self.space.names, header=self._header())
        self.journal = Journal(self.output_dir / JOURNAL)
        self.scheduler = make_scheduler(config.backend, config.slots, config.kill_grace, on_start=self._on_process_start,
                                        address=config.scheduler_address)
        self.started = time.monotonic()
        self.observers: List[SearchObserver] = list(observers)
        self.round_index = 0
        self._specs: Dict[str, Tuple[TrialRecord, TrialSpec]] = {}
        self._extra_argv: Dict[str, List[str]] = {}
        self._hinted = False  # the missing-option hint is said once per search

    def _notify(self, hook: str, *args: Any) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, hook)(self, *args)
            except Exception as error:  # a view must never take the search down
                log.warning("view %s failed in %s (%s: %s); it is switched off", type(observer).__name__, hook, type(error).__name__, error)
                self.observers.remove(observer)

    def _header(self) -> str:
        c = self.config
        return (f"# autofinetune search of {c.script} | strategy {c.strategy} | evaluator {c.evaluator} | "
                f"popsize {c.popsize} x round {c.rounds} | seed {c.seed}")

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> SearchResult:
        c = self.config
        start_round, done = 0, {}
        if self.resuming:
            start_round, done = self._restore()
            self.journal.append("resume", time=time.time(), config=self._config_json())
        else:
            self.journal.append("start", time=time.time(), config=self._config_json())
        where = getattr(self.scheduler, "description", None) or f"{len(c.slots)} slot(s) [{', '.join(s.label for s in c.slots)}]"
        self.echo(f"{'Resuming' if self.resuming else 'Tuning'} {c.script} over {', '.join(self.space.names)}: {c.popsize} candidates x {c.rounds} rounds "
                  f"on {where}, seed {c.seed}, output {self.output_dir}")
        self._notify("on_start")
        result: Optional[SearchResult] = None
        try:
            self._run_rounds(start_round, done)
            result = self._finish()
            return result
        except KeyboardInterrupt:
            self._stop_running_trials()
            interrupted = SearchInterrupted(
                f"interrupted; {len(self.records.trials)} finished trial(s) are saved in {self.output_dir}; "
                f"continue with the same command plus --resume")
            interrupted.output_dir = str(self.output_dir)
            raise interrupted from None
        except OSError as error:
            if not self._is_output_error(error):
                raise
            self._stop_running_trials()
            raise OutputError(
                f"cannot write to {self.output_dir} ({error.strerror or error}); every finished trial is in the journal; "
                f"free space or fix permissions, then rerun the same command with --resume") from None
        finally:
            try:
                self.journal.close()
                self._notify("on_finish", result)
            finally:
                self.scheduler.close()

    def _stop_running_trials(self) -> None:
        """Stop launching, TERM every running trial group, KILL after a short grace.

        A second Ctrl-C while waiting kills them at once. Stopped trials are journaled as
        interrupted so --resume runs them again.
        """
        try:
            outcomes = self.scheduler.shutdown(grace=min(self.config.kill_grace, 3.0))
        except KeyboardInterrupt:
            self.scheduler.kill_now()
            outcomes = self.scheduler.shutdown(grace=0.0)
        for outcome in outcomes:
            record, _ = self._specs[outcome.spec.key]
            try:
                if outcome.status == INTERRUPTED:
                    self.journal.append("interrupted", round=record.round, index=record.index, status=outcome.status)
                else:  # it ended on its own while we were stopping: a finished trial is kept
                    self._complete(record, outcome)
            except OSError:
                pass

    def _is_output_error(self, error: OSError) -> bool:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO):
            return True
        name = getattr(error, "filename", None)
        return bool(name) and str(name).startswith(str(self.output_dir))

    def _run_rounds(self, start_round: int, done: Dict[int, TrialRecord]) -> None:
        for round_index in range(start_round, self.config.rounds):
            self.round_index = round_index
            self._run_round(round_index, done if round_index == start_round else {})

    def _run_round(self, round_index: int, done: Dict[int, TrialRecord]) -> None:
        points = self.strategy.ask()
        round_dir = self.output_dir / f"round{round_index}"
        round_dir.mkdir(exist_ok=True)
        pending: Dict[str, TrialRecord] = {}
        for index, point in enumerate(points):
            if index in done:
                if not np.allclose(done[index].point, point):
                    log.warning("round %d trial %d: the strategy proposes a different point than before the interruption; keeping the finished trial", round_index, index)
                continue
            record = self._launch(round_index, index, point, round_dir)
            pending[record_key(round_index, index)] = record
        finished: List[TrialRecord] = list(done.values()) + list(self._finished_trials(pending))
        finished.sort(key=lambda t: t.index)
        self.strategy.tell(points, [t.loss for t in finished])
        notes = self.evaluator.observe(round_index, finished)
        if round_index + 1 < self.config.rounds:  # notes speak of the next round: none after the last
            for line in notes:
                self.echo(line)
        self.journal.append("round", round=round_index, strategy=self.strategy.state_dict(), evaluator=self.evaluator.state_dict())
        self._notify("on_round_finished", round_index, finished)
        scores = [t.score for t in finished if t.ok]
        if scores:
            self.echo(f"The local best eval value in the {round_index}-th round is {max(scores)}.")
        else:
            self.echo(f"The local best eval value in the {round_index}-th round is unknown: every trial of the round failed.")

    def _finished_trials(self, pending: Dict[str, TrialRecord]) -> Iterator[TrialRecord]:
        """Yield trials as they end for good (failed attempts retried, every result recorded).

        `pending` may grow while this runs (the asynchronous mode launches as trials end).
        """
        while pending:
            for outcome in self.scheduler.wait_any():
                record = pending[outcome.spec.key]
                if self._maybe_retry(record, outcome):
                    continue
                del pending[outcome.spec.key]
                self._complete(record, outcome)
                yield record

    def _launch(self, round_index: int, index: int, point: np.ndarray, round_dir: Path) -> TrialRecord:
        params = self.space.decode(point)
        model_dir = round_dir / f"model-{index}"
        plan = self.evaluator.plan(round_index, index)
        record = TrialRecord(round=round_index, index=index, params=params, point=[float(x) for x in point],
                             status="queued", parent=plan.parent, model_dir=str(model_dir))
        self._extra_argv[record_key(round_index, index)] = plan.extra_argv
        self._submit(record)
        self._notify("on_trial_started", record)
        return record

    def _submit(self, record: TrialRecord) -> None:
        """Queue one attempt of a trial: a fresh model dir and its own log, journaled first."""
        round_dir = self.output_dir / f"round{record.round}"
        model_dir = Path(record.model_dir)
        if model_dir.exists():  # a retry or a re-run: its earlier attempt never finished ok
            shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        suffix = f".retry{record.attempt}" if record.attempt else ""
        record.log_path = str(round_dir / f"log-{record.index}{suffix}.info")
        argv = (self.config.command() + self.space.argv(record.params) + [f"--saved_params_dir={model_dir}"]
                + self._extra_argv.get(record_key(record.round, record.index), []) + [f"--{k}={v}" for k, v in self.config.passthrough])
        spec = TrialSpec(key=record_key(record.round, record.index), argv=argv, log_path=Path(record.log_path),
                         result_path=round_dir / f"result-{record.index}.json", cwd=self.config.cwd, timeout=self.config.timeout)
        self.journal.append("queued", round=record.round, index=record.index, attempt=record.attempt, params=record.params,
                            point=record.point, argv=argv, parent=record.parent, token=spec.token,
                            result_path=str(spec.result_path), log_path=record.log_path, model_dir=record.model_dir)
        self._specs[spec.key] = (record, spec)
        self.scheduler.submit(spec)

    def _on_process_start(self, spec: TrialSpec, slot: Slot, identity: ProcessIdentity) -> None:
        record, _ = self._specs[spec.key]
        record.status = "running"
        record.slot, record.gpu = slot.label, slot.gpu
        where = {"worker": identity.worker} if identity.worker else {}  # a Dask worker's machine, not this one
        self.journal.append("started", round=record.round, index=record.index, attempt=record.attempt,
                            pid=identity.pid, start_ticks=identity.start_ticks, slot=slot.label, **where)

    def _maybe_retry(self, record: TrialRecord, outcome: TrialOutcome) -> bool:
        if outcome.status not in (FAILED, TIMEOUT) or record.attempt >= self.config.max_retries:
            return False
        self.journal.append("retry", round=record.round, index=record.index, attempt=record.attempt,
                            status=outcome.status, message=outcome.message, log_path=record.log_path)
        self.echo(f"[round {record.round}] trial {record.index} {outcome.status} ({outcome.message}); "
                  f"retry {record.attempt + 1} of {self.config.max_retries}, log kept in {record.log_path}")
        record.attempt += 1
        self._submit(record)
        return True

    def _complete(self, record: TrialRecord, outcome: TrialOutcome) -> None:
        record.status = outcome.status
        record.score = outcome.score
        record.exit_code = outcome.exit_code
        record.duration = outcome.duration
        record.slot = outcome.slot.label
        record.gpu = outcome.slot.gpu
        record.message = outcome.message
        self._record_finished(record)

    def _record_finished(self, record: TrialRecord) -> None:
        self.journal.append("finish", trial=record.to_json())
        is_best = self.records.add(record)
        self.records.write_views()
        if is_best:
            self.records.update_best_model()
        params = " ".join(f"{p.name}={p.format(record.params[p.name])}" for p in self.space.params)
        if record.ok:
            self.echo(f"[round {record.round}] trial {record.index} ok: score {record.score:.6g} in {record.duration or 0:.1f}s on {record.slot}"
                      f"{' (new best)' if is_best else ''}: {params}")
        else:
            print(f"WARNING:Program which was ran with hyperparameters as {params} was crashed!", file=sys.stderr, flush=True)
            self.echo(f"[round {record.round}] trial {record.index} {record.status}: {record.message}; see {record.log_path}")
            self._hint_missing_options(record)
        self._notify("on_trial_finished", record, is_best)

    def _hint_missing_options(self, record: TrialRecord) -> None:
        """Say once, plainly, when trials die because train.py lacks an option the tuner passes.

        The commonest first-run failure: a script without --model_path/--epochs under the
        population-based evaluator (the default) crashes in every round after the first.
        """
        if record.status != FAILED or self._hinted:
            return
        try:
            with open(record.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 4096))
                tail = handle.read().decode(errors="replace")
        except OSError:
            return
        if "unrecognized arguments:" not in tail:
            return
        unknown = tail.split("unrecognized arguments:")[-1].strip().splitlines()[0]
        ours = [a for a in unknown.split() if a.split("=")[0] in ("--model_path", "--epochs", "--saved_params_dir")]
        if not ours:
            return
        self._hinted = True
        fix = ("add them to its argparse options (see the README's training-script contract)"
               + (", or run with --evaluator=fulltrail" if any(a.startswith(("--model_path", "--epochs")) for a in ours) else ""))
        log.warning("%s does not accept %s, which the tuner passes; %s", self.config.script,
                    ", ".join(sorted({a.split("=")[0] for a in ours})), fix)

    def _finish(self) -> SearchResult:
        best = self.records.best
        if best is None:
            first = self.records.ordered()[0]
            raise SearchFailed(f"all {len(self.records.trials)} trials failed (first: {first.message}); see the logs, e.g. {first.log_path}")
        result = SearchResult(self.output_dir, best, list(self.records.trials), self.config.seed)
        self.echo("The final best hyperparameters:")
        for param in self.space.params:
            self.echo(f"{param.name}={param.format(best.params[param.name])}")
        self.echo(f"The final best eval score is {best.score}.")
        self.echo(f"The final best model parameters are saved as {result.best_model_dir} .")
        if best.parent:
            self.echo(f"The best model's lineage: {' -> '.join(lineage(best, self.records.trials, str(self.output_dir)))}")
        return result

    def _config_json(self) -> Dict[str, Any]:
        c = self.config
        return {"script": str(c.script), "space": self.space.to_json(), "space_fingerprint": self.space.fingerprint(),
                "space_source": self.space.source, "popsize": c.popsize, "rounds": c.rounds, "evaluator": c.evaluator,
                "strategy": c.strategy, "seed": c.seed, "passthrough": [list(p) for p in c.passthrough], "timeout": c.timeout,
                "max_retries": c.max_retries, "slots": [s.label for s in c.slots], "cwd": c.cwd,
                "asynchronous": c.asynchronous, "version": __version__}

    # -- resume -----------------------------------------------------------------------------
    def _read_journal_for_resume(self, config: SearchConfig) -> JournalState:
        path = self.output_dir / JOURNAL
        if not path.is_file():
            raise ConfigError(f"--resume: {path} not found; fix: pass the --output_dir of an earlier search (or drop --resume to start a new one)")
        state = JournalState.replay(path)
        if state.config is None:
            raise ConfigError(f"--resume: {path} has no start record; fix: start a new search in an empty --output_dir")
        old = state.config
        new = {"script": str(config.script), "space_fingerprint": config.space.fingerprint(), "strategy": config.strategy,
               "evaluator": config.evaluator, "popsize": config.popsize, "passthrough": [list(p) for p in config.passthrough],
               "asynchronous": config.asynchronous}
        for key, label in RESUME_MUST_MATCH:
            if old.get(key, False if key == "asynchronous" else None) != new[key]:
                shown_old = old.get("space_source") if key == "space_fingerprint" else old.get(key)
                shown_new = config.space.source if key == "space_fingerprint" else new[key]
                raise ConfigError(f"--resume: {label} differs from the interrupted search ({shown_old!r} then, {shown_new!r} now); "
                                  f"fix: resume with the original settings, or start a new search in another --output_dir")
        if config.seed is not None and config.seed != old.get("seed"):
            raise ConfigError(f"--resume: --seed={config.seed} differs from the interrupted search's seed {old.get('seed')}; fix: drop --seed or pass --seed={old.get('seed')}")
        config.seed = old.get("seed")
        if old.get("version") != __version__:
            log.warning("--resume: the search was started with autofinetune %s, this is %s; resuming anyway",
                        old.get("version", "before 0.1"), __version__)
        return state

    def _restore(self) -> Tuple[int, Dict[int, TrialRecord]]:
        """Rebuild the search from its journal: which round to continue, what is already done."""
        state = self.replayed
        assert state is not None
        self._stop_leftovers(state)
        last = state.last_round
        if last >= 0:
            self.strategy.load_state_dict(state.rounds[last]["strategy"])
            self.evaluator.load_state_dict(state.rounds[last]["evaluator"])
        current = last + 1
        done: Dict[int, TrialRecord] = {}
        for (round_index, index), record in sorted(state.finished.items()):
            if round_index < current:
                self.records.add(record)
            elif round_index == current and record.status != INTERRUPTED:
                self.records.add(record)
                done[index] = record
        for (round_index, index), queued in sorted(state.queued.items()):
            if round_index != current or index in done:
                continue
            recovered = self._recover_reported(queued)
            if recovered is not None:
                self.journal.append("finish", trial=recovered.to_json())
                self.records.add(recovered)
                done[index] = recovered
        rerun = sum(1 for (r, i) in state.queued if r == current and i not in done)
        self.echo(f"Resuming from {JOURNAL}: {len(self.records.trials)} finished trial(s) kept, "
                  f"round {current} continues with {rerun} trial(s) to re-run and {self.config.popsize - len(done) - rerun} still to start.")
        if self.records.trials:
            self.records.write_views()
            if self.records.best is not None:
                self.records.update_best_model()
        return current, done

    def _stop_leftovers(self, state: JournalState) -> None:
        """Stop what still runs of trials the dead tuner started and never saw finish."""
        for key, event in state.started.items():
            if key not in state.finished and self._stop_stale(event):
                where = f" on {event['worker']}" if event.get("worker") else ""
                self.echo(f"Stopped a leftover process group of round {key[0]} trial {key[1]} from the interrupted run (pid {event['pid']}{where}).")

    def _stop_stale(self, event: Dict[str, Any]) -> bool:
        """Stop a started-but-unfinished trial's group; one that ran on a Dask worker is never a local pid."""
        if event.get("worker"):
            remote = getattr(self.scheduler, "stop_stale_group", None)
            return bool(remote and remote(event["worker"], event["pid"], event.get("start_ticks")))
        return stop_stale_group(event["pid"], event.get("start_ticks"))

    def _recover_reported(self, queued: Dict[str, Any]) -> Optional[TrialRecord]:
        """A trial whose result file was complete when the tuner died counts as finished."""
        raw, why = read_result(Path(queued["result_path"]), queued.get("token"))
        if why:
            return None
        score, why = judge_score(raw)
        return TrialRecord(round=queued["round"], index=queued["index"], params=queued["params"], point=queued["point"],
                           status=OK if score is not None else INVALID, score=score, parent=queued.get("parent"),
                           log_path=queued["log_path"], model_dir=queued["model_dir"], attempt=queued.get("attempt", 0),
                           message=(why + "; " if why else "") + "exit status unknown: the trial reported before the tuner stopped")


def record_key(round_index: int, index: int) -> str:
    return f"r{round_index}-i{index}"


class OutputError(AutofinetuneError):
    """The output directory stopped accepting writes mid-search (disk full, permissions)."""


def parse_passthrough(items: Sequence[str]) -> List[Tuple[str, str]]:
    """`max_seq_len 128` -> [('max_seq_len', '128')]: the original's undashed trailing pairs."""
    if len(items) % 2:
        raise ConfigError(f"trailing arguments must be 'name value' pairs, got an odd count ({len(items)}: {' '.join(items)}); fix: give a value for every name, e.g. max_seq_len 128")
    pairs = []
    for name, value in zip(items[0::2], items[1::2]):
        if name.startswith("-") or not name:
            raise ConfigError(f"trailing argument {name!r}: pass names without dashes, e.g. 'max_seq_len 128' (reaches the trial as --max_seq_len=128)")
        pairs.append((name, value))
    return pairs
