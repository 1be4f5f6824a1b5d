"""The contract between the search loop and a tuning strategy.

A strategy sees only points of the unit box [0, 1]^dim and losses to minimise (1 - score). It
never sees files, processes or GPUs; a failed trial reaches it as `None`, which every strategy
must rank below every success. Its whole state is a JSON-serialisable dict, so a resumed search
asks exactly what an uninterrupted one would have asked.
"""
from __future__ import annotations

import abc
from typing import Any, Optional, Sequence

import numpy as np


class Strategy(abc.ABC):
    """Proposes one generation of `popsize` candidates per `ask`, learns from `tell`."""

    name: str = ""
    #: The smallest search-space dimension the strategy can handle.
    min_dim: int = 1
    #: Whether `ask_particle` / `tell_particle` exist: candidates that move one at a time, so a
    #: freed slot can start the next one at once (the asynchronous mode).
    supports_async: bool = False

    def __init__(self, dim: int, init_point: np.ndarray, popsize: int, seed: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if popsize < 1:
            raise ValueError(f"popsize must be >= 1, got {popsize}")
        self.dim = int(dim)
        self.popsize = int(popsize)
        self.seed = int(seed)
        self.init_point = np.clip(np.asarray(init_point, dtype=float).reshape(self.dim), 0.0, 1.0)

    @abc.abstractmethod
    def ask(self) -> np.ndarray:
        """Return the next generation: an array of shape (popsize, dim) inside [0, 1]."""

    @abc.abstractmethod
    def tell(self, points: np.ndarray, losses: Sequence[Optional[float]]) -> None:
        """Learn from the generation last asked; `None` marks a failed trial."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: JSON-serialisable (lists, floats, ints, str)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by `state_dict` of a strategy built with the same arguments."""


    def _check_state(self, state: dict[str, Any], version: int) -> None:
        """Refuse a state saved by another strategy, format version or search shape."""
        if state.get("strategy") != self.name or state.get("version") != version:
            raise ValueError(
                f"not a {self.name} state (version {version}): "
                f"strategy={state.get('strategy')!r}, version={state.get('version')!r}"
            )
        if (state["dim"], state["popsize"]) != (self.dim, self.popsize):
            raise ValueError(
                f"state is for dim={state['dim']}, popsize={state['popsize']}; this strategy "
                f"has dim={self.dim}, popsize={self.popsize}"
            )


def losses_with_failures_last(losses: Sequence[Optional[float]]) -> np.ndarray:
    """Replace failures (None, NaN) by a loss worse than every success of the generation.

    A constant such as 0.0 (the original's score for a crash) would beat legitimate negative
    scores; a margin above the worst success keeps the ranking honest for rank-based methods
    and finite for value-based ones.
    """
    values = np.array([np.nan if v is None else float(v) for v in losses], dtype=float)
    ok = np.isfinite(values)
    if ok.any():
        worst = values[ok].max()
        spread = values[ok].max() - values[ok].min()
        penalty = worst + max(1.0, spread)
    else:
        penalty = 1e6
    values[~ok] = penalty
    return values
