"""The trial side of the contract: how a train.py hands its score back.

This module runs inside every trial process, so it imports only the standard library (a heavy
import here costs seconds per trial). The protocol is a small JSON file whose path the tuner
puts in the trial's environment, so a script in any language can take part (the README's "The training script").
Intermediate results are JSON lines appended to another such file, and the tuner's request to
stop is a file that appears (docs/pruning.md, "The file protocol").
"""
from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from typing import Any

RESULT_FILE_ENV = "AUTOFINETUNE_RESULT_FILE"
TRIAL_TOKEN_ENV = "AUTOFINETUNE_TRIAL_TOKEN"
#: The trial appends its intermediate results here, one JSON line each (docs/pruning.md).
INTERMEDIATE_FILE_ENV = "AUTOFINETUNE_INTERMEDIATE_FILE"
#: The tuner creates this file when it asks the trial to stop (the pruner's decision).
STOP_FILE_ENV = "AUTOFINETUNE_STOP_FILE"


def _jsonable(score: Any) -> Any:
    """Keep what the tuner must judge (NaN, inf, strings) instead of failing inside the trial."""
    if isinstance(score, bool):
        return str(score)
    if isinstance(score, (int, float)):
        return float(score)
    try:  # numpy scalars, 0-d tensors: anything that converts cleanly
        return float(score)
    except (TypeError, ValueError):
        return str(score)


def report_final_result(score: Any) -> None:
    """Report the trial's validation score (higher is better, at most 1).

    Under the tuner the score is written atomically (temp file + rename) to this trial's own
    result file, together with the trial's token, so a half-written file is never read and a
    trial cannot write another trial's result. Reporting twice keeps the last report. Run
    standalone, it prints the score and returns, so the same train.py works without the tuner.
    """
    value = _jsonable(score)
    path = os.environ.get(RESULT_FILE_ENV)
    if not path:
        shown = value if not isinstance(value, float) or math.isfinite(value) else repr(value)
        print(f"autofinetune: final result {shown} (not running under the tuner; nothing recorded)")
        return
    record = {
        "score": value,
        "token": os.environ.get(TRIAL_TOKEN_ENV, ""),
        "pid": os.getpid(),
        "time": time.time(),
    }
    write_atomically(path, json.dumps(record), durable=True, mode=umask_mode())


class _Reports:
    """This process's intermediate reports: the open file, the last step, whether stop was asked.

    Kept open between reports (an open per report costs more than the write), and reopened in
    a forked child, whose descriptor would be its parent's.
    """

    pid = -1
    fd = -1
    step = 0
    stop_asked = False


def report_intermediate_result(score: Any, step: "int | None" = None) -> bool:
    """Report a score along the way (e.g. validation accuracy after each epoch); True when the
    tuner asks the trial to stop, so it can save what it wants and exit.

    The pruner (`--pruner`, docs/pruning.md) compares these learning curves and stops the
    hopeless ones; a trial that never calls this is never pruned. `step` is the x-axis
    (epochs, batches...; by default 1, 2, 3... per call) and must grow from call to call. The
    call appends one line to the trial's own file and looks whether the stop file exists: a few
    microseconds, cheap enough every few hundred steps. The answer is what the tuner had
    decided by then, so a stop decided on this report is seen at the next one; if the trial
    ignores it, the tuner sends SIGTERM after `--prune_grace` seconds. Run standalone, it prints
    and returns False.
    """
    value = _jsonable(score)
    _Reports.step = int(step) if step is not None else _Reports.step + 1
    path = os.environ.get(INTERMEDIATE_FILE_ENV)
    if not path:
        shown = value if not isinstance(value, float) or math.isfinite(value) else repr(value)
        print(f"autofinetune: intermediate result {shown} at step {_Reports.step} (not running under the tuner; nothing recorded)")
        return False
    line = json.dumps({"step": _Reports.step, "score": value, "token": os.environ.get(TRIAL_TOKEN_ENV, "")}) + "\n"
    try:
        if _Reports.pid != os.getpid():
            _Reports.pid, _Reports.stop_asked = os.getpid(), False
            _Reports.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        os.write(_Reports.fd, line.encode())  # one write of one short line: appends never interleave
    except OSError:
        _Reports.pid = -1  # the tuner's file is gone or refused: reported nothing, try again next time
    if not _Reports.stop_asked:
        stop = os.environ.get(STOP_FILE_ENV)
        _Reports.stop_asked = bool(stop) and os.path.lexists(stop)  # type: ignore[arg-type]
    return _Reports.stop_asked


@functools.lru_cache(maxsize=None)
def umask_mode() -> int:
    """The mode any new file of the user's gets (mkstemp alone makes 0600): every file of the
    output dir follows one policy, the umask (README, 'The output tree'). Read once per process:
    reading the umask means setting it, which must not race a thread creating files."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path: "str | os.PathLike[str]", text: str, durable: bool = False, mode: "int | None" = None) -> None:
    """Write via a temp file and rename, so a reader sees the old file or the new one, never half.

    The one atomic writer of the package (the tuner's view files use it too); it lives here
    because this module must stay standard-library only. `durable` fsyncs before the rename
    (a result must survive the tuner's death); `mode` replaces mkstemp's 0600.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
