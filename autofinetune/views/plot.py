"""`autofinetune plot OUTPUT_DIR`: one PNG of a search (finished or still running).

Top: the score of every finished trial in the order they finished, failed trials marked at the
bottom edge, and the best-so-far line. Below: one panel per hyperparameter, its value against
the score (log axis for `log: true` parameters, categories for choices), the best trial's value
dashed. When trials reported intermediate results, a panel of their learning curves comes second,
the pruned ones in red and ending in a cross at the step the pruner stopped them (docs/pruning.md). The trials, their order and the best one come from `journal.replay()` and rules.py, as
for `summary` (docs/architecture.md, "One place per idea").

matplotlib is an optional extra (`pip install autofinetune[plot]`), imported only here, and only
through its object-oriented API (`Figure` + the Agg canvas): pyplot and `matplotlib.use()` would
change the backend of a notebook that calls `plot_search`.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from ..errors import AutofinetuneError, ConfigError
from ..journal import JOURNAL, SearchState, replay
from ..options import OneLineArgumentParser
from ..records import TrialRecord
from ..rules import better, is_success
from ..runner import Status
from .summary import _check_dir

DEFAULT_NAME = "plot.png"


def _import_matplotlib() -> Tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plotting needs matplotlib, which is not installed; fix: pip install 'autofinetune[plot]' "
                          "(or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg


class _Axis:
    """How one hyperparameter is drawn: its name, whether a choice (and of what), whether log."""

    def __init__(self, name: str, choices: Optional[List[Any]] = None, log: bool = False) -> None:
        self.name, self.choices, self.log = name, choices, log


def _axes(state: SearchState, trials: Sequence[TrialRecord]) -> List[_Axis]:
    """The journaled space as Param objects (the hparam.yaml entries); a space this version
    cannot parse still plots, by the names the trials carry and their values' types."""
    entries = state.config.get("space")
    try:
        from ..space import SearchSpace

        space = SearchSpace.from_list(entries, source=str(state.path))
    except Exception:  # noqa: BLE001 - a journal from another version: plot what the trials say
        names: List[str] = []
        for trial in trials:
            names += [n for n in trial.params if n not in names]
        found = []
        for name in names:
            values = [t.params.get(name) for t in trials if t.params.get(name) is not None]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            found.append(_Axis(name, None if numeric else sorted({str(v) for v in values})))
        return found
    return [_Axis(p.name, list(p.values) if p.kind == "choice" else None, bool(getattr(p, "log", False)))
            for p in space.params]


