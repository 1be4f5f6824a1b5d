"""VisualDL logs of a search: the original's tags plus VisualDL's hyper-parameter view.

Layout under `<output_dir>/visualization` (open it with `visualdl --logdir <that folder>`):

* `visualization/` — `hyperparameter_tuning/<name>`: the best-so-far trial's value of each
  hyperparameter, and `hyperparameter_tuning/best_eval_value`: the best score so far; one value
  per round, step = round number (the original's tags).
* `visualization/pop_<i>/` — `population_transformation/<name>` and
  `population_transformation/eval_value`: candidate i's trial of each round, step = round.
* `visualization/` — `learning_curve/round<r>-trial<i>`: the trial's intermediate results
  (`report_intermediate_result`), step = the trial's own step, written live as the tuner reads
  them; one tag per trial, so the pruner's decisions can be seen curve by curve (docs/pruning.md).
* `visualization/trials/round<r>-trial<i>/` — one VisualDL run per finished trial holding an
  `add_hparams` record (its hyperparameters) and its score as the scalar `hparams/eval_value`:
  this is what fills the HYPER PARAMETERS tab (table, parallel coordinates, scatter). VisualDL
  reads one hparams record per run, hence one small folder per trial.

Value types: int and float hyperparameters are logged as floats; a choice is logged as its
string in the hparams view, and in the scalar tags as its number when the choice is numeric,
otherwise as its position in `values` (scalars must be numbers).

Failed trials (failed, timeout, invalid, interrupted) have no score, and the original's habit of
scoring them 0.0 would rank a crash above a poor success, so no score is invented for them: their
`population_transformation/<name>` values are logged (they were tried), their
`population_transformation/eval_value` step is left out, and in the hparams view they appear
with their hyperparameters, `status` = the failure and no `hparams/eval_value` (VisualDL shows
the metric as empty). `hyperparameter_tuning/*` is written from the first round that has a
successful trial on. Every hparams record carries `status` ("ok" or the failure) so the table
can be sorted by it.

Everything is written from the tuner's process only (VisualDL crashes when two processes create
the same new log folder at once), folders are created before any trial could need them, and
each write is flushed at once so `visualdl --logdir` shows the search live. Every run is written
by `_RecordFile`, with VisualDL's own record builders and framing but without LogWriter's
writer thread (docs/overhead.md); a VisualDL without those builders gets LogWriters. `visualdl` is
imported on the search's start, not at `import autofinetune`; note that `import visualdl`
itself creates `~/.visualdl/` (its config folder) in the user's home.
"""
from __future__ import annotations

import importlib
import logging
import math
import os
import struct
import sys
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from ..rules import best_of, better, is_success
from ..search import SearchObserver

if TYPE_CHECKING:  # pragma: no cover
    from ..records import TrialRecord
    from ..search import SearchResult, SearchSnapshot
    from ..space import Param

log = logging.getLogger("autofinetune")

VISUALIZATION = "visualization"
TUNING_PREFIX = "hyperparameter_tuning/"
POPULATION_PREFIX = "population_transformation/"
BEST_EVAL_TAG = TUNING_PREFIX + "best_eval_value"
EVAL_TAG = POPULATION_PREFIX + "eval_value"
HPARAM_METRIC = "hparams/eval_value"
CURVE_PREFIX = "learning_curve/"
TRIALS_DIR = "trials"


#: Where `import visualdl` puts the config folder it creates in the home folder: inside the
#: output dir, so a search writes nothing outside it (docs/security.md).
VISUALDL_HOME = ".visualdl-home"


def _import_log_writer(home: Path) -> Any:
    """VisualDL's LogWriter, imported (lazily: VisualDL is heavy) with HOME pointing at `home`
    for that one import, because `import visualdl` creates `~/.visualdl/` as it loads. The
    import runs in the search's thread before any trial starts, so no trial inherits the
    borrowed HOME; in a process that imported visualdl already, nothing is created anyway."""
    if "visualdl" not in sys.modules:
        previous = os.environ.get("HOME")
        home.mkdir(parents=True, exist_ok=True)
        os.environ["HOME"] = str(home)
        try:
            importlib.import_module("visualdl")
        finally:
            if previous is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = previous
    from visualdl import LogWriter

    return LogWriter


def _record_file_name() -> str:
    """A vdlrecords file name that sorts after any earlier one in the same folder.

    VisualDL reads only the newest `vdlrecords.*` file of each folder (by name); its default
    name has one-second resolution, so a writer reopened within the same second could hide
    or be hidden. Nanoseconds keep the order (same digit count until the year 2286).
    """
    return f"vdlrecords.{time.time_ns()}.log"


