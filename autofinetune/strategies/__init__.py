"""The tuning strategies, by the names `--tuning_strategy` accepts.

`check_strategy` exists separately from `make_strategy` so the CLI can refuse an impossible
combination (an unknown name, HAZero on one hyperparameter) before any trial starts or any
output directory is created.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Iterator, Mapping, Tuple, Type

import numpy as np

from ..errors import ConfigError
from .base import Strategy


class _LazyRegistry(Mapping):
    """Name -> Strategy class, importing a strategy's module only when it is asked for.

    HAZero's `cma` pulls in scipy (about a second); a PSHE2 search, a bad-input error or a
    `--help` should not pay for it.
    """

    def __init__(self, entries: Dict[str, Tuple[str, str]]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> Type[Strategy]:
        module, attribute = self._entries[name]
        return getattr(importlib.import_module(module, __name__), attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


STRATEGIES: Mapping[str, Type[Strategy]] = _LazyRegistry({"pshe2": (".pshe2", "PSHE2"), "hazero": (".hazero", "HAZero")})
#: The least dimension each strategy handles, known without importing it.
MIN_DIM = {"pshe2": 1, "hazero": 2}

__all__ = ["STRATEGIES", "Strategy", "PSHE2", "HAZero", "make_strategy", "check_strategy"]


def __getattr__(name: str) -> Any:
    if name in ("PSHE2", "HAZero"):
        return STRATEGIES[name.lower()]
    raise AttributeError(name)

_NUMBER_WORDS = {2: "two", 3: "three"}


def check_strategy(name: str, dim: int, popsize: int) -> None:
    """Raise ConfigError (one line, with the fix) if `name` cannot search this space."""
    if name not in STRATEGIES:
        valid = ", ".join(sorted(STRATEGIES))
        raise ConfigError(f"--tuning_strategy={name!r} is not a strategy; choose one of: {valid}")
    if popsize < 1:
        raise ConfigError(f"--popsize must be 1 or more, got {popsize}")
    min_dim = MIN_DIM[name]
    if dim < min_dim:
        need = _NUMBER_WORDS.get(min_dim, str(min_dim))
        others = [n for n in sorted(STRATEGIES) if MIN_DIM[n] <= dim]
        hint = f"; use --tuning_strategy={others[0]}" if others else ""
        raise ConfigError(
            f"--tuning_strategy={name}: {dict(pshe2='PSHE2', hazero='HAZero')[name]} needs {need} or more hyperparameters, "
            f"the search space has {dim}{hint}"
        )


def make_strategy(name: str, dim: int, init_point: np.ndarray, popsize: int, seed: int) -> Strategy:
    """Build the strategy `--tuning_strategy=name` stands for, after `check_strategy`."""
    check_strategy(name, dim, popsize)
    return STRATEGIES[name](dim, init_point, popsize, seed)
