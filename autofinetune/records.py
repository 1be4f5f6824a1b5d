"""What happened: the journal (the truth) and the files rebuilt from it.

Every finished trial is appended to `journal.jsonl` (flushed and fsync'd) before anything else
depends on it; `log_file.txt`, `trials.csv`, `trials.json` and `best_model/` are views that can
always be rebuilt from the journal, and are rewritten atomically so a reader never sees half.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .reporting import write_atomically
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

    @property
    def ok(self) -> bool:
        return self.status == Status.OK and self.score is not None

    @property
    def loss(self) -> Optional[float]:
        """What strategies minimise (the tuners minimise 1 - score); None for a failure."""
        return 1.0 - self.score if self.ok else None

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


#: The process umask, read once at import (reading it means setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: Path, text: str) -> None:
    """A view file, swapped in whole; with the mode any file of the user's gets (the umask, not
    mkstemp's 0600), so teammates who can read the output dir can read the views too."""
    write_atomically(path, text, mode=0o666 & ~_UMASK)


def _json_default(value: Any) -> Any:
    try:  # numpy scalars and arrays
        return value.tolist()
    except AttributeError:
        return str(value)


@dataclass
class SearchRecords:
    """The finished trials of a search and the views derived from them."""

    output_dir: Path
    param_names: List[str]
    header: str = ""
    trials: List[TrialRecord] = field(default_factory=list)
    best: Optional[TrialRecord] = None

    def add(self, record: TrialRecord) -> bool:
        """Add a finished trial; return True when it is the new best."""
        self.trials.append(record)
        if better(record, self.best):
            self.best = record
            return True
        return False

    def relative(self, path: str) -> str:
        try:
            return os.path.relpath(path, self.output_dir)
        except ValueError:
            return path

    # -- views ------------------------------------------------------------------------------
    def write_views(self) -> None:
        write_atomic(self.output_dir / LOG_FILE, self.log_text())
        write_atomic(self.output_dir / "trials.csv", self.csv_text())
        write_atomic(self.output_dir / "trials.json", json.dumps([self.row(t) for t in self.ordered()], indent=1, allow_nan=False, default=_json_default) + "\n")

    def ordered(self) -> List[TrialRecord]:
        return sorted(self.trials, key=lambda t: (t.round, t.index, t.attempt))

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

    def csv_text(self) -> str:
        buffer = io.StringIO()
        fields = ["round", "index", *self.param_names, "score", "status", "duration", "slot", "gpu", "parent", "log_path", "model_dir", "exit_code", "attempt", "message"]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for trial in self.ordered():
            writer.writerow(self.row(trial))
        return buffer.getvalue()

    def log_text(self) -> str:
        columns = ["round", "index", "status", "score", *self.param_names, "parent", "model_dir"]
        rows = [columns]
        for trial in self.ordered():
            row = self.row(trial)
            rows.append([_cell(row["round"]), _cell(row["index"]), trial.status, _cell(trial.score),
                         *(_cell(trial.params.get(n)) for n in self.param_names),
                         row["parent"] or "-", row["model_dir"]])
        widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
        lines = [self.header] if self.header else []
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
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
