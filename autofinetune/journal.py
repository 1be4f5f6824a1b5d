"""The journal: the search's record of truth, as typed events, and the one replay of it.

`journal.jsonl` holds one JSON object per line, appended before anything else depends on the
fact it records, and fsync'd where a power loss could otherwise lose it (see NOT_FSYNCED). Every reader — `--resume` (rounds and `--async`), `summary`,
`plot`, the VisualDL view of a resumed search, the progress line — goes through `replay()` and
reads the `SearchState` it builds; nobody parses the file on their own, so the readers cannot
disagree (see docs/architecture.md, "The journal").

Damage is handled the same way everywhere:

* a line is committed only with its newline. A last line without one (the tuner was killed,
  or the disk filled, mid-write) is *torn*: readers leave it out, and the writer cuts it off
  before its next append, so it is never glued to the next record;
* any other line that is not a known event with its fields stops the reader with one line
  naming the file and line number (a `JournalError`, exit code 2).

Schema versions: version 1 is what autofinetune 0.1.0 wrote up to commit 610e7f4 (no `schema`
field; `round`/`told` events carried a strategy state, which is now ignored because strategies
are restored by replaying their results); version 2 adds `schema` to `start` and writes a
`round` event for every completed round in `--async` mode too.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, FrozenSet, Iterable, List, Optional, Tuple, Type, Union

from .errors import ConfigError
from .records import TrialRecord
from .runner import Status
from .rules import best_of

log = logging.getLogger("autofinetune")

JOURNAL = "journal.jsonl"
SCHEMA_VERSION = 2

Key = Tuple[int, int]  # (round, index)


#: Events appended without their own fsync. A killed tuner loses nothing by that (a written line
#: is in the kernel's cache); only a crash of the machine could lose one, and then the trial it
#: speaks of (queued, started, reporting) died with the machine and simply runs again on
#: --resume. Each is made durable by the next fsync'd event anyway: `finish`, `retry`, `round`,
#: `told`, `interrupted`, `start` and `resume` fsync before the search goes on. Two fsyncs fewer
#: per trial (docs/overhead.md).
NOT_FSYNCED = ("queued", "started", "intermediate")


class JournalError(ConfigError):
    """A journal line that is neither a known event nor a torn last line."""


# -- the events ------------------------------------------------------------------------------
@dataclass
class Event:
    kind: ClassVar[str] = ""

    def to_json(self) -> Dict[str, Any]:
        data = {"event": self.kind}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            data[item.name] = value.to_json() if isinstance(value, TrialRecord) else value
        return data


@dataclass
class StartEvent(Event):
    """A new search: its whole configuration (see options.py for what it holds)."""

    kind: ClassVar[str] = "start"
    config: Dict[str, Any]
    time: float = 0.0
    schema: int = 1  # absent in version-1 journals


@dataclass
class ResumeEvent(Event):
    kind: ClassVar[str] = "resume"
    config: Dict[str, Any]
    time: float = 0.0


@dataclass
class QueuedEvent(Event):
    """One attempt of a trial handed to the backend: everything needed to judge or re-run it."""

    kind: ClassVar[str] = "queued"
    round: int
    index: int
    params: Dict[str, Any]
    point: List[float]
    result_path: str
    log_path: str
    model_dir: str
    attempt: int = 0
    argv: List[str] = field(default_factory=list)
    parent: Optional[Dict[str, Any]] = None
    token: Optional[str] = None  # version-1 journals: the token itself
    token_sha256: Optional[str] = None  # since then: only its digest (docs/security.md)


@dataclass
class StartedEvent(Event):
    """The attempt's process started: where, so a resume can stop what the dead tuner left."""

    kind: ClassVar[str] = "started"
    round: int
    index: int
    pid: int
    attempt: int = 0
    start_ticks: Optional[int] = None
    slot: Optional[str] = None
    worker: Optional[str] = None
    host: Optional[str] = None
    boot_id: Optional[str] = None
    #: The launcher's mark in the trial's and its descendants' environment (_launcher.cookie_holders).
    cookie: Optional[str] = None
    #: The trial's cgroup v2 folder, where the launcher fenced it with one (runner._stop_cgroup).
    cgroup: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        """Where it ran is written only when known: a local trial names no worker."""
        return {key: value for key, value in super().to_json().items() if value is not None or key in ("pid", "start_ticks")}


