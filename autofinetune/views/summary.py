"""`autofinetune summary OUTPUT_DIR`: what a finished or still-running search has found.

Everything comes from `journal.replay()`'s `SearchState` and the rules of rules.py, the same
ones `best_model/`, VisualDL and `--resume` use, so the summary cannot name another best trial
or another lineage than the search did (docs/architecture.md, "One place per idea"). The journal
is read without any lock: a torn last line is left out, and nothing is written anywhere, so it is
safe to run while the search goes on (also from another machine over a shared disk).

A journal is data that may have been crafted: the only files read besides it are trial logs, and
only those that lie inside the output directory (docs/security.md).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import AutofinetuneError, ConfigError, path_error, shown
from ..journal import JOURNAL, SearchState, StartedEvent, replay
from ..options import OneLineArgumentParser
from ..records import TrialRecord
from ..rules import is_success, lineage, model_name, rank_key, ranked, schedule
from ..runner import ProcessIdentity, Status, process_start_ticks
from ..runner import log_tail as read_log_tail


# -- paths --------------------------------------------------------------------------------------
def _check_dir(output_dir: "os.PathLike[str] | str") -> Path:
    path = Path(output_dir)
    try:
        if not path.exists():
            raise ConfigError(f"{shown(path)}: no such directory; fix: give the --output_dir of a search")
        if not path.is_dir():
            raise ConfigError(f"{shown(path)}: not a directory; fix: give the --output_dir of a search")
        if not (path / JOURNAL).is_file():
            raise ConfigError(f"{shown(path)}: not an autofinetune output directory (no {JOURNAL}); "
                              f"fix: give the --output_dir of a search")
        return path.resolve()
    except (OSError, RuntimeError) as error:
        raise path_error("OUTPUT_DIR", path, error, "give the --output_dir of a search") from None


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError, ValueError):
        return False


def _local(output_dir: Path, path: Optional[str]) -> Optional[str]:
    """A recorded path, re-rooted under output_dir when the search folder was moved or copied
    (a copy's own logs, not the original's, are what it describes)."""
    if not path:
        return None
    recorded = Path(path)
    if _inside(recorded, output_dir):
        return str(recorded)
    moved = output_dir / recorded.parent.name / recorded.name
    if _inside(moved, output_dir) and moved.exists():
        return str(moved)
    return str(recorded)


def log_tail(path: Optional[str], root: Path, limit: int = 4096) -> str:
    """The last non-empty line of a trial's log (runner.log_tail: regular files only, read from
    the end), and only of a log inside `root` (the output dir, symlinks resolved): the path comes
    from the journal, and a crafted journal must not make `summary` print an arbitrary file."""
    if not path:
        return ""
    try:
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(Path(root).resolve()):
            return ""
    except (OSError, RuntimeError, ValueError):
        return ""
    return read_log_tail(resolved, limit)


# -- helpers ------------------------------------------------------------------------------------
def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _parent_name(parent: Optional[Dict[str, Any]]) -> Optional[str]:
    """The parent's model as rules.model_name names it (the parent may be missing from the journal)."""
    if not parent or not isinstance(parent.get("round"), int) or not isinstance(parent.get("index"), int):
        return None
    return model_name(TrialRecord(round=parent["round"], index=parent["index"], params={}, point=[]))