def plot_search(output_dir: "os.PathLike[str] | str", output: Optional["os.PathLike[str] | str"] = None) -> Path:
    """Draw the search in `output_dir` into a PNG (default `<output_dir>/plot.png`); return its path."""
    out = _check_dir(output_dir)
    state = replay(out / JOURNAL)
    trials = [state.finished[key] for key in state.finish_order]  # the order they finished in
    if not trials:
        raise ConfigError(f"{out}: no trial has finished yet, nothing to plot; fix: try again once one has")
    target = Path(output) if output is not None else out / DEFAULT_NAME
    Figure, FigureCanvasAgg = _import_matplotlib()

    axes = _axes(state, trials)
    scores = [float(t.score) if is_success(t) else None for t in trials]  # type: ignore[arg-type]
    ok_scores = [s for s in scores if s is not None]
    best = state.best
    config = state.config

    columns = min(3, max(1, len(axes)))
    param_rows = math.ceil(len(axes) / columns)
    curves = [(t, state.curve(t)) for t in trials if state.curve(t)]
    top_rows = 2 if curves else 1
    figure = Figure(figsize=(4.2 * columns + 1.0, 3.2 * (param_rows + top_rows)), constrained_layout=True)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(param_rows + top_rows, columns)
    title = f"{Path(str(config.get('script', ''))).name or 'search'}: {len(trials)} trials"
    if config.get("strategy"):
        title += f" | {config.get('strategy')} / {config.get('evaluator')} | seed {config.get('seed')}"
    figure.suptitle(title)

    # Score per trial, in the order they finished, and the best so far (by rules.better).
    axis = figure.add_subplot(grid[0, :])
    xs = list(range(1, len(trials) + 1))
    axis.scatter([x for x, s in zip(xs, scores) if s is not None], ok_scores, s=18, color="tab:blue", label="trial score", zorder=3)
    best_line: List[float] = []
    so_far: Optional[TrialRecord] = None
    for trial in trials:
        if better(trial, so_far):
            so_far = trial
        best_line.append(float(so_far.score) if so_far is not None else math.nan)  # type: ignore[arg-type]
    axis.step(xs, best_line, where="post", color="tab:orange", linewidth=2, label="best so far")
    if best is not None:
        where = trials.index(best) + 1
        axis.scatter([where], [best.score], s=90, marker="*", color="tab:orange", zorder=4,
                     label=f"best: round {best.round} trial {best.index}")
    pruned = [(x, t) for x, t in zip(xs, trials) if t.status == Status.PRUNED and t.score is not None and math.isfinite(t.score)]
    if pruned:
        axis.scatter([x for x, _ in pruned], [float(t.score) for _, t in pruned], s=22, marker="v", color="tab:red",  # type: ignore[arg-type]
                     label="pruned (last intermediate score)", zorder=3)
    failed_x = [x for x, s, t in zip(xs, scores, trials) if s is None and not (t.status == Status.PRUNED and t.score is not None)]
    if failed_x:
        span = (max(ok_scores) - min(ok_scores)) if len(ok_scores) > 1 else 1.0
        low = (min(ok_scores) - 0.06 * (span or 1.0)) if ok_scores else 0.0  # below every success
        axis.scatter(failed_x, [low] * len(failed_x), marker="x", color="tab:red", label="failed", zorder=3)
    for x, (a, b) in enumerate(zip(trials, trials[1:]), start=2):
        if a.round != b.round:
            axis.axvline(x - 0.5, color="0.85", linewidth=0.8, zorder=0)
    axis.set_xlabel("trial (in the order they finished; grey lines: new round)")
    axis.set_ylabel("score")
    axis.legend(loc="lower right", fontsize="small")
    axis.grid(True, alpha=0.3)

    if curves:
        _draw_curves(figure.add_subplot(grid[1, :]), curves, best)

    # Each hyperparameter against the score.
    for n, param in enumerate(axes):
        ax = figure.add_subplot(grid[top_rows + n // columns, n % columns])
        pairs = [(t.params.get(param.name), s) for t, s in zip(trials, scores) if s is not None and t.params.get(param.name) is not None]
        best_value = best.params.get(param.name) if best is not None else None
        if param.choices is not None:
            categories = [str(v) for v in param.choices]
            position = {c: i for i, c in enumerate(categories)}
            ax.scatter([position.get(str(v), -1) for v, _ in pairs], [s for _, s in pairs], s=18, color="tab:blue")
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories, rotation=30 if len(categories) > 4 else 0)
            if best_value is not None and str(best_value) in position:
                ax.axvline(position[str(best_value)], color="tab:orange", linewidth=1, linestyle="--")
        else:
            ax.scatter([float(v) for v, _ in pairs], [s for _, s in pairs], s=18, color="tab:blue")
            if param.log and pairs and all(float(v) > 0 for v, _ in pairs):
                ax.set_xscale("log")
            if best_value is not None:
                ax.axvline(float(best_value), color="tab:orange", linewidth=1, linestyle="--")
        ax.set_xlabel(param.name)
        ax.set_ylabel("score")
        ax.grid(True, alpha=0.3)

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=100)
    except OSError as error:
        raise ConfigError(f"--output={target}: cannot write the plot ({error.strerror or error}); fix: choose a writable path") from None
    return target


def _draw_curves(axis: Any, curves: Sequence[Tuple[TrialRecord, Sequence[Tuple[int, float]]]], best: Optional[TrialRecord]) -> None:
    """Every trial's intermediate results against its steps: finished trials blue, pruned red
    with a cross where the pruner stopped them, the best trial's curve orange."""
    labelled = set()
    for trial, curve in curves:
        points = [(step, score) for step, score in curve if math.isfinite(score)]
        if not points:
            continue
        steps, values = [p[0] for p in points], [p[1] for p in points]
        if best is not None and (trial.round, trial.index) == (best.round, best.index):
            kind, style = "best trial", {"color": "tab:orange", "linewidth": 2.2, "zorder": 4}
        elif trial.status == Status.PRUNED:
            kind, style = "pruned", {"color": "tab:red", "linewidth": 0.9, "alpha": 0.7, "zorder": 2}
        else:
            kind, style = "finished" if is_success(trial) else "failed", {"color": "tab:blue", "linewidth": 0.9, "alpha": 0.6, "zorder": 3}
        axis.plot(steps, values, label=kind if kind not in labelled else None, **style)
        labelled.add(kind)
        if trial.status == Status.PRUNED:
            at = trial.pruned_step if trial.pruned_step is not None else steps[-1]
            value = next((v for s, v in points if s == at), values[-1])
            axis.scatter([at], [value], marker="x", color="tab:red", s=30, zorder=5,
                         label="pruned here" if "pruned here" not in labelled else None)
            labelled.add("pruned here")
    axis.set_xlabel("step (as the trial reported it)")
    axis.set_ylabel("intermediate score")
    axis.legend(loc="lower right", fontsize="small")
    axis.grid(True, alpha=0.3)


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="autofinetune plot",
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