@dataclass
class FinishEvent(Event):
    kind: ClassVar[str] = "finish"
    trial: TrialRecord


@dataclass
class RetryEvent(Event):
    kind: ClassVar[str] = "retry"
    round: int
    index: int
    attempt: int = 0
    status: str = ""
    message: str = ""
    log_path: str = ""


@dataclass
class InterruptedEvent(Event):
    """The tuner's shutdown stopped this trial: --resume runs it again."""

    kind: ClassVar[str] = "interrupted"
    round: int
    index: int
    status: str = Status.INTERRUPTED


@dataclass
class IntermediateEvent(Event):
    """A trial attempt's intermediate result (docs/pruning.md). Written without its own fsync:
    the attempt's `finish` (or `retry`) is fsync'd after it, so every report of an attempt
    whose end is journaled is on disk; reports of an attempt that never ended are not needed."""

    kind: ClassVar[str] = "intermediate"
    round: int
    index: int
    step: int
    score: float
    attempt: int = 0


@dataclass
class RoundEvent(Event):
    """Every trial of the round has finished and the strategy was told (both modes)."""

    kind: ClassVar[str] = "round"
    round: int
    evaluator: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ToldEvent(Event):
    """`--async`: the strategy was told this trial's result (the order matters to its replay)."""

    kind: ClassVar[str] = "told"
    round: int
    index: int


EVENTS: Dict[str, Type[Event]] = {cls.kind: cls for cls in
                                  (StartEvent, ResumeEvent, QueuedEvent, StartedEvent, FinishEvent, RetryEvent,
                                   InterruptedEvent, RoundEvent, ToldEvent, IntermediateEvent)}
_INT_FIELDS = ("round", "index", "attempt", "pid", "step")


def decode(data: Any, where: str) -> Event:
    """One parsed line as its typed event; JournalError (one line, naming `where`) otherwise."""
    if not isinstance(data, dict):
        raise JournalError(f"{where}: not a journal event (a JSON object is expected); the journal is damaged; "
                           f"fix: restore it from a backup, or delete that line and resume")
    kind = data.get("event")
    cls = EVENTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise JournalError(f"{where}: unknown event {str(kind)[:40]!r} (written by another autofinetune version, or damaged); "
                           f"fix: use the autofinetune that wrote it, or delete that line")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {name: value for name, value in data.items() if name in known}
    for name, spec in known.items():
        if name not in values and spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise JournalError(f"{where}: the {kind!r} event lacks its field {name!r}; the journal is damaged; "
                               f"fix: restore it from a backup, or delete that line and resume")
    for name in _INT_FIELDS:
        if name in values and (isinstance(values[name], bool) or not isinstance(values[name], int)):
            raise JournalError(f"{where}: the {kind!r} event's field {name!r} is {str(values[name])[:40]!r}, not a whole number; "
                               f"the journal is damaged; fix: restore it from a backup, or delete that line")
    if cls is FinishEvent:
        values["trial"] = _decode_trial(values["trial"], where)
    elif cls is IntermediateEvent and (isinstance(values["score"], bool) or not isinstance(values["score"], (int, float))):
        raise JournalError(f"{where}: the 'intermediate' event's score is {str(values['score'])[:40]!r}, not a number; "
                           f"the journal is damaged; fix: restore it from a backup, or delete that line")
    elif cls in (StartEvent, ResumeEvent) and not isinstance(values["config"], dict):
        raise JournalError(f"{where}: the {kind!r} event's config is not an object; the journal is damaged")
    try:
        return cls(**values)
    except TypeError as error:  # pragma: no cover - guarded above
        raise JournalError(f"{where}: {error}") from None


def _decode_trial(data: Any, where: str) -> TrialRecord:
    if not isinstance(data, dict):
        raise JournalError(f"{where}: the 'finish' event's trial is not an object; the journal is damaged")
    for name in ("round", "index"):
        if isinstance(data.get(name), bool) or not isinstance(data.get(name), int):
            raise JournalError(f"{where}: the 'finish' event's trial lacks a whole-number {name!r}; the journal is damaged; "
                               f"fix: restore it from a backup, or delete that line")
    if not isinstance(data.get("params", {}), dict) or not isinstance(data.get("point", []), list):
        raise JournalError(f"{where}: the 'finish' event's trial has malformed params or point; the journal is damaged")
    return TrialRecord.from_json({"params": {}, "point": [], **data})


