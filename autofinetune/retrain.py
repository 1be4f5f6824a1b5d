"""`autofinetune retrain OUTPUT_DIR`: train the best model of a search again, from scratch.

Under population-based training the best model is not the product of its last round's
hyperparameters: it grew through every step of its lineage (round 0 from scratch, then one
resumed step per round, each with its own values). The search writes that schedule to
`best_schedule.json` (rules.schedule); this command replays it step by step with the same
script, through the same trial runner as a search (launcher, timeout, result file), into a new
folder, and reports the score it reaches. With full-trail the schedule has one step.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .backends.local import LocalBackend
from .devices import build_slots
from .errors import ConfigError, SearchFailed, path_error, shown
from .journal import JOURNAL, replay
from .options import OneLineArgumentParser
from .records import write_atomic
from .rules import TrialCommand, best_of, schedule
from .runner import Status, TrialSpec, open_regular
from .search import SCHEDULE_FILE
from .space import SearchSpace

def retrain(output_dir: "str | Path", target: "str | Path", gpu: Optional[str] = None, echo=print) -> Dict[str, Any]:
    """Replay the best lineage of the search in `output_dir` into `target`; return what it reached."""
    source = Path(output_dir)
    state = replay(source / JOURNAL)
    best = best_of(state.trials)
    if best is None:
        raise ConfigError(f"{shown(source)}: no trial has succeeded, so there is no model to retrain; fix: retrain a search with a best model")
    config = state.config
    steps = _schedule_file(source) or schedule(best, state.trials, config.get("resume_epochs", 1))
    space = SearchSpace.from_list(config.get("space") or [], source=str(config.get("space_source") or source / JOURNAL))
    script = Path(str(config.get("script", "")))
    program = [sys.executable, str(script)] if script.suffix == ".py" else [str(script)]
    passthrough = tuple((str(k), str(v)) for k, v in config.get("passthrough") or [])
    evaluator_options = ("model_path", "epochs") if len(steps) > 1 else ()
    command = TrialCommand(tuple(program), space, passthrough, evaluator_options, str(config.get("evaluator", "")),
                           accepted=config.get("accepted_options"))
    target = Path(target)
    try:
        target.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise ConfigError(f"--output_dir={shown(target)}: exists already; fix: give a new folder for the retrained model") from None
    except OSError as error:
        raise path_error("--output_dir", target, error, "give a new, writable folder") from None
    backend = LocalBackend(build_slots(gpu, 1)[:1])
    done: List[Dict[str, Any]] = []
    previous: Optional[Path] = None
    try:
        for position, step in enumerate(steps):
            model_dir = target / f"step{position}-{str(step['model']).replace('/', '-')}"
            model_dir.mkdir()
            resumed = [("model_path", str(previous)), ("epochs", str(step["epochs"]))] if previous is not None else []
            spec = TrialSpec(key=f"step{position}", argv=command.argv(step["params"], str(model_dir), resumed),
                             log_path=target / f"log-step{position}.info", result_path=target / f"result-step{position}.json",
                             cwd=str(config.get("cwd") or Path.cwd()), env={"AUTOFINETUNE_SAVED_PARAMS_DIR": str(model_dir)})
            backend.submit(spec)
            outcome = _wait(backend)
            if outcome.status != Status.OK:
                raise SearchFailed(f"retrain step {position} ({step['model']}) {outcome.status}: {outcome.message}; see {spec.log_path}")
            done.append({**step, "search_score": step["score"], "score": outcome.score, "model_dir": str(model_dir)})
            echo(f"step {position}: {step['model']} {_params(step['params'])} -> score {outcome.score:.6g} "
                 f"(the search's: {float(step['score']):.6g})")
            previous = model_dir
    finally:
        backend.close()
    result = {"source": str(source.resolve()), "steps": done, "score": done[-1]["score"], "search_score": steps[-1]["score"]}
    write_atomic(target / "retrain.json", json.dumps(result, indent=1) + "\n")
    return result


def _schedule_file(source: Path) -> Optional[List[Dict[str, Any]]]:
    """The steps of `best_schedule.json`, the search's own record of its best model's schedule
    (None for a search written before the file existed: the journal's lineage then serves)."""
    try:
        fd = open_regular(source / SCHEDULE_FILE)
    except OSError:
        return None
    try:
        data = json.loads(os.read(fd, 1 << 24).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        raise ConfigError(f"{shown(source / SCHEDULE_FILE)}: not a schedule autofinetune wrote; fix: delete it to retrain from the journal") from None
    finally:
        os.close(fd)
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) and isinstance(s.get("params"), dict) for s in steps):
        raise ConfigError(f"{shown(source / SCHEDULE_FILE)}: holds no steps; fix: delete it to retrain from the journal")
    return steps


def _wait(backend: LocalBackend) -> Any:
    while True:
        outcomes = backend.wait_any()
        if outcomes:
            return outcomes[0]


def _params(params: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def main_retrain(argv: Sequence[str]) -> int:
    """`autofinetune retrain OUTPUT_DIR --output_dir NEW [--gpu ID]`; returns the exit code."""
    parser = OneLineArgumentParser(prog="autofinetune retrain",
                                   description="Train the best model of a search again from scratch, following the schedule of its "
                                               "lineage (best_schedule.json): each step with its own hyperparameters.")
    parser.add_argument("search_dir", help="the search's --output_dir")
    parser.add_argument("--output_dir", required=True, help="a new folder for the retrained model and its logs")
    parser.add_argument("--gpu", default=None, help="the GPU id to train on (default: the first GPU pynvml finds, else the CPU)")
    args = parser.parse_args(list(argv))
    result = retrain(args.search_dir, args.output_dir, args.gpu)
    print(f"retrained: score {result['score']} (the search's best: {result['search_score']}); model in {result['steps'][-1]['model_dir']}")
    return 0
