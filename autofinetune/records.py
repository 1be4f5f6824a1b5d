"""What happened: the journal (the truth) and the files rebuilt from it.

Every finished trial is appended to `journal.jsonl` (flushed and fsync'd) before anything else
depends on it; `log_file.txt`, `trials.csv`, `trials.json` and `best_model/` are views that can
always be rebuilt from the journal (docs/architecture.md).

What a finished trial costs the views must not grow with the trials before it (docs/overhead.md):
`trials.csv` gets one appended row per finished trial (in the order trials finish, while the
search runs); `trials.json` and `log_file.txt` are rewritten whole, atomically, at most once a
second or at each round's end, whichever comes first, and never taking more than 2 % of the
time (a rewrite of N trials costs ~N, so they come ~N apart); all three are rewritten whole (rows in
round, index order) on resume and whenever the tuner exits, so nothing finished is missing.
"""
from __future__ import annotations

import bisect
import csv
import errno
import io
import json
import logging
import math
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, overload

from .reporting import umask_mode, write_atomically
from .rules import better
from .runner import Status, file_kind, open_regular

log = logging.getLogger("autofinetune")

LOG_FILE = "log_file.txt"
BEST_MODEL = "best_model"


@dataclass
class TrialRecord:
    """One trial as users and tools see it (the row of log_file.txt / trials.csv)."""

    round: int
    index: int
    params: Dict[str, Any]
    point: List[float]
    status: str = Status.QUEUED
    score: Optional[float] = None
    exit_code: Optional[int] = None
    duration: Optional[float] = None
    slot: Optional[str] = None
    gpu: Optional[str] = None
    parent: Optional[Dict[str, Any]] = None
    log_path: str = ""
    model_dir: str = ""
    message: str = ""
    attempt: int = 0
    #: The last intermediate step the trial reported (None: it reported none).
    last_step: Optional[int] = None
    #: A pruned trial: the step at whose report the pruner stopped it, and the score the
    #: strategy is told for it (docs/pruning.md, "What a pruned trial counts for").
    pruned_step: Optional[int] = None
    told_score: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK and self.score is not None

    @property
    def pruned(self) -> bool:
        return self.status == Status.PRUNED

    @property
    def loss(self) -> Optional[float]:
        """What strategies minimise (the tuners minimise 1 - score); None for a failure.

        A pruned trial counts with its `told_score`: its last intermediate score, capped at the
        worst final score when it was pruned, so it never looks better than a trial that finished.
        """
        if self.ok:
            return 1.0 - self.score  # type: ignore[operator]
        if self.pruned and self.told_score is not None and math.isfinite(self.told_score):
            return 1.0 - self.told_score
        return None

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "TrialRecord":
        known = {f for f in cls.__dataclass_fields__}
        record = cls(**{k: v for k, v in data.items() if k in known})
        try:  # one status vocabulary in memory, whatever a journal spelled
            record.status = Status(record.status)
        except ValueError:
            pass
        return record


def write_atomic(path: Path, text: str) -> None:
    """A view file, swapped in whole; with the mode any file of the user's gets (the umask, not
    mkstemp's 0600), so teammates who can read the output dir can read the views too."""
    write_atomically(path, text, mode=umask_mode())


def _json_default(value: Any) -> Any:
    try:  # numpy scalars and arrays
        return value.tolist()
    except AttributeError:
        return str(value)