# -- reading ---------------------------------------------------------------------------------
def read_events(path: Path) -> Tuple[List[Event], bool]:
    """The committed events of a journal, and whether a torn last line was left out."""
    data = _read_regular(path)
    lines = data.split(b"\n")
    torn = bool(lines[-1])  # bytes after the last newline: a write that never completed
    events: List[Event] = []
    for number, raw in enumerate(lines[:-1], start=1):
        if not raw.strip():
            continue
        where = f"{path}: line {number}"
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise JournalError(f"{where} is not valid JSON (the journal is damaged); "
                               f"fix: restore it from a backup, or delete that line and resume") from None
        events.append(decode(parsed, where))
    return events, torn


#: A journal is a few hundred bytes per trial; more than this is not a journal of ours.
JOURNAL_LIMIT = 1 << 30


def _read_regular(path: Path) -> bytes:
    """The journal's bytes, from a regular file only: a FIFO or a device planted in its place
    must not block or flood the reader (docs/security.md)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as error:
        raise JournalError(f"{path}: cannot be read ({error.strerror or error}); fix: give the --output_dir of a search") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise JournalError(f"{path}: not a regular file; fix: give the --output_dir of a search")
        if info.st_size > JOURNAL_LIMIT:
            raise JournalError(f"{path}: {info.st_size} bytes, more than a journal holds; fix: give the --output_dir of a search")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


# -- the state a journal describes ---------------------------------------------------------------
@dataclass
class SearchState:
    """What the journal says happened, built by `replay()` and read by every consumer.

    A trial is keyed by (round, index); a newer `queued` for a key (a retry, or a re-run after
    --resume) supersedes what an earlier attempt left, so each key has one current story.
    """

    path: Path
    config: Dict[str, Any] = field(default_factory=dict)
    schema: int = 1
    started_at: Optional[float] = None
    resumed: int = 0
    torn: bool = False
    queued: Dict[Key, QueuedEvent] = field(default_factory=dict)
    started: Dict[Key, StartedEvent] = field(default_factory=dict)
    finished: Dict[Key, TrialRecord] = field(default_factory=dict)
    #: Keys in the order their (current) finish was journaled.
    finish_order: List[Key] = field(default_factory=list)
    retries: List[RetryEvent] = field(default_factory=list)
    interrupted: Dict[Key, InterruptedEvent] = field(default_factory=dict)
    round_events: Dict[int, RoundEvent] = field(default_factory=dict)
    told: List[Key] = field(default_factory=list)
    #: Intermediate results by attempt, (round, index, attempt) -> [(step, score)...].
    intermediates: Dict[Tuple[int, int, int], List[Tuple[int, float]]] = field(default_factory=dict)
    #: What the pruner heard, in journal order: ("report", attempt, (step, score)) and
    #: ("end", attempt, status) entries; `pruner_history` keeps those of attempts that ended.
    pruning_log: List[Tuple[str, Tuple[int, int, int], Any]] = field(default_factory=list)
    #: The last run ended with a shutdown (Ctrl-C, SIGTERM) that journaled its stopped trials.
    stopped_by_user: bool = False

    @property
    def has_start(self) -> bool:
        return bool(self.config)

    @property
    def popsize(self) -> Optional[int]:
        value = self.config.get("popsize")
        return value if isinstance(value, int) else None

    @property
    def rounds(self) -> Optional[int]:
        value = self.config.get("rounds")
        return value if isinstance(value, int) else None

    @property
    def asynchronous(self) -> bool:
        return bool(self.config.get("asynchronous", False))

    @property
    def trials(self) -> List[TrialRecord]:
        """Finished trials (interrupted ones included), in (round, index) order."""
        return [self.finished[key] for key in sorted(self.finished)]

    @property
    def kept(self) -> List[TrialRecord]:
        """Finished trials a resume keeps: an interrupted one is run again."""
        return [t for t in self.trials if t.status != Status.INTERRUPTED]

    @property
    def live(self) -> Dict[Key, QueuedEvent]:
        """Queued or running trials: launched, not finished, not stopped by a shutdown."""
        return {key: event for key, event in self.queued.items() if key not in self.finished and key not in self.interrupted}

    @property
    def running(self) -> Dict[Key, StartedEvent]:
        live = self.live
        return {key: event for key, event in self.started.items() if key in live and event.attempt == live[key].attempt}

    @property
    def rounds_complete(self) -> FrozenSet[int]:
        """Rounds whose end was journaled; for a version-1 `--async` journal (which wrote no
        `round` events), the rounds in which every candidate has a kept trial."""
        done = set(self.round_events)
        if self.asynchronous and self.popsize:
            per_round: Dict[int, int] = {}
            for trial in self.kept:
                per_round[trial.round] = per_round.get(trial.round, 0) + 1
            done |= {r for r, count in per_round.items() if count >= self.popsize}
        return frozenset(done)

    @property
    def last_round(self) -> int:
        """The last round of a round-based search whose end was journaled (-1: none)."""
        return max(self.round_events) if self.round_events else -1

    @property
    def best(self) -> Optional[TrialRecord]:
        return best_of(self.finished.values())

    def points(self, round_index: int) -> Dict[int, List[float]]:
        """The candidates the strategy proposed for a round, as journaled (by index)."""
        found = {key[1]: event.point for key, event in self.queued.items() if key[0] == round_index}
        for key, record in self.finished.items():
            if key[0] == round_index and key[1] not in found:
                found[key[1]] = record.point
        return found

    def curve(self, trial: TrialRecord) -> List[Tuple[int, float]]:
        """The intermediate results of the attempt that is the trial's (finished) record."""
        return self.intermediates.get((trial.round, trial.index, trial.attempt), [])

    def pruner_history(self) -> List[Tuple[str, Tuple[int, int, int], Any]]:
        """What a pruner must hear again on --resume to make the same decisions: every report
        and end of the attempts whose end is journaled, in journal order (an attempt cut off by
        the tuner's death runs again and reports afresh)."""
        ended = {attempt for kind, attempt, _ in self.pruning_log if kind == "end"}
        return [entry for entry in self.pruning_log if entry[1] in ended]

    @property
    def finished_search(self) -> bool:
        rounds = self.rounds
        return rounds is not None and len([r for r in self.rounds_complete if r < rounds]) >= rounds and not self.live


