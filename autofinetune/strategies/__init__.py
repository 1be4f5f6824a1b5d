"""The tuning strategies, by the names `--tuning_strategy` accepts (docs/algorithms.md).

What exists and what it accepts is data (`registry.StrategyInfo`), so the CLI can refuse an
impossible combination (an unknown name, HAZero on one hyperparameter, a bad option, --async
with HAZero) before any trial starts or any output directory is created, and without
importing an implementation it will not use.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Type

from .base import Strategy, losses_with_failures_last
from .registry import (
    ENTRY_POINT_GROUP,
    OptionSpec,
    StrategyInfo,
    available,
    check_strategy,
    get_info,
    load_class,
    make_strategy,
)


class _LazyClasses(Mapping):
    """Name -> Strategy class, importing a strategy's module only when it is looked up."""

    def __getitem__(self, name: str) -> Type[Strategy]:
        infos = available()
        if name not in infos:
            raise KeyError(name)
        return load_class(infos[name])

    def __iter__(self) -> Iterator[str]:
        return iter(available())

    def __len__(self) -> int:
        return len(available())


#: Name -> class, for code that wants the class itself; metadata lives in `available()`.
STRATEGIES: Mapping[str, Type[Strategy]] = _LazyClasses()

__all__ = [
    "ENTRY_POINT_GROUP",
    "HAZero",
    "OptionSpec",
    "PSHE2",
    "STRATEGIES",
    "Strategy",
    "StrategyInfo",
    "available",
    "check_strategy",
    "get_info",
    "losses_with_failures_last",
    "make_strategy",
]


def __getattr__(name: str) -> Any:
    # HAZero's module imports cma (and scipy): only on first use.
    if name == "PSHE2":
        from .pshe2 import PSHE2

        return PSHE2
    if name == "HAZero":
        from .hazero import HAZero

        return HAZero
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