class TrialsView(Sequence):
    """The finished trials as a view saw them at one moment, without copying them.

    The records' list only ever grows, so the first `length` entries never change: a view (or
    its ticker thread) can read them while the search appends more (docs/architecture.md).
    """

    __slots__ = ("_trials", "_length")

    def __init__(self, trials: List["TrialRecord"], length: Optional[int] = None) -> None:
        self._trials = trials
        self._length = len(trials) if length is None else length

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> "TrialRecord": ...

    @overload
    def __getitem__(self, index: slice) -> List["TrialRecord"]: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._trials[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("trial index out of range")
        return self._trials[index]

    def __iter__(self) -> Iterator["TrialRecord"]:
        trials = self._trials
        for i in range(self._length):
            yield trials[i]

    def __repr__(self) -> str:
        return f"TrialsView({self._length} trials)"


#: Rewrites of trials.json and log_file.txt are at least this far apart (a round's end forces one).
VIEW_INTERVAL = 1.0
#: The largest share of the tuner's time that rewriting trials.json and log_file.txt may take.
REWRITE_SHARE = 0.02

CSV_FILE = "trials.csv"
JSON_FILE = "trials.json"


@dataclass
class SearchRecords:
    """The finished trials of a search and the views derived from them."""

    output_dir: Path
    param_names: List[str]
    header: str = ""
    trials: List[TrialRecord] = field(default_factory=list)
    best: Optional[TrialRecord] = None
    #: Finished trials that did not succeed, kept as they are added (a snapshot must not count them).
    failed: int = 0
    #: Finished trials the pruner stopped (neither a success nor a failure).
    pruned: int = 0
    interval: float = VIEW_INTERVAL

    def __post_init__(self) -> None:
        self._by_key: Dict[Tuple[int, int], TrialRecord] = {}
        for trial in self.trials:
            self._index(trial)
        # Each finished trial rendered once, as a CSV line, a trials.json item and log_file.txt
        # cells, kept in (round, index, attempt) order: a rewrite then only joins text, so its
        # cost per finished trial stays small however many came before (docs/overhead.md).
        self._keys: List[Tuple[int, int, int]] = []
        self._rendered: List[_Rendered] = []
        self._widths = [len(c) for c in self._log_columns()]
        for trial in self.trials:
            self._render(trial)
        # Rewrites may come from the search's thread or the deferred-rewrite timer: one at a time.
        self._lock = threading.RLock()
        self._stale = False  # trials.json / log_file.txt lack a finished trial
        self._unsorted = False  # trials.csv holds rows appended in finish order
        self._last_rewrite = float("-inf")
        self._last_cost = 0.0
        self._timer: Optional[threading.Timer] = None

    def _index(self, record: TrialRecord) -> None:
        if not record.ok and not record.pruned:
            self.failed += 1
        if record.pruned:
            self.pruned += 1
        self._by_key[(record.round, record.index)] = record

    def _render(self, record: TrialRecord) -> None:
        row = self.row(record)
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=self.csv_fields(), lineterminator="\n").writerow(row)
        item = json.dumps(row, indent=1, allow_nan=False, default=_json_default).replace("\n", "\n ")
        cells = [_cell(row["round"]), _cell(row["index"]), str(record.status), _cell(record.score),
                 *(_cell(record.params.get(n)) for n in self.param_names), row["parent"] or "-", row["model_dir"]]
        self._widths = [max(w, len(c)) for w, c in zip(self._widths, cells)]
        key = (record.round, record.index, record.attempt)
        at = bisect.bisect_right(self._keys, key)
        self._keys.insert(at, key)
        self._rendered.insert(at, _Rendered(record, buffer.getvalue(), " " + item, cells))

    def add(self, record: TrialRecord) -> bool:
        """Add a finished trial; return True when it is the new best."""
        with self._lock:
            self.trials.append(record)
            self._render(record)
        self._index(record)
        if better(record, self.best):
            self.best = record
            return True
        return False

    def find(self, round_index: Any, index: Any) -> Optional[TrialRecord]:
        """The finished trial of (round, index), found without a scan (PBT's parent line)."""
        return self._by_key.get((round_index, index))

    def view(self) -> TrialsView:
        return TrialsView(self.trials)

    def relative(self, path: str) -> str:
        try:
            return os.path.relpath(path, self.output_dir)
        except ValueError:
            return path

    # -- views ------------------------------------------------------------------------------
    def write_views(self) -> None:
        """All three views rewritten whole from the records (resume, and when the tuner exits)."""
        with self._lock:
            self._cancel_timer()
            write_atomic(self.output_dir / CSV_FILE, self.csv_text())
            self._unsorted = False
            self._rewrite_locked()

    def finished(self, record: TrialRecord) -> None:
        """A trial was added: its row appended to trials.csv, the other views rewritten when due."""
        self.append_row(record)
        self.refresh()

    def append_row(self, record: TrialRecord) -> None:
        """One row at the end of trials.csv, in one write; the header when the file is new.

        Opened without following a symlink and never waiting on a FIFO: a trial may have planted
        either at the name, and then the file is rewritten whole instead, replacing it
        (docs/security.md).
        """
        path = self.output_dir / CSV_FILE
        with self._lock:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             umask_mode())
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ETXTBSY):
                    raise
                fd = -1
            try:
                info = os.fstat(fd) if fd >= 0 else None
                if info is None or not stat.S_ISREG(info.st_mode):
                    write_atomic(path, self.csv_text())
                    return
                text = self._csv_line(record)
                if info.st_size == 0:
                    text = self._csv_header() + text
                data = memoryview(text.encode("utf-8"))
                while data:
                    data = data[os.write(fd, data):]
                self._unsorted = True
            finally:
                if fd >= 0:
                    os.close(fd)

    def refresh(self, force: bool = False) -> None:
        """Rewrite trials.json and log_file.txt if a trial is missing from them and a second has
        passed since the last rewrite (`force`, a round's end: no need to wait for the second);
        else when it is up. Either way at most REWRITE_SHARE of the time goes to rewrites: the
        gap after a rewrite is at least 1 / REWRITE_SHARE times what it took, so a rewrite of N
        trials (which costs ~N) comes ~N apart and the cost per trial stays flat (docs/overhead.md)."""
        with self._lock:
            self._stale = True
            gap = self._last_cost / REWRITE_SHARE
            wait = self._last_rewrite + (gap if force else max(self.interval, gap)) - time.monotonic()
            if wait <= 0:
                self._cancel_timer()
                self._rewrite_locked()
            elif self._timer is None:
                # Without it, a trial finishing just after a rewrite would be missing from the
                # views until the next one ends, which may be a long trial away.
                self._timer = threading.Timer(wait, self._deferred)
                self._timer.daemon = True
                self._timer.start()

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
            if not self._stale:
                return
            try:
                self._rewrite_locked()
            except OSError as error:  # the search's own next write (or its exit) says it, as an error
                log.warning("could not rewrite %s (%s); the search writes it again later", self.output_dir / JSON_FILE,
                            error.strerror or error)

    def _rewrite_locked(self) -> None:
        began = time.monotonic()
        write_atomic(self.output_dir / LOG_FILE, self.log_text())
        write_atomic(self.output_dir / JSON_FILE, self.json_text())
        self._stale = False
        self._last_rewrite = time.monotonic()
        self._last_cost = self._last_rewrite - began

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """The tuner exits: every view holds every finished trial, trials.csv in round order."""
        with self._lock:
            self._cancel_timer()
            if self._stale or self._unsorted:
                self.write_views()

    def ordered(self) -> List[TrialRecord]:
        return [r.record for r in self._rendered]

    def _csv_header(self) -> str:
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=self.csv_fields(), lineterminator="\n").writeheader()
        return buffer.getvalue()

    def _csv_line(self, record: TrialRecord) -> str:
        key = (record.round, record.index, record.attempt)
        at = bisect.bisect_left(self._keys, key)
        while at < len(self._keys) and self._keys[at] == key:
            if self._rendered[at].record is record:
                return self._rendered[at].csv
            at += 1
        buffer = io.StringIO()  # a record that was never added: rendered now
        csv.DictWriter(buffer, fieldnames=self.csv_fields(), lineterminator="\n").writerow(self.row(record))
        return buffer.getvalue()

    def json_text(self) -> str:
        if not self._rendered:
            return "[]\n"
        return "[\n" + ",\n".join(r.json for r in self._rendered) + "\n]\n"

    def _log_columns(self) -> List[str]:
        return ["round", "index", "status", "score", *self.param_names, "parent", "model_dir"]

    def row(self, trial: TrialRecord) -> Dict[str, Any]:
        row: Dict[str, Any] = {"round": trial.round, "index": trial.index}
        row.update({name: trial.params.get(name) for name in self.param_names})
        parent = trial.parent or {}
        row.update({
            "score": trial.score if trial.score is None or math.isfinite(trial.score) else None,
            "status": trial.status,
            "duration": None if trial.duration is None else round(trial.duration, 3),
            "slot": trial.slot,
            "gpu": trial.gpu,
            "parent": self.relative(parent["model_dir"]) if parent.get("model_dir") else None,
            "log_path": self.relative(trial.log_path),
            "model_dir": self.relative(trial.model_dir),
            "exit_code": trial.exit_code,
            "attempt": trial.attempt,
            "message": trial.message,
        })
        return row

    def csv_fields(self) -> List[str]:
        return ["round", "index", *self.param_names, "score", "status", "duration", "slot", "gpu", "parent", "log_path", "model_dir", "exit_code", "attempt", "message"]

    def csv_text(self) -> str:
        return self._csv_header() + "".join(r.csv for r in self._rendered)

    def log_text(self) -> str:
        widths = self._widths
        lines = [self.header] if self.header else []
        lines.append(_log_line(self._log_columns(), widths))
        for rendered in self._rendered:
            if rendered.widths is not widths:  # a wider cell came: every line is padded again
                rendered.line, rendered.widths = _log_line(rendered.cells, widths), widths
            lines.append(rendered.line)
        if self.best is not None:
            params = " ".join(f"{k}={_cell(v)}" for k, v in self.best.params.items())
            lines.append("")
            lines.append(f"best so far: round {self.best.round}, index {self.best.index}, score {_cell(self.best.score)}: {params}")
        else:
            lines.append("")
            lines.append("best so far: none (no trial has succeeded yet)")
        return "\n".join(lines) + "\n"

    def update_best_model(self) -> Optional[Path]:
        """Copy the best trial's model dir to best_model/, swapping it in by rename.

        The model dir is whatever the trial left there, so only regular files and folders are
        copied, never through a symlink and never waiting on a FIFO; what is skipped is listed
        in `.autofinetune_best.json` and said once (docs/security.md).
        """
        if self.best is None:
            return None
        target = self.output_dir / BEST_MODEL
        source = Path(self.best.model_dir)
        staging = Path(tempfile.mkdtemp(prefix=".best_model.", dir=self.output_dir))
        skipped: List[str] = []
        reasons: Dict[str, str] = {}
        try:
            try:
                source_mode: Optional[int] = os.lstat(source).st_mode
            except OSError:
                source_mode = None
            if source_mode is not None and stat.S_ISDIR(source_mode):
                _copy_plain_tree(source, staging / "model", skipped, reasons)
            else:
                why = "missing" if source_mode is None else f"a {file_kind(source_mode)}, not a folder"
                log.warning("the best trial's model dir %s is %s; best_model/ holds only its record", source, why)
                (staging / "model").mkdir()
            if skipped:
                shown = ", ".join(f"{path} ({reasons[path]})" for path in skipped[:10])
                more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
                log.warning("best_model/: skipped %d entr%s of %s that %s not a regular file or folder: %s%s "
                            "(listed in best_model/.autofinetune_best.json)", len(skipped), "y" if len(skipped) == 1 else "ies",
                            source, "is" if len(skipped) == 1 else "are", shown, more)
            row = self.row(self.best)
            row["skipped"] = skipped
            (staging / "model" / ".autofinetune_best.json").write_text(json.dumps(row, default=_json_default) + "\n")
            if os.path.lexists(target):  # moved aside, then deleted with the staging folder
                os.replace(target, staging / "retired")
            os.replace(staging / "model", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


class _Rendered:
    """One finished trial's text in each view (see SearchRecords.__post_init__)."""

    __slots__ = ("record", "csv", "json", "cells", "line", "widths")

    def __init__(self, record: TrialRecord, csv_line: str, json_item: str, cells: List[str]) -> None:
        self.record, self.csv, self.json, self.cells = record, csv_line, json_item, cells
        self.line = ""
        self.widths: Optional[List[int]] = None


def _log_line(cells: List[str], widths: List[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()


#: Bytes per read when copying a model file.
_COPY_CHUNK = 1 << 20


def _copy_plain_tree(source: Path, destination: Path, skipped: List[str], reasons: Dict[str, str]) -> None:
    """Copy the regular files and folders under `source`; every other entry's relative path goes to `skipped`.

    Iterative (a trial may nest folders thousands deep); symlinks are never followed, and each
    file is opened O_NOFOLLOW|O_NONBLOCK and checked again by fstat, as a trial still running in
    the background could swap an entry between the listing and the open.
    """
    destination.mkdir()
    stack = [(source, destination, "")]
    while stack:
        folder, copy, prefix = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            _skip(skipped, reasons, prefix.rstrip("/") or ".", f"unreadable folder: {error.strerror or error}")
            continue
        for entry in entries:
            relative = prefix + entry.name
            if entry.name == ".autofinetune_best.json" and not prefix:
                continue  # the tuner's own record of the copy, written afterwards
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    (copy / entry.name).mkdir()
                    stack.append((Path(entry.path), copy / entry.name, relative + "/"))
                elif stat.S_ISREG(mode):
                    _copy_regular(entry.path, copy / entry.name)
                else:
                    _skip(skipped, reasons, relative, file_kind(mode))
            except OSError as error:
                _skip(skipped, reasons, relative, error.strerror or str(error))


def _copy_regular(source: str, destination: Path) -> None:
    """One file's bytes (at most its size when opened: a writer left behind cannot make it endless), mode and times."""
    fd = open_regular(source)
    try:
        info = os.fstat(fd)
        left = info.st_size
        with open(destination, "xb") as out:
            while left > 0:
                chunk = os.read(fd, min(left, _COPY_CHUNK))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
        os.chmod(destination, stat.S_IMODE(info.st_mode))
        os.utime(destination, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(fd)


def _skip(skipped: List[str], reasons: Dict[str, str], relative: str, why: str) -> None:
    skipped.append(relative)
    reasons[relative] = why


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
