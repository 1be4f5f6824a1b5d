"""`autofinetune plot OUTPUT_DIR`: one PNG of a search (finished or still running).

Top: the score of every finished trial in the order they finished, failed trials marked at the
bottom edge, and the best-so-far line. Below: one panel per hyperparameter, its value against
the score (log axis for `log: true` parameters, categories for choices). matplotlib is an
optional extra (`pip install autofinetune[plot]`), imported only here, with the Agg backend.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import AutofinetuneError, ConfigError
from ..records import JOURNAL
from .summary import _check_dir, _finite, read_events

DEFAULT_NAME = "plot.png"


def _load(out: Path) -> "tuple[Dict[str, Any], List[Dict[str, Any]]]":
    events, _ = read_events(out / JOURNAL)
    config: Dict[str, Any] = {}
    trials: List[Dict[str, Any]] = []
    for event in events:
        if event.get("event") == "start":
            config = dict(event.get("config") or {})
        elif event.get("event") == "finish" and isinstance(event.get("trial"), dict):
            trials.append(event["trial"])
    return config, trials


def _import_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plotting needs matplotlib, which is not installed; fix: pip install 'autofinetune[plot]' "
                          "(or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_search(output_dir: "os.PathLike[str] | str", output: Optional["os.PathLike[str] | str"] = None) -> Path:
    """Draw the search in `output_dir` into a PNG (default `<output_dir>/plot.png`); return its path."""
    out = _check_dir(output_dir)
    config, trials = _load(out)
    if not trials:
        raise ConfigError(f"{out}: no trial has finished yet, nothing to plot; fix: try again once one has")
    target = Path(output) if output is not None else out / DEFAULT_NAME
    plt = _import_pyplot()

    space = [p for p in config.get("space", []) if isinstance(p, dict) and p.get("name")]
    if not space:
        names: List[str] = []
        for trial in trials:
            names += [n for n in (trial.get("params") or {}) if n not in names]
        space = [{"name": n} for n in names]
    scores = [_finite(t.get("score")) if t.get("status") == "ok" else None for t in trials]
    ok_scores = [s for s in scores if s is not None]

    columns = min(3, max(1, len(space)))
    param_rows = math.ceil(len(space) / columns)
    figure = plt.figure(figsize=(4.2 * columns + 1.0, 3.2 * (param_rows + 1)), constrained_layout=True)
    grid = figure.add_gridspec(param_rows + 1, columns)
    title = f"{Path(str(config.get('script', ''))).name or 'search'}: {len(trials)} trials"
    if config.get("strategy"):
        title += f" | {config.get('strategy')} / {config.get('evaluator')} | seed {config.get('seed')}"
    figure.suptitle(title)

    # Score per trial, in the order they finished, and the best so far.
    axis = figure.add_subplot(grid[0, :])
    xs = list(range(1, len(trials) + 1))
    ok_x = [x for x, s in zip(xs, scores) if s is not None]
    axis.scatter(ok_x, ok_scores, s=18, color="tab:blue", label="trial score", zorder=3)
    best_line, best = [], None
    for s in scores:
        if s is not None and (best is None or s > best):
            best = s
        best_line.append(best if best is not None else math.nan)
    axis.step(xs, best_line, where="post", color="tab:orange", linewidth=2, label="best so far")
    failed_x = [x for x, s in zip(xs, scores) if s is None]
    if failed_x:
        span = (max(ok_scores) - min(ok_scores)) if len(ok_scores) > 1 else 1.0
        low = (min(ok_scores) - 0.06 * (span or 1.0)) if ok_scores else 0.0  # below every success
        axis.scatter(failed_x, [low] * len(failed_x), marker="x", color="tab:red", label="failed", zorder=3)
    boundaries = [x - 0.5 for x, (a, b) in enumerate(zip(trials, trials[1:]), start=2) if a.get("round") != b.get("round")]
    for x in boundaries:
        axis.axvline(x, color="0.85", linewidth=0.8, zorder=0)
    axis.set_xlabel("trial (in the order they finished; grey lines: new round)")
    axis.set_ylabel("score")
    axis.legend(loc="lower right", fontsize="small")
    axis.grid(True, alpha=0.3)

    # Each hyperparameter against the score.
    for n, param in enumerate(space):
        ax = figure.add_subplot(grid[1 + n // columns, n % columns])
        name = param["name"]
        values = [t.get("params", {}).get(name) for t in trials]
        pairs = [(v, s) for v, s in zip(values, scores) if s is not None and v is not None]
        if param.get("type") == "choice":
            categories = [str(v) for v in param.get("values", [])] or sorted({str(v) for v, _ in pairs})
            position = {c: i for i, c in enumerate(categories)}
            ax.scatter([position.get(str(v), -1) for v, _ in pairs], [s for _, s in pairs], s=18, color="tab:blue")
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories, rotation=30 if len(categories) > 4 else 0)
        else:
            ax.scatter([float(v) for v, _ in pairs], [s for _, s in pairs], s=18, color="tab:blue")
            if param.get("log") and all(float(v) > 0 for v, _ in pairs):
                ax.set_xscale("log")
        if best is not None:
            best_trial = next(t for t, s in zip(trials, scores) if s == best)
            value = best_trial.get("params", {}).get(name)
            if value is not None and param.get("type") != "choice":
                ax.axvline(float(value), color="tab:orange", linewidth=1, linestyle="--")
        ax.set_xlabel(name)
        ax.set_ylabel("score")
        ax.grid(True, alpha=0.3)

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(target, dpi=100)
    except OSError as error:
        raise ConfigError(f"--output={target}: cannot write the plot ({error.strerror or error}); fix: choose a writable path") from None
    finally:
        plt.close(figure)
    return target


class _OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> "None":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="autofinetune plot",
                            description="Draw a search as a PNG: score per trial with the best-so-far line, "
                                        "and each hyperparameter against the score.")
    parser.add_argument("output_dir", help="the search's --output_dir")
    parser.add_argument("--output", default=None, metavar="FILE", help=f"the PNG to write (default OUTPUT_DIR/{DEFAULT_NAME})")
    return parser


def main_plot(argv: Sequence[str]) -> int:
    """`autofinetune plot OUTPUT_DIR [--output FILE]`; returns the exit code."""
    args = build_parser().parse_args(list(argv))
    try:
        path = plot_search(args.output_dir, args.output)
    except AutofinetuneError as error:
        print(f"autofinetune plot: error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"wrote {path}")
    return 0
