"""Test kits for code that extends autofinetune.

`autofinetune.testing.strategies.StrategyTestCase` is the conformance suite every tuning
strategy (built-in or plugin) must pass. It needs pytest; this package itself does not, so
importing it at runtime costs nothing.
"""
from __future__ import annotations

from typing import Any

__all__ = ["StrategyTestCase"]


def __getattr__(name: str) -> Any:
    if name == "StrategyTestCase":
        from .strategies import StrategyTestCase

        return StrategyTestCase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
