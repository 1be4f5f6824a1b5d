"""The contract between the search loop and a tuning strategy (docs/algorithms.md).

A strategy sees only points of the unit box [0, 1]^dim and losses to minimise (1 - score). It
never sees files, processes or GPUs; a failed trial reaches it as `None` (or NaN/inf), which
every strategy must rank below every success.

A strategy has no save/load: its state is restored by *replay*. The search journals the
constructor arguments and every result it told; resuming builds the strategy again with the
same arguments and seed and tells it the same results in the same order. That only works if a
strategy is a deterministic function of (constructor arguments, sequence of tells): all its
randomness comes from a private generator seeded from `seed`, it never touches numpy's global
generator, and `ask` / `ask_particle` change nothing that a later call can observe -- the
search may call them any number of times, or not at all, between two tells.
"""
from __future__ import annotations

import abc
import math
from typing import List, Optional, Sequence

import numpy as np


class Strategy(abc.ABC):
    """Proposes one generation of `popsize` candidates per `ask`, learns from `tell`.

    Subclasses take their options (the registry's `OptionSpec`s) as keyword arguments after
    the four positional ones: ``Strategy(dim, init_point, popsize, seed, **options)``.
    """

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
        """The generation to evaluate: shape (popsize, dim), inside [0, 1].

        The same array until the next `tell`, however often it is called: the search asks
        again after an interruption and must get the candidates it already launched.
        """

    @abc.abstractmethod
    def tell(self, losses: Sequence[Optional[float]]) -> None:
        """Learn the losses of the generation last asked, in row order.

        Only losses: the points are the strategy's own (the search never alters them), so a
        strategy cannot be handed a point it did not propose.
        """

    def ask_particle(self, index: int) -> np.ndarray:
        """Asynchronous mode: the point particle `index` evaluates next, shape (dim,).

        The same point until `tell_particle(index, ...)`, whatever other particles are told.
        """
        raise NotImplementedError(
            f"{type(self).__name__} proposes whole generations only and has no asynchronous mode "
            "(ask_particle/tell_particle); its StrategyInfo must say supports_async=False"
        )

    def tell_particle(self, index: int, loss: Optional[float]) -> None:
        """Asynchronous mode: the loss of the point last asked for particle `index`."""
        raise NotImplementedError(
            f"{type(self).__name__} proposes whole generations only and has no asynchronous mode "
            "(ask_particle/tell_particle); its StrategyInfo must say supports_async=False"
        )

    # -- helpers for subclasses ------------------------------------------------------------

    def _checked_losses(self, losses: Sequence[Optional[float]]) -> List[Optional[float]]:
        """The generation's losses with every failure (None, NaN, +-inf) as None.

        A wrong count is a bug in the caller; refusing it keeps a replay from silently
        drifting.
        """
        if len(losses) != self.popsize:
            raise ValueError(f"tell() expects {self.popsize} losses, got {len(losses)}")
        return [finite_or_none(v) for v in losses]

    def _checked_index(self, index: int) -> int:
        i = int(index)
        if not 0 <= i < self.popsize:
            raise IndexError(f"particle index {index} is outside 0..{self.popsize - 1}")
        return i


def finite_or_none(value: Optional[float]) -> Optional[float]:
    """A loss as a float, or None for a failure (None, NaN, +-inf all mean the trial failed)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def losses_with_failures_last(losses: Sequence[Optional[float]]) -> np.ndarray:
    """Replace failures (None, NaN, inf) by a loss worse than every success of the generation.

    A heuristic: a constant such as 0.0 (the original's score for a crash) would beat
    legitimate negative losses; rank-based methods (CMA-ES) only need failures ranked last, and
    a margin of max(1, spread) above the worst success keeps the values finite and on the
    generation's scale for value-based ones. See docs/algorithms.md.
    """
    values = np.array([np.nan if finite_or_none(v) is None else float(v) for v in losses], dtype=float)  # type: ignore[arg-type]
    ok = np.isfinite(values)
    if ok.any():
        worst = values[ok].max()
        spread = values[ok].max() - values[ok].min()
        penalty = worst + max(1.0, spread)
    else:
        penalty = 1e6
    values[~ok] = penalty
    return values


#: Latin hypercubes drawn per spread design; the most spread-out one (maximin) is kept.
SPREAD_CANDIDATES = 16


def spread_design(init_point: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` first-round points: the init point, then a maximin Latin hypercube of count - 1.

    Why: at small budgets on rugged losses, a first round that covers the whole box finds a
    better basin than one clustered around the init point (TPE's advantage in issue 15's
    measurements), while the init point -- the user's best guess -- is still evaluated. A
    Latin hypercube (McKay, Beckman & Conover 1979) puts exactly one point in each of the
    count - 1 slices of every coordinate; of `SPREAD_CANDIDATES` such designs we keep the one
    whose smallest distance between two points (the init point included) is largest
    (maximin, Morris & Mitchell 1995). Plain numpy, every draw from `rng` in a fixed order, so
    a replay reproduces it. See docs/algorithms.md, "The first round".
    """
    x0 = np.clip(np.asarray(init_point, dtype=float).reshape(1, -1), 0.0, 1.0)
    dim = x0.shape[1]
    m = int(count) - 1
    if m <= 0:
        return x0[: max(int(count), 0)].copy()
    best, best_gap = x0, -1.0
    for _ in range(SPREAD_CANDIDATES):
        slices = np.argsort(rng.random((m, dim)), axis=0)  # a random permutation per coordinate
        points = (slices + rng.random((m, dim))) / m
        design = np.vstack([x0, points])
        gaps = np.sqrt(((design[:, None, :] - design[None, :, :]) ** 2).sum(axis=-1))
        gap = float(gaps[np.triu_indices(m + 1, k=1)].min())
        if gap > best_gap:
            best, best_gap = design, gap
    return np.clip(best, 0.0, 1.0)
