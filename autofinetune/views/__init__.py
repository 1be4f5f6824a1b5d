"""What people see of a search: VisualDL logs, live progress, `summary` and `plot` commands.

Views are `SearchObserver`s (see autofinetune.search): they run in the tuner's process, after
the journal has the event, see only a read-only `SearchSnapshot`, and a broken view is switched
off without harming the search. `tune()` attaches VisualDL (and, from the CLI, the progress
line) itself; more views go in its `observers`. `summary` and `plot` read the journal's one
replay (journal.py), as `--resume` does.

Nothing heavy is imported until a view or command needs it: visualdl, tqdm and matplotlib
only when used, and the search engine (numpy, cma) only with the views that observe a search,
so `autofinetune summary` starts fast.
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["ProgressView", "VisualDLView", "main_summary", "main_plot", "summarize"]


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
