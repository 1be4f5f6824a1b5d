"""What people see of a search: VisualDL logs, live progress, `summary` and `plot` commands.

Views are `SearchObserver`s (see autofinetune.search): they run in the tuner's process, after
the journal has the event, and a broken view is switched off without harming the search.
Nothing heavy is imported until a view or command needs it: visualdl, tqdm and matplotlib
only when used, and the search engine (numpy, cma) only with the views that observe a search,
so `autofinetune summary` starts fast.
"""
from __future__ import annotations

import os
from typing import Any, List

__all__ = ["default_observers", "ProgressView", "VisualDLView", "main_summary", "main_plot", "summarize"]


def default_observers(output_dir: "os.PathLike[str] | str | None" = None, progress: bool = True) -> list:
    """The views the CLI attaches: VisualDL logs under `<output_dir>/visualization`, and
    (unless `progress=False`) the progress line on stdout. `output_dir` may be None (the
    search's default folder): each view takes the search's own folder when it starts."""
    from .progress import ProgressView
    from .visualdl import VisualDLView

    observers: List[object] = [VisualDLView(output_dir)]
    if progress:
        observers.append(ProgressView())
    return observers


def main_summary(argv: "list[str]") -> int:
    from .summary import main_summary as run

    return run(argv)


def main_plot(argv: "list[str]") -> int:
    from .plot import main_plot as run

    return run(argv)


def summarize(output_dir: "os.PathLike[str] | str", top: int = 5) -> dict:
    from .summary import summarize as run

    return run(output_dir, top=top)


def __getattr__(name: str) -> Any:
    if name == "ProgressView":
        from .progress import ProgressView

        return ProgressView
    if name == "VisualDLView":
        from .visualdl import VisualDLView

        return VisualDLView
    raise AttributeError(f"module 'autofinetune.views' has no attribute {name!r}")
