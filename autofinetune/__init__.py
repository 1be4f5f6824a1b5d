"""autofinetune: tune the hyperparameters of any training script.

`import autofinetune` runs once in every trial, so this module imports only the standard
library; the tuner-side API (`tune`, `SearchSpace`) is loaded on first use.
"""
from __future__ import annotations

from typing import Any

from .reporting import report_final_result, report_intermediate_result

__version__ = "0.1.0"
__all__ = ["report_final_result", "report_intermediate_result", "tune", "SearchSpace", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "tune":
        from .api import tune

        return tune
    if name == "SearchSpace":
        from .space import SearchSpace

        return SearchSpace
    raise AttributeError(f"module 'autofinetune' has no attribute {name!r}")
