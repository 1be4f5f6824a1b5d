"""`autofinetune summary OUTPUT_DIR`: what a finished or still-running search has found.

Everything comes from `journal.jsonl`, the search's record of truth, read without taking any
lock: a line the tuner is writing at that very moment (a torn last line) is ignored, trials that
were launched and have not finished are the running ones, and nothing is written anywhere, so
it is safe to run while the search goes on (also from another machine over a shared disk).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import AutofinetuneError, ConfigError
from ..records import JOURNAL

_KEY = re.compile(r"^r(\d+)-i(\d+)$")


# -- reading ----------------------------------------------------------------------------------
def read_events(journal: Path) -> Tuple[List[Dict[str, Any]], bool]:
    """The journal's events and whether its last line was torn (being written, or a crash)."""
    with open(journal, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    events: List[Dict[str, Any]] = []
    torn = False
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            if all(not rest.strip() for rest in lines[number:]):
                torn = True  # the last line: the tuner is writing it, or died writing it
                break
            raise ConfigError(f"{journal}: line {number} is not valid JSON (the journal is damaged); "
                              f"fix: restore it from a backup, or look at that line") from None
        if isinstance(event, dict):
            events.append(event)
    return events, torn


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _model_name(path: Optional[str]) -> Optional[str]:
    """`/x/out/round1/model-0` -> `round1/model-0`."""
    if not path:
        return None
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def _local(output_dir: Path, path: Optional[str]) -> Optional[str]:
    """A recorded path, re-rooted under output_dir when the search folder was moved."""
    if not path:
        return None
    p = Path(path)
    moved = output_dir / p.parent.name / p.name
    if not p.exists() and moved.exists():
        return str(moved)
    return str(p)


def _pid_alive(pid: Any) -> Optional[bool]:
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def _check_dir(output_dir: "os.PathLike[str] | str") -> Path:
    path = Path(output_dir)
    if not path.exists():
        raise ConfigError(f"{path}: no such directory; fix: give the --output_dir of a search")
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory; fix: give the --output_dir of a search")
    if not (path / JOURNAL).is_file():
        raise ConfigError(f"{path}: not an autofinetune output directory (no {JOURNAL}); "
                          f"fix: give the --output_dir of a search")
    return path.resolve()


# -- the summary ------------------------------------------------------------------------------
def _key(event: Dict[str, Any]) -> Optional[Tuple[int, int]]:
    """(round, index) of an event: its fields, or an older journal's `key` r<round>-i<index>."""
    if isinstance(event.get("round"), int) and isinstance(event.get("index"), int):
        return event["round"], event["index"]
    match = _KEY.match(str(event.get("key", "")))
    return (int(match.group(1)), int(match.group(2))) if match else None


def summarize(output_dir: "os.PathLike[str] | str", top: int = 5) -> Dict[str, Any]:
    """Summarise the search in `output_dir` as a JSON-ready dict (see `main_summary`).

    The journal's trial lifecycle: `queued` (params, parent, log path) -> `started` (pid, slot)
    -> `finish` (the trial record), with `retry` between failed attempts, `interrupted` for the
    trials a Ctrl-C stopped, `round` when a round is complete, and `start` / `resume` carrying
    the configuration. A trial queued again (a re-run after --resume) replaces its old outcome.
    """
    out = _check_dir(output_dir)
    journal = out / JOURNAL
    events, torn = read_events(journal)

    config: Dict[str, Any] = {}
    started_at: Optional[float] = None
    seen_start = False
    live: Dict[Tuple[int, int], Dict[str, Any]] = {}  # queued or running, by (round, index)
    finished: Dict[Tuple[int, int], Tuple[int, Dict[str, Any]]] = {}
    interrupted: Dict[Tuple[int, int], Dict[str, Any]] = {}
    retried: List[Dict[str, Any]] = []
    rounds_done: set = set()
    stopped_by_user = False
    for order, event in enumerate(events):
        kind = event.get("event")
        key = _key(event)
        if kind in ("start", "resume"):
            seen_start = True
            config = dict(event.get("config") or config)
            if started_at is None:
                started_at = _finite(event.get("time"))
            stopped_by_user = False
        elif kind in ("queued", "launch") and key:
            live[key] = {"queued": event, "state": "queued" if kind == "queued" else "running", "started": {}}
            finished.pop(key, None)
            interrupted.pop(key, None)
        elif kind == "started" and key:
            entry = live.setdefault(key, {"queued": {}, "started": {}})
            entry.update(state="running", started=event)
        elif kind == "retry" and key:
            retried.append({"round": key[0], "index": key[1], "attempt": event.get("attempt"), "status": event.get("status"),
                            "message": event.get("message") or "", "log_path": _local(out, event.get("log_path"))})
        elif kind == "finish" and isinstance(event.get("trial"), dict):
            trial = event["trial"]
            key = (trial.get("round"), trial.get("index"))
            live.pop(key, None)
            finished[key] = (order, trial)
        elif kind == "interrupted" and key:
            gone = live.pop(key, None) or {}
            interrupted[key] = {"round": key[0], "index": key[1], "was": "running",
                                "params": (gone.get("queued") or {}).get("params")}
            stopped_by_user = True
        elif kind == "round" and isinstance(event.get("round"), int):
            rounds_done.add(event["round"])
    if stopped_by_user:  # what was still queued when Ctrl-C came never started
        for key, entry in sorted(live.items()):
            interrupted[key] = {"round": key[0], "index": key[1], "was": entry.get("state", "queued"),
                                "params": (entry.get("queued") or {}).get("params")}
        live.clear()

    names = [entry.get("name") for entry in config.get("space", []) if isinstance(entry, dict)]
    if not names:
        for _, trial in finished.values():
            names += [n for n in (trial.get("params") or {}) if n not in names]
    popsize, planned_rounds = config.get("popsize"), config.get("rounds")
    planned = popsize * planned_rounds if isinstance(popsize, int) and isinstance(planned_rounds, int) else None

    rows = [_row(out, trial, names, order) for order, trial in sorted(finished.values(), key=lambda item: item[0])]
    ok = [r for r in rows if r["status"] == "ok" and r["score"] is not None]
    best = None
    for row in ok:  # strictly better only: the earlier trial wins a tie, as in records.py
        if best is None or row["score"] > best["score"]:
            best = row
    ranked = sorted(ok, key=lambda r: (-r["score"], r["order"]))
    running, queued = [], []
    for (r, i), entry in sorted(live.items()):
        q, st = entry.get("queued") or {}, entry.get("started") or {}
        item = {"round": r, "index": i, "attempt": q.get("attempt", 0), "params": q.get("params"),
                "parent": _model_name((q.get("parent") or {}).get("model_dir")),
                "log_path": _local(out, q.get("log_path") or str(out / f"round{r}" / f"log-{i}.info")),
                "slot": st.get("slot"), "pid": st.get("pid")}
        (running if entry.get("state") == "running" else queued).append(item)

    if not seen_start:
        state = "starting"
    elif isinstance(planned_rounds, int) and len(rounds_done) >= planned_rounds and not live:
        state = "finished"
    elif stopped_by_user:
        state = "interrupted"
    elif running and all(_pid_alive(r["pid"]) is False for r in running):
        state = "stopped"  # no trial process is alive (judged on this machine): the tuner died
    else:
        state = "running"

    ended_at = time.time() if state in ("running", "starting") else journal.stat().st_mtime
    summary: Dict[str, Any] = {
        "output_dir": str(out),
        "state": state,
        "journal_torn_last_line": torn,
        "config": {k: config.get(k) for k in ("script", "strategy", "evaluator", "popsize", "rounds", "seed", "timeout", "slots")},
        "params": names,
        "started_at": started_at,
        "elapsed": None if started_at is None else max(0.0, ended_at - started_at),
        "counts": {
            "planned": planned,
            "finished": len(rows),
            "ok": len(ok),
            "failed": len(rows) - len(ok),
            "running": len(running),
            "queued": len(queued),
            "interrupted": len(interrupted),
            "retried": len(retried),
            "rounds_done": len(rounds_done),
        },
        "best": _public(best),
        "top": [dict(_public(r), rank=n) for n, r in enumerate(ranked[:max(0, top)], start=1)],
        "rounds": _per_round(rows, running, rounds_done),
        "failures": [dict(_public(r), log_tail=log_tail(r["log_path"])) for r in rows
                     if not (r["status"] == "ok" and r["score"] is not None)],
        "running": running,
        "queued": queued,
        "retried": retried,
        "interrupted": [interrupted[k] for k in sorted(interrupted)],
        "lineage": _lineage(best, rows, config.get("evaluator")),
    }
    return summary


def _row(out: Path, trial: Dict[str, Any], names: Sequence[str], order: int) -> Dict[str, Any]:
    params = trial.get("params") or {}
    parent = trial.get("parent") or {}
    return {
        "round": trial.get("round"),
        "index": trial.get("index"),
        "attempt": trial.get("attempt", 0),
        "params": {n: params.get(n) for n in names},
        "score": _finite(trial.get("score")),
        "status": trial.get("status"),
        "duration": _finite(trial.get("duration")),
        "slot": trial.get("slot"),
        "gpu": trial.get("gpu"),
        "model": _model_name(trial.get("model_dir")),
        "parent": _model_name(parent.get("model_dir")) if parent else None,
        "parent_key": (parent.get("round"), parent.get("index")) if parent else None,
        "log_path": _local(out, trial.get("log_path")),
        "model_dir": _local(out, trial.get("model_dir")),
        "exit_code": trial.get("exit_code"),
        "message": trial.get("message") or "",
        "order": order,
    }


def _public(row: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if row is None:
        return None
    return {k: v for k, v in row.items() if k not in ("order", "parent_key")}


def _per_round(rows: List[Dict[str, Any]], running: List[Dict[str, Any]], rounds_done: set) -> List[Dict[str, Any]]:
    numbers = sorted({r["round"] for r in rows if isinstance(r["round"], int)} | {r["round"] for r in running} | rounds_done)
    result = []
    for number in numbers:
        mine = [r for r in rows if r["round"] == number]
        ok = [r for r in mine if r["status"] == "ok" and r["score"] is not None]
        best = max(ok, key=lambda r: (r["score"], -r["order"])) if ok else None
        result.append({
            "round": number,
            "finished": len(mine),
            "ok": len(ok),
            "failed": len(mine) - len(ok),
            "running": sum(1 for r in running if r["round"] == number),
            "complete": number in rounds_done,
            "best_score": best["score"] if best else None,
            "best_index": best["index"] if best else None,
            "best_params": best["params"] if best else None,
        })
    return result


def _lineage(best: Optional[Dict[str, Any]], rows: List[Dict[str, Any]], evaluator: Any) -> Optional[List[str]]:
    """`[round0/model-3, round1/model-0, ...]`: the models the best one was trained on from."""
    if best is None or (best["parent_key"] is None and evaluator != "populationbased"):
        return None
    by_key: Dict[Tuple[Any, Any], Dict[str, Any]] = {}
    for row in rows:  # the last successful attempt of a candidate is the model a child got
        key = (row["round"], row["index"])
        if key not in by_key or row["status"] == "ok":
            by_key[key] = row
    chain = [best["model"] or f"round{best['round']}/model-{best['index']}"]
    seen = {(best["round"], best["index"])}
    current = best
    while current["parent_key"] is not None:
        key = current["parent_key"]
        parent = by_key.get(key)
        if key in seen:
            break
        seen.add(key)
        chain.append(current["parent"] or f"round{key[0]}/model-{key[1]}")
        if parent is None:
            break
        current = parent
    return list(reversed(chain))


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
    """0:01:05 style; `?` when unknown."""
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


def log_tail(path: Optional[str], limit: int = 4096) -> str:
    """The last non-empty line of a trial's log (read from its end: logs can be huge)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in data.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _params_text(params: Optional[Dict[str, Any]]) -> str:
    return " ".join(f"{k}={v}" for k, v in (params or {}).items())


def format_text(summary: Dict[str, Any]) -> str:
    c, n = summary["config"], summary["counts"]
    names = summary["params"]
    lines = []
    planned = f"/{n['planned']}" if n["planned"] is not None else ""
    lines.append(f"Search {summary['output_dir']}: {summary['state']}, {n['finished']}{planned} trials finished "
                 f"({n['ok']} ok, {n['failed']} failed), {n['running']} running, {n['queued']} queued, "
                 f"elapsed {_duration(summary['elapsed'])}")
    if c.get("script"):
        lines.append(f"  {c['script']} | strategy {c.get('strategy')} | evaluator {c.get('evaluator')} | "
                     f"popsize {c.get('popsize')} x round {c.get('rounds')} | seed {c.get('seed')}")
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
        header = ["round", "finished", "ok", "failed", "running", "best score", "best trial"]
        rows = [[str(r["round"]) + ("" if r["complete"] else " *"), str(r["finished"]), str(r["ok"]), str(r["failed"]),
                 str(r["running"]), _cell(r["best_score"]), _cell(r["best_index"])] for r in summary["rounds"]]
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
class _OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> "None":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="autofinetune summary",
                            description="Summarise a finished or still-running search: best trial, top-k, per-round "
                                        "best, running trials, failures with their logs, lineage of the best model.")
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
