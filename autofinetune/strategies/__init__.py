"""The tuning strategies, by the names `--tuning_strategy` accepts.

`check_strategy` exists separately from `make_strategy` so the CLI can refuse an impossible
combination (an unknown name, HAZero on one hyperparameter) before any trial starts or any
output directory is created.
"""
from __future__ import annotations

from typing import Dict, Type

import numpy as np

from ..errors import ConfigError
from .base import Strategy
from .hazero import HAZero
from .pshe2 import PSHE2

STRATEGIES: Dict[str, Type[Strategy]] = {"pshe2": PSHE2, "hazero": HAZero}

__all__ = ["STRATEGIES", "Strategy", "PSHE2", "HAZero", "make_strategy", "check_strategy"]

_NUMBER_WORDS = {2: "two", 3: "three"}


def check_strategy(name: str, dim: int, popsize: int) -> None:
    """Raise ConfigError (one line, with the fix) if `name` cannot search this space."""
    cls = STRATEGIES.get(name)
    if cls is None:
        valid = ", ".join(sorted(STRATEGIES))
        raise ConfigError(f"--tuning_strategy={name!r} is not a strategy; choose one of: {valid}")
    if popsize < 1:
        raise ConfigError(f"--popsize must be 1 or more, got {popsize}")
    if dim < cls.min_dim:
        need = _NUMBER_WORDS.get(cls.min_dim, str(cls.min_dim))
        others = [n for n, c in sorted(STRATEGIES.items()) if c.min_dim <= dim]
        hint = f"; use --tuning_strategy={others[0]}" if others else ""
        raise ConfigError(
            f"--tuning_strategy={name}: {cls.__name__} needs {need} or more hyperparameters, "
            f"the search space has {dim}{hint}"
        )


def make_strategy(name: str, dim: int, init_point: np.ndarray, popsize: int, seed: int) -> Strategy:
    """Build the strategy `--tuning_strategy=name` stands for, after `check_strategy`."""
    check_strategy(name, dim, popsize)
    return STRATEGIES[name](dim, init_point, popsize, seed)