def replay(path: Union[str, "os.PathLike[str]"]) -> SearchState:
    """Build the search state from a journal (the only place that interprets its events)."""
    path = Path(path)
    events, torn = read_events(path)
    return replay_events(events, path, torn)


def replay_events(events: Iterable[Event], path: Path, torn: bool = False) -> SearchState:
    state = SearchState(path=path, torn=torn)
    for event in events:
        if isinstance(event, StartEvent):
            if not state.config:
                state.config = dict(event.config)
                state.schema = event.schema
                state.started_at = _finite(event.time)
        elif isinstance(event, ResumeEvent):
            state.resumed += 1
            state.config = {**state.config, **event.config} if state.config else dict(event.config)
            state.stopped_by_user = False
        elif isinstance(event, QueuedEvent):
            key = (event.round, event.index)
            state.queued[key] = event
            if key in state.finished:
                del state.finished[key]
                state.finish_order.remove(key)
            state.interrupted.pop(key, None)
        elif isinstance(event, StartedEvent):
            state.started[(event.round, event.index)] = event
        elif isinstance(event, FinishEvent):
            key = (event.trial.round, event.trial.index)
            if key in state.finished:
                state.finish_order.remove(key)
            state.finished[key] = event.trial
            state.finish_order.append(key)
            if event.trial.status != Status.INTERRUPTED:
                state.pruning_log.append(("end", (*key, event.trial.attempt), _pruner_status(event.trial.status)))
        elif isinstance(event, RetryEvent):
            state.retries.append(event)
            state.pruning_log.append(("end", (event.round, event.index, event.attempt), "failed"))
        elif isinstance(event, IntermediateEvent):
            attempt = (event.round, event.index, event.attempt)
            state.intermediates.setdefault(attempt, []).append((event.step, float(event.score)))
            state.pruning_log.append(("report", attempt, (event.step, float(event.score))))
        elif isinstance(event, InterruptedEvent):
            key = (event.round, event.index)
            state.interrupted[key] = event
            state.stopped_by_user = True
        elif isinstance(event, RoundEvent):
            state.round_events[event.round] = event
        elif isinstance(event, ToldEvent):
            state.told.append((event.round, event.index))
    return state