def _record_builders() -> Any:
    """VisualDL's record builders (meta_data, scalar, hparam) and its md5, or None when this
    VisualDL lacks them (then LogWriters are used)."""
    try:
        from visualdl.component.base_component import hparam, meta_data, scalar
        from visualdl.utils.md5_util import md5
    except ImportError:
        return None
    return types.SimpleNamespace(hparam=hparam, meta_data=meta_data, scalar=scalar, md5=md5)


def _frame(record: Any) -> bytes:
    """VisualDL's record framing (its RecordWriter.write): the length, little-endian, then the bytes."""
    data = record.SerializeToString()
    return struct.pack("<Q", len(data)) + data


class _RecordFile:
    """A VisualDL run written as LogWriter writes it (a meta record, then its records), without
    LogWriter's writer thread and open file: records wait in memory until `flush` appends them
    in one write. Why: a search of 500 candidates held 500 LogWriters (500 threads, 500 open
    files, ~3 ms each to start), and a LogWriter per finished trial cost ~4 ms of the search's
    thread between one trial's end and the next one's start (docs/overhead.md). LogReader reads
    these files as any run (tests/test_views.py)."""

    def __init__(self, folder: Path, builders: Any, create_now: bool = True) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.logdir = str(folder)
        self.file_name = os.path.join(self.logdir, _record_file_name())
        self._builders = builders
        self._pending: List[bytes] = [_frame(builders.meta_data(tag="meta_data_tag", display_name="", step=0,
                                                                walltime=round(time.time() * 1000)))]
        if create_now:  # the run exists at once, as with a LogWriter (a trial's run: one write when complete)
            self.flush()

    def add_scalar(self, tag: str, value: float, step: int, walltime: Optional[int] = None) -> None:
        walltime = round(time.time() * 1000) if walltime is None else walltime
        self._pending.append(_frame(self._builders.scalar(tag=tag, value=value, step=step, walltime=walltime)))

    def add_hparams(self, hparams: Dict[str, Any], metrics: List[str], walltime: Optional[int] = None) -> None:
        walltime = round(time.time() * 1000) if walltime is None else walltime
        self._pending.append(_frame(self._builders.hparam(name=self._builders.md5(self.file_name), hparam_dict=hparams,
                                                          metric_list=metrics, walltime=walltime)))

    def flush(self) -> None:
        if self._pending:
            data, self._pending = memoryview(b"".join(self._pending)), []
            # Unbuffered and never through a link or into a FIFO (the output dir is the trials'
            # to write in too); one write per flush (docs/security.md, docs/overhead.md).
            fd = os.open(self.file_name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o666)
            try:
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)

    def close(self) -> None:
        self.flush()


def scalar_value(param: "Param", value: Any) -> Optional[float]:
    """A hyperparameter value as a VisualDL scalar: numbers as floats, other choices by position."""
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    values = getattr(param, "values", None)
    if values is not None and value in values:
        return float(values.index(value))
    return None


def hparam_value(param: "Param", value: Any) -> Any:
    """A hyperparameter value for `add_hparams`: plain Python float or str.

    VisualDL's add_hparams silently drops numpy ints and raises on bools, so everything is cast:
    ints and floats of int/float parameters to `float`, choices to their string.
    """
    if getattr(param, "kind", "") == "choice" or isinstance(value, (str, bool)) or value is None:
        return param.format(value) if value is not None else ""
    return float(value)


