"""The search loop: ask the strategy, plan with the evaluator, run, record, tell.

Data flows one way: strategy (what to try) -> evaluator (how) -> scheduler (where, when) ->
records (what happened) -> views (what people see). Rounds are generations of the strategy,
but inside a round the scheduler is a work queue: a freed slot takes the next candidate at once.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .devices import Slot
from .errors import ConfigError, SearchFailed
from .evaluators import lineage, make_evaluator
from .records import JOURNAL, Journal, SearchRecords, TrialRecord
from .scheduler import OK, LocalScheduler, TrialOutcome, TrialSpec
from .space import SearchSpace
from .strategies import check_strategy, make_strategy

log = logging.getLogger("autofinetune")


@dataclass
class SearchConfig:
    script: Path
    space: SearchSpace
    output_dir: Path
    slots: List[Slot]
    seed: int
    popsize: int = 5
    rounds: int = 10
    evaluator: str = "populationbased"
    strategy: str = "pshe2"
    passthrough: List[Tuple[str, str]] = field(default_factory=list)
    timeout: Optional[float] = None
    cwd: str = field(default_factory=os.getcwd)

    def validate(self) -> None:
        if self.popsize < 1:
            raise ConfigError(f"--popsize={self.popsize}: must be at least 1")
        if self.rounds < 1:
            raise ConfigError(f"--round={self.rounds}: must be at least 1")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout={self.timeout}: must be a positive number of seconds")
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
    best_params: Optional[Dict[str, Any]]
    best_score: Optional[float]
    best_model_dir: Optional[Path]
    trials: List[TrialRecord]
    seed: int

    @property
    def best(self) -> Optional[TrialRecord]:
        ok = [t for t in self.trials if t.ok]
        return max(ok, key=lambda t: t.score) if ok else None


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


class Search:
    """One search, run once; `run()` returns a SearchResult or raises SearchFailed."""

    def __init__(self, config: SearchConfig, echo: Callable[[str], None] = print,
                 observers: Sequence[SearchObserver] = ()) -> None:
        config.validate()
        self.config = config
        self.echo = echo
        self.space = config.space
        self.output_dir = prepare_output_dir(config.output_dir)
        self.strategy = make_strategy(config.strategy, self.space.dim, self.space.init_unit(), config.popsize, config.seed)
        self.evaluator = make_evaluator(config.evaluator)
        self.records = SearchRecords(self.output_dir, self.space.names, header=self._header())
        self.journal = Journal(self.output_dir / JOURNAL)
        self.scheduler = LocalScheduler(config.slots)
        self.started = time.monotonic()
        self.observers: List[SearchObserver] = list(observers)
        self.round_index = 0

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
        self.journal.append("start", time=time.time(), config=self._config_json())
        self.echo(f"Tuning {c.script} over {', '.join(self.space.names)}: {c.popsize} candidates x {c.rounds} rounds "
                  f"on {len(c.slots)} slot(s) [{', '.join(s.label for s in c.slots)}], seed {c.seed}, output {self.output_dir}")
        self._notify("on_start")
        result: Optional[SearchResult] = None
        try:
            for round_index in range(c.rounds):
                self.round_index = round_index
                self._run_round(round_index)
            result = self._finish()
            return result
        except BaseException:
            for outcome in self.scheduler.shutdown():
                self.journal.append("interrupted", key=outcome.spec.key)
            raise
        finally:
            self.journal.close()
            self._notify("on_finish", result)

    def _run_round(self, round_index: int) -> None:
        points = self.strategy.ask()
        round_dir = self.output_dir / f"round{round_index}"
        round_dir.mkdir(exist_ok=True)
        pending: Dict[str, TrialRecord] = {}
        for index, point in enumerate(points):
            record = self._launch(round_index, index, point, round_dir)
            pending[f"r{round_index}-i{index}"] = record
        finished: List[TrialRecord] = []
        while pending:
            for outcome in self.scheduler.wait_any():
                record = pending.pop(outcome.spec.key)
                self._complete(record, outcome)
                finished.append(record)
        finished.sort(key=lambda t: t.index)
        self.strategy.tell(points, [t.loss for t in finished])
        for line in self.evaluator.observe(round_index, finished):
            self.echo(line)
        self.journal.append("round", round=round_index, strategy=self.strategy.state_dict(), evaluator=self.evaluator.state_dict())
        self._notify("on_round_finished", round_index, finished)
        scores = [t.score for t in finished if t.ok]
        if scores:
            self.echo(f"The local best eval value in the {round_index}-th round is {max(scores)}.")
        else:
            self.echo(f"The local best eval value in the {round_index}-th round is unknown: every trial of the round failed.")

    def _launch(self, round_index: int, index: int, point: np.ndarray, round_dir: Path) -> TrialRecord:
        params = self.space.decode(point)
        model_dir = round_dir / f"model-{index}"
        model_dir.mkdir(exist_ok=True)
        plan = self.evaluator.plan(round_index, index)
        argv = (self.config.command() + self.space.argv(params) + [f"--saved_params_dir={model_dir}"]
                + plan.extra_argv + [f"--{k}={v}" for k, v in self.config.passthrough])
        record = TrialRecord(round=round_index, index=index, params=params, point=[float(x) for x in point],
                             status="running", parent=plan.parent, log_path=str(round_dir / f"log-{index}.info"),
                             model_dir=str(model_dir))
        spec = TrialSpec(key=f"r{round_index}-i{index}", argv=argv, log_path=Path(record.log_path),
                         result_path=round_dir / f"result-{index}.json", cwd=self.config.cwd, timeout=self.config.timeout)
        self.journal.append("launch", round=round_index, index=index, params=params, point=record.point, argv=argv, parent=plan.parent)
        self.scheduler.submit(spec)
        self._notify("on_trial_started", record)
        return record

    def _complete(self, record: TrialRecord, outcome: TrialOutcome) -> None:
        record.status = outcome.status
        record.score = outcome.score
        record.exit_code = outcome.exit_code
        record.duration = outcome.duration
        record.slot = outcome.slot.label
        record.gpu = outcome.slot.gpu
        record.message = outcome.message
        self.journal.append("finish", trial=record.to_json())
        is_best = self.records.add(record)
        self.records.write_views()
        if is_best:
            self.records.update_best_model()
        self._notify("on_trial_finished", record, is_best)
        params = " ".join(f"{k}={self.space.params[i].format(v)}" for i, (k, v) in enumerate(record.params.items()))
        if outcome.status == OK:
            self.echo(f"[round {record.round}] trial {record.index} ok: score {record.score:.6g} in {record.duration:.1f}s on {record.slot}"
                      f"{' (new best)' if is_best else ''}: {params}")
        else:
            print(f"WARNING:Program which was ran with hyperparameters as {params} was crashed!", file=sys.stderr, flush=True)
            self.echo(f"[round {record.round}] trial {record.index} {outcome.status}: {outcome.message}; see {record.log_path}")

    def _finish(self) -> SearchResult:
        best = self.records.best
        c = self.config
        result = SearchResult(self.output_dir, dict(best.params) if best else None, best.score if best else None,
                              self.output_dir / "best_model" if best else None, list(self.records.trials), c.seed)
        if best is None:
            first = self.records.ordered()[0]
            raise SearchFailed(f"all {len(self.records.trials)} trials failed (first: {first.message}); see the logs, e.g. {first.log_path}")
        self.echo("The final best hyperparameters:")
        for param in self.space.params:
            self.echo(f"{param.name}={param.format(best.params[param.name])}")
        self.echo(f"The final best eval score is {best.score}.")
        self.echo(f"The final best model parameters are saved as {self.output_dir / 'best_model'} .")
        if best.parent:
            self.echo(f"The best model's lineage: {' -> '.join(lineage(best, self.records.trials, str(self.output_dir)))}")
        return result

    def _config_json(self) -> Dict[str, Any]:
        c = self.config
        return {"script": str(c.script), "space": self.space.to_json(), "space_fingerprint": self.space.fingerprint(),
                "space_source": self.space.source, "popsize": c.popsize, "rounds": c.rounds, "evaluator": c.evaluator,
                "strategy": c.strategy, "seed": c.seed, "passthrough": c.passthrough, "timeout": c.timeout,
                "slots": [s.label for s in c.slots], "cwd": c.cwd}


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