def _pruner_status(status: str) -> str:
    """A trial's end as a pruner hears it: ok, pruned, or failed (every other way to end)."""
    return status if status in (Status.OK, Status.PRUNED) else "failed"


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# -- writing ---------------------------------------------------------------------------------
class Journal:
    """Append-only typed events, each one write() of one line.

    A durable append is written at once (a killed tuner loses nothing) and made durable by the
    journal's sync thread, which fdatasyncs as soon as something was appended; the search does
    not wait for the disk (about 2 ms per finished trial, on the path from one trial's end to
    the next one's start; docs/overhead.md). `close()` syncs what is left before it returns, and
    a failed sync stops the next append with the error. The one thing this gives up: after a
    crash of the whole machine, trials that finished in the last moment before it (one sync's
    time) run again on --resume; a later line is never durable without the earlier ones, since
    one sync covers the whole file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Unbuffered: a failed write (disk full) leaves nothing pending that a later flush or
        # close could trip over. The mode follows the umask, as every view file's does; no
        # trial's token is in it (only their hashes, see docs/security.md). O_NOFOLLOW: a
        # symlink planted in its place is refused, never written through.
        try:
            self._fd: Optional[int] = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(path)) from None
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise JournalError(f"{path}: not a regular file; fix: give the --output_dir of a search")
        self._cut_torn_tail()
        self._size = os.fstat(self._fd).st_size
        self._syncer: Optional[_Syncer] = None

    def _cut_torn_tail(self) -> None:
        """Cut a torn last line off, so the next record starts on a line of its own."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        keep = size
        step = 4096
        while keep > 0:
            start = max(0, keep - step)
            chunk = os.pread(self._fd, keep - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        if keep != size:
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
            log.warning("%s: cut off a torn last line (%d bytes) left by a run that stopped mid-write", self.path, size - keep)

    def append(self, event: Event, durable: bool = True) -> None:
        """Append one event; `durable` has the sync thread make it durable (NOT_FSYNCED: the
        kinds that wait for the next durable append instead)."""
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        if self._syncer is not None and self._syncer.error is not None:
            error, self._syncer.error = self._syncer.error, None
            raise OSError(error.errno, error.strerror, str(self.path))
        line = (json.dumps(event.to_json(), default=_json_default, allow_nan=True) + "\n").encode()
        before = self._size
        view = memoryview(line)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as error:
            try:  # leave no half record behind for the next append to glue onto
                os.ftruncate(self._fd, before)
            except OSError:
                pass  # the next Journal() cuts it off instead
            # os.write names no file: name the journal, so the search knows whose write failed
            raise OSError(error.errno, error.strerror, str(self.path)) from None
        self._size = before + len(line)
        if durable:
            if self._syncer is None:
                self._syncer = _Syncer(self._fd)
            self._syncer.request()

    def close(self) -> None:
        """Sync what is left, then close; OSError (naming the journal) if the last sync failed."""
        if self._fd is None:
            return
        syncer, self._syncer = self._syncer, None
        fd, self._fd = self._fd, None
        try:
            if syncer is not None:
                syncer.finish()
                if syncer.error is not None:
                    raise OSError(syncer.error.errno, syncer.error.strerror, str(self.path))
                _sync(fd)
        finally:
            os.close(fd)


class _Syncer:
    """The journal's sync thread: one fdatasync per burst of durable appends, never waited for."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: Optional[OSError] = None
        self._wanted = False
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="autofinetune-journal-sync", daemon=True)
        self._thread.start()

    def request(self) -> None:
        with self._cond:
            self._wanted = True
            self._cond.notify()

    def finish(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._stopping:
                    self._cond.wait()
                if not self._wanted:
                    return
                self._wanted = False
            try:
                _sync(self.fd)
            except OSError as error:
                self.error = error


#: fdatasync where there is one: an append must make the data and the new size durable, not the
#: modification time (POSIX fsync's extra metadata write).
_sync = getattr(os, "fdatasync", os.fsync)


def _json_default(value: Any) -> Any:
    try:  # numpy scalars and arrays
        return value.tolist()
    except AttributeError:
        return str(value)


__all__ = ["JOURNAL", "SCHEMA_VERSION", "Journal", "JournalError", "SearchState", "replay", "read_events", "Event",
           "StartEvent", "ResumeEvent", "QueuedEvent", "StartedEvent", "FinishEvent", "RetryEvent", "InterruptedEvent",
           "RoundEvent", "ToldEvent", "IntermediateEvent"]