class VisualDLView(SearchObserver):
    """Writes `<output_dir>/visualization` as trials and rounds finish (see the module doc)."""

    def __init__(self, output_dir: "os.PathLike[str] | str | None" = None) -> None:
        # The search's own (resolved) output_dir is used once it starts; None is fine before.
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.logdir = self.output_dir / VISUALIZATION if self.output_dir is not None else None
        self._writer_class: Any = None
        self._builders: Any = None
        self._main: Any = None
        self._pops: Dict[int, Any] = {}
        # Each round's best, kept as trials finish: "best so far as of round r" is then the best
        # of at most r + 1 records, not of every trial (docs/overhead.md).
        self._round_best: Dict[int, "TrialRecord"] = {}

    def _note(self, record: "TrialRecord") -> None:
        if better(record, self._round_best.get(record.round)):
            self._round_best[record.round] = record

    def _so_far(self, round_index: int) -> "list[TrialRecord]":
        return [t for r, t in self._round_best.items() if r <= round_index]

    # -- writers ------------------------------------------------------------------------------
    def _open(self, folder: Path, create_now: bool = True) -> Any:
        if self._builders is not None:
            return _RecordFile(folder, self._builders, create_now)
        folder.mkdir(parents=True, exist_ok=True)
        return self._writer_class(logdir=str(folder), file_name=_record_file_name())

    def _pop(self, index: int) -> Any:
        if index not in self._pops:
            self._pops[index] = self._open(self.logdir / f"pop_{index}")
        return self._pops[index]

    # -- hooks --------------------------------------------------------------------------------
    def on_start(self, view: "SearchSnapshot") -> None:
        self.output_dir = Path(view.output_dir)
        self.logdir = self.output_dir / VISUALIZATION
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer_class = _import_log_writer(self.logdir / VISUALDL_HOME)
        self._builders = _record_builders()
        # A resumed search starts with trials and complete rounds: their round logs are written
        # again, because VisualDL shows only the newest file of each folder (the one opened now).
        self._main = self._open(self.logdir)
        # Candidates' runs (pop_<i>) are made when their first round ends, not here: a search
        # of 500 candidates spent ~50 ms of its start on 500 folders with nothing in them yet.
        done = list(view.trials)
        for record in done:
            curve = view.curves.get((record.round, record.index))
            if curve:
                self._write_curve(record, curve)
            self._note(record)
            if not self._trial_dir(record).is_dir():
                self._write_trial(view, record)
        for round_index in sorted(view.rounds_complete):
            self._write_round(view, round_index, [t for t in done if t.round == round_index], self._so_far(round_index))

    def on_intermediate(self, view: "SearchSnapshot", record: "TrialRecord", reports: Sequence["tuple[int, float]"]) -> None:
        self._write_curve(record, reports)

    def _write_curve(self, record: "TrialRecord", reports: Sequence["tuple[int, float]"]) -> None:
        suffix = f"-attempt{record.attempt}" if record.attempt else ""
        tag = f"{CURVE_PREFIX}round{record.round}-trial{record.index}{suffix}"
        wrote = False
        for step, score in reports:
            if math.isfinite(score):
                self._main.add_scalar(tag=tag, value=float(score), step=int(step))
                wrote = True
        if wrote:
            self._main.flush()

    def on_trial_finished(self, view: "SearchSnapshot", record: "TrialRecord", is_best: bool) -> None:
        self._note(record)
        self._write_trial(view, record)

    def on_round_finished(self, view: "SearchSnapshot", round_index: int, trials: Sequence["TrialRecord"]) -> None:
        # Best so far as of this round: with --async, trials of later rounds may have finished
        # already; step r shows what rounds 0..r found, as the rewrite of a resumed search does.
        self._write_round(view, round_index, trials, self._so_far(round_index))

    def on_finish(self, view: "SearchSnapshot", result: Optional["SearchResult"]) -> None:
        self.close()

    def close(self) -> None:
        for writer in [self._main, *self._pops.values()]:
            if writer is not None:
                try:
                    writer.close()
                except Exception as error:  # closing must not hide the search's own outcome
                    log.warning("VisualDL writer for %s did not close cleanly: %s", writer.logdir, error)
        self._main = None
        self._pops = {}

    # -- writing ------------------------------------------------------------------------------
    def _trial_dir(self, record: "TrialRecord") -> Path:
        suffix = f"-attempt{record.attempt}" if record.attempt else ""
        return self.logdir / TRIALS_DIR / f"round{record.round}-trial{record.index}{suffix}"

    def _write_trial(self, view: "SearchSnapshot", record: "TrialRecord") -> None:
        """One VisualDL run per finished trial: its hparams record and its score."""
        hparams: Dict[str, Any] = {}
        for param in view.space.params:
            hparams[param.name] = hparam_value(param, record.params.get(param.name))
        hparams["status"] = str(record.status)
        walltime = int(time.time() * 1000)
        score = [(HPARAM_METRIC, float(record.score), int(record.round))] if is_success(record) else []  # type: ignore[arg-type]
        writer = self._open(self._trial_dir(record), create_now=False)
        try:
            writer.add_hparams(hparams, [HPARAM_METRIC], walltime=walltime)
            for tag, value, step in score:
                writer.add_scalar(tag=tag, value=value, step=step, walltime=walltime)
        finally:
            writer.close()

    def _write_round(self, view: "SearchSnapshot", round_index: int, trials: Sequence["TrialRecord"],
                     so_far: Sequence["TrialRecord"]) -> None:
        step = int(round_index)
        best = best_of(so_far)
        if best is not None:
            for param in view.space.params:
                value = scalar_value(param, best.params.get(param.name))
                if value is not None:
                    self._main.add_scalar(tag=TUNING_PREFIX + param.name, value=value, step=step)
            self._main.add_scalar(tag=BEST_EVAL_TAG, value=float(best.score), step=step)
            self._main.flush()
        latest: Dict[int, "TrialRecord"] = {}
        for record in trials:  # with retries, a candidate's last attempt speaks for it
            if record.index not in latest or record.attempt >= latest[record.index].attempt:
                latest[record.index] = record
        for index, record in sorted(latest.items()):
            writer = self._pop(int(index))
            for param in view.space.params:
                value = scalar_value(param, record.params.get(param.name))
                if value is not None:
                    writer.add_scalar(tag=POPULATION_PREFIX + param.name, value=value, step=step)
            if is_success(record):
                writer.add_scalar(tag=EVAL_TAG, value=float(record.score), step=step)
            writer.flush()