def _alive(event: StartedEvent) -> Optional[bool]:
    """Is the trial's process alive? None when this machine cannot tell (another host, a Dask worker)."""
    if event.pid <= 0:
        return None
    identity = ProcessIdentity(event.pid, event.start_ticks, event.host, event.boot_id, event.worker)
    if identity.worker is not None or identity.is_elsewhere():
        return None
    try:
        os.kill(event.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return None
    ticks = process_start_ticks(event.pid)
    if ticks is not None and event.start_ticks is not None and ticks != event.start_ticks:
        return False  # the pid now belongs to a later process
    return True


def _param_names(state: SearchState) -> List[str]:
    names = [entry.get("name") for entry in state.config.get("space", []) if isinstance(entry, dict)]
    names = [n for n in names if isinstance(n, str)]
    if not names:
        for trial in state.trials:
            names += [n for n in trial.params if n not in names]
    return names


def _row(out: Path, trial: TrialRecord, names: Sequence[str]) -> Dict[str, Any]:
    return {
        "round": trial.round,
        "index": trial.index,
        "attempt": trial.attempt,
        "params": {n: trial.params.get(n) for n in names},
        "score": _finite(trial.score),
        "status": str(trial.status),
        "duration": _finite(trial.duration),
        "slot": trial.slot,
        "gpu": trial.gpu,
        "model": model_name(trial),
        "parent": _parent_name(trial.parent),
        "log_path": _local(out, trial.log_path),
        "model_dir": _local(out, trial.model_dir),
        "exit_code": trial.exit_code,
        "message": trial.message or "",
    }


# -- the summary ------------------------------------------------------------------------------
def summarize(output_dir: "os.PathLike[str] | str", top: int = 5) -> Dict[str, Any]:
    """Summarise the search in `output_dir` as a JSON-ready dict (see `main_summary`).

    A damaged journal raises its `JournalError` (one line naming file and line): a summary of
    half a journal would silently describe another search.
    """
    out = _check_dir(output_dir)
    journal = out / JOURNAL
    state = replay(journal)
    names = _param_names(state)
    trials = state.trials
    rows = {(t.round, t.index): _row(out, t, names) for t in trials}
    successes = [t for t in trials if is_success(t)]
    pruned = [t for t in trials if t.status == Status.PRUNED]

    live = state.live
    started = state.running
    interrupted: Dict[Any, Dict[str, Any]] = {}
    for key, event in state.interrupted.items():
        queued = state.queued.get(key)
        was = "running" if key in state.started and (queued is None or state.started[key].attempt == queued.attempt) else "queued"
        interrupted[key] = {"round": key[0], "index": key[1], "was": was, "params": queued.params if queued else None}
    running: List[Dict[str, Any]] = []
    queued_list: List[Dict[str, Any]] = []
    for key, event in sorted(live.items()):
        if state.stopped_by_user:  # what a shutdown left in the queue (or running) is run again by --resume
            interrupted[key] = {"round": key[0], "index": key[1], "was": "running" if key in started else "queued",
                                "params": event.params}
            continue
        begun = started.get(key)
        item = {"round": key[0], "index": key[1], "attempt": event.attempt, "params": event.params,
                "parent": _parent_name(event.parent),
                "log_path": _local(out, event.log_path or str(out / f"round{key[0]}" / f"log-{key[1]}.info")),
                "slot": begun.slot if begun else None, "pid": begun.pid if begun else None}
        (running if begun is not None else queued_list).append(item)

    rounds_done = state.rounds_complete
    if not state.has_start:
        status = "starting"
    elif state.finished_search:
        status = "finished"
    elif state.stopped_by_user:
        status = "interrupted"
    elif started and all(_alive(started[key]) is False for key in started):
        status = "stopped"  # no trial process is alive (judged on this machine): the tuner died
    else:
        status = "running"

    best = state.best
    chain = (lineage(best, trials) if best is not None and (best.parent or state.config.get("evaluator") == "populationbased")
             else None)
    popsize, planned_rounds = state.popsize, state.rounds
    planned = popsize * planned_rounds if popsize is not None and planned_rounds is not None else None
    ended_at = time.time() if status in ("running", "starting") else journal.stat().st_mtime
    started_at = state.started_at
    return {
        "output_dir": str(out),
        "state": status,
        "journal_torn_last_line": state.torn,
        "config": {key: state.config.get(key) for key in
                   ("script", "strategy", "evaluator", "popsize", "rounds", "seed", "timeout", "slots", "asynchronous")},
        "params": names,
        "started_at": started_at,
        "elapsed": None if started_at is None else max(0.0, ended_at - started_at),
        "counts": {
            "planned": planned,
            "finished": len(trials),
            "ok": len(successes),
            "pruned": len(pruned),
            "failed": len(trials) - len(successes) - len(pruned),
            "running": len(running),
            "queued": len(queued_list),
            "interrupted": len(interrupted),
            "retried": len(state.retries),
            "rounds_done": len(rounds_done),
        },
        "best": rows[(best.round, best.index)] if best is not None else None,
        "top": [dict(rows[(t.round, t.index)], rank=n) for n, t in enumerate(ranked(trials)[:max(0, top)], start=1)],
        "rounds": _per_round(trials, rows, running, rounds_done),
        "failures": [dict(rows[(t.round, t.index)], log_tail=log_tail(rows[(t.round, t.index)]["log_path"], out))
                     for t in trials if not is_success(t) and t.status != Status.PRUNED],
        "pruning": _pruning(state, trials, successes, pruned, rows),
        "running": running,
        "queued": queued_list,
        "retried": [{"round": r.round, "index": r.index, "attempt": r.attempt, "status": r.status,
                     "message": r.message or "", "log_path": _local(out, r.log_path)} for r in state.retries],
        "interrupted": [interrupted[key] for key in sorted(interrupted)],
        "lineage": [model_name(t) for t in chain] if chain is not None else None,
        "lineage_schedule": (schedule(best, trials, state.config.get("resume_epochs", 1) if chain and len(chain) > 1 else None)
                             if chain is not None and best is not None else None),
    }


def _pruning(state: SearchState, trials: Sequence[TrialRecord], successes: Sequence[TrialRecord], pruned: Sequence[TrialRecord],
             rows: Dict[Any, Dict[str, Any]]) -> Dict[str, Any]:
    """What the pruner did and an estimate of the trial time it saved (docs/pruning.md).

    A pruned trial would have run about as long as the trials that finished: the saving is the
    median duration of those minus what it ran. Not its own time scaled by its steps: a trial's
    start-up (importing a framework, loading data) does not shrink with the steps, and scaling
    it overstated the saving of the image example twelvefold.
    """
    full_durations = sorted(t.duration for t in successes if t.duration)
    median_duration = full_durations[len(full_durations) // 2] if full_durations else None
    saved = 0.0
    estimated = 0
    for trial in pruned:
        if median_duration is None:
            break
        saved += max(0.0, median_duration - (trial.duration or 0.0))
        estimated += 1
    return {
        "pruner": state.config.get("pruner", "none"),
        "options": state.config.get("pruner_options") or {},
        "pruned": len(pruned),
        "trial_seconds": sum(t.duration or 0.0 for t in trials),
        "pruned_seconds": sum(t.duration or 0.0 for t in pruned),
        "saved_seconds": saved if estimated else None,
        "trials": [dict(rows[(t.round, t.index)], pruned_step=t.pruned_step, last_step=t.last_step) for t in pruned],
    }


def _per_round(trials: Sequence[TrialRecord], rows: Dict[Any, Dict[str, Any]], running: List[Dict[str, Any]],
               rounds_done: "frozenset[int]") -> List[Dict[str, Any]]:
    numbers = sorted({t.round for t in trials} | {r["round"] for r in running} | set(rounds_done))
    result = []
    for number in numbers:
        mine = [t for t in trials if t.round == number]
        ok = [t for t in mine if is_success(t)]
        pruned = sum(1 for t in mine if t.status == Status.PRUNED)
        best = min(ok, key=rank_key) if ok else None
        result.append({
            "round": number,
            "finished": len(mine),
            "ok": len(ok),
            "pruned": pruned,
            "failed": len(mine) - len(ok) - pruned,
            "running": sum(1 for r in running if r["round"] == number),
            "complete": number in rounds_done,
            "best_score": _finite(best.score) if best else None,
            "best_index": best.index if best else None,
            "best_params": rows[(best.round, best.index)]["params"] if best else None,
        })
    return result


# -- text ---------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _table(header: List[str], rows: List[List[str]], indent: str = "  ") -> List[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in [header, *rows]]


def format_duration(seconds: Optional[float]) -> str:
    """0:01:05 style; `?` when unknown (the progress line shares it, so both read alike)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _duration(seconds: Optional[float]) -> str:
    """12.3s under a minute, else 0:01:05."""
    if seconds is not None and 0 <= seconds < 60:
        return f"{seconds:.1f}s"
    return format_duration(seconds)


def _params_text(params: Optional[Dict[str, Any]]) -> str:
    return " ".join(f"{k}={v}" for k, v in (params or {}).items())


def format_text(summary: Dict[str, Any]) -> str:
    """The summary for a terminal (the JSON form holds the same facts)."""
    c, n = summary["config"], summary["counts"]
    names = summary["params"]
    lines = []
    planned = f"/{n['planned']}" if n["planned"] is not None else ""
    lines.append(f"Search {summary['output_dir']}: {summary['state']}, {n['finished']}{planned} trials finished "
                 f"({n['ok']} ok, {str(n['pruned']) + ' pruned, ' if n.get('pruned') else ''}{n['failed']} failed), "
                 f"{n['running']} running, {n['queued']} queued, "
                 f"elapsed {_duration(summary['elapsed'])}")
    if c.get("script"):
        lines.append(f"  {c['script']} | strategy {c.get('strategy')} | evaluator {c.get('evaluator')} | "
                     f"popsize {c.get('popsize')} x round {c.get('rounds')}{' (async)' if c.get('asynchronous') else ''} | "
                     f"seed {c.get('seed')}")
    if summary["journal_torn_last_line"]:
        lines.append("  (the journal's last line is being written or was torn by a crash; it is left out)")
    best = summary["best"]
    lines.append("")
    if best is None:
        lines.append("Best: none yet (no trial has succeeded)")
    else:
        lines.append(f"Best: score {best['score']!r} at round {best['round']}, trial {best['index']} ({best['model']})")
        for name, value in best["params"].items():
            lines.append(f"  {name}={value}")
    if summary["lineage"]:
        lines.append(f"Lineage of the best model: {' -> '.join(summary['lineage'])}")
    if summary["lineage_schedule"] and len(summary["lineage_schedule"]) > 1:
        lines.append("")
        lines.append("Schedule of the best lineage (the hyperparameters each of its models was trained with):")
        rows = [[s["model"], _cell(s["score"]), *(_cell(s["params"].get(k)) for k in names)] for s in summary["lineage_schedule"]]
        lines += _table(["model", "score", *names], rows)
    if summary["top"]:
        lines.append("")
        lines.append(f"Top {len(summary['top'])}:")
        header = ["rank", "round", "trial", "score", *names, "duration", "parent"]
        rows = [[str(r["rank"]), _cell(r["round"]), _cell(r["index"]), _cell(r["score"]),
                 *(_cell(r["params"].get(k)) for k in names), _duration(r["duration"]), r["parent"] or "-"] for r in summary["top"]]
        lines += _table(header, rows)
    if summary["rounds"]:
        lines.append("")
        lines.append("Per round:")
        header = ["round", "finished", "ok", "pruned", "failed", "running", "best score", "best trial"]
        rows = [[str(r["round"]) + ("" if r["complete"] else " *"), str(r["finished"]), str(r["ok"]), str(r["pruned"]),
                 str(r["failed"]), str(r["running"]), _cell(r["best_score"]), _cell(r["best_index"])] for r in summary["rounds"]]
        lines += _table(header, rows)
        if any(not r["complete"] for r in summary["rounds"]):
            lines.append("  (* = round not finished yet)")
    if summary["running"]:
        lines.append("")
        label = "Were running when the tuner stopped" if summary["state"] == "stopped" else "Running"
        lines.append(f"{label} ({len(summary['running'])}):")
        for r in summary["running"]:
            lines.append(f"  round {r['round']} trial {r['index']}: {_params_text(r['params'])}; log {r['log_path']}")
    if summary["queued"]:
        lines.append("")
        lines.append(f"Queued ({len(summary['queued'])}): "
                     + ", ".join(f"round {r['round']} trial {r['index']}" for r in summary["queued"]))
    pruning = summary["pruning"]
    if pruning["pruned"]:
        lines.append("")
        saved = pruning["saved_seconds"]
        share = (f"; about {_duration(saved)} of trial time saved "
                 f"({saved / (pruning['trial_seconds'] + saved):.0%} of the trial time the search would have taken without pruning)"
                 if saved is not None and pruning["trial_seconds"] + saved > 0 else "")
        lines.append(f"Pruned ({pruning['pruned']}, by {pruning['pruner']}): they ran {_duration(pruning['pruned_seconds'])}{share}")
        for r in pruning["trials"]:
            lines.append(f"  round {r['round']} trial {r['index']} at step {_cell(r['pruned_step'])}, last score {_cell(r['score'])}: "
                         f"{_params_text(r['params'])}")
    if summary["failures"]:
        lines.append("")
        lines.append(f"Failures ({len(summary['failures'])}):")
        for r in summary["failures"]:
            lines.append(f"  round {r['round']} trial {r['index']} {r['status']}: {r['message'] or 'no message'}; log {r['log_path']}")
            if r.get("log_tail"):
                lines.append(f"    last log line: {r['log_tail']}")
    if summary["retried"]:
        lines.append("")
        lines.append(f"Retried attempts ({len(summary['retried'])}):")
        for r in summary["retried"]:
            lines.append(f"  round {r['round']} trial {r['index']} attempt {r['attempt']} {r['status']}: "
                         f"{r['message'] or 'no message'}; log {r['log_path']}")
    if summary["interrupted"]:
        lines.append("")
        lines.append(f"Interrupted ({len(summary['interrupted'])}, run again by --resume): "
                     + ", ".join(f"round {r['round']} trial {r['index']}" + ("" if r["was"] == "running" else " (never started)")
                                 for r in summary["interrupted"]))
    if summary["state"] == "stopped":
        lines.append("")
        lines.append("No trial process of this search is alive on this machine: the tuner seems to have stopped; "
                     "continue it with the same command plus --resume.")
    return "\n".join(lines) + "\n"


# -- the command ----------------------------------------------------------------------------------
def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="autofinetune summary",
                                   description="Summarise a finished or still-running search: best trial, top-k, per-round "
                                               "best, running trials, failures with their logs, lineage of the best model "
                                               "and the schedule of hyperparameters it was trained with.")
    parser.add_argument("output_dir", help="the search's --output_dir")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json, for machines")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="how many of the best trials to list (default 5)")
    return parser


def main_summary(argv: Sequence[str]) -> int:
    """`autofinetune summary OUTPUT_DIR [--format text|json] [--top K]`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.top < 0:
        parser.error(f"--top={args.top}: must be 0 or more")
    try:
        summary = summarize(args.output_dir, top=args.top)
    except AutofinetuneError as error:
        print(f"autofinetune summary: error: {error}", file=sys.stderr)
        return error.exit_code
    if args.format == "json":
        sys.stdout.write(json.dumps(summary, indent=1, allow_nan=False, default=str) + "\n")
    else:
        sys.stdout.write(format_text(summary))
    sys.stdout.flush()
    return 0
