"""HAZero: CMA-ES on the `cma` package, as PaddleHub's `HAZero` (docs/algorithms.md).

CMA-ES adapts a full covariance matrix, so it learns how hyperparameters interact (learning rate
with batch size, say) -- which is why it needs two or more of them to be worth its machinery.
We keep the original's settings and make the rest dependable for long, resumable searches:

* Start at the normalised init point with sigma0 = 0.1 in the unit box [0, 1]^n, which is the
  original's sigma0 = 0.2 in its [-1, 1]^n box: 10% of the box width either way.
* Box bounds are enforced by cma itself (``bounds=[0, 1]``, its BoundTransform), so the
  distribution it adapts is the one it actually samples from.
* cma's stop conditions (a flat round, tiny spread) are meant for a benchmark run that may
  end; a tuning run has a fixed budget of rounds, so instead of stopping we restart around the
  best point found so far and say so in a warning.
* cma refuses a population of one (it needs two recombination weights). With ``popsize=1`` we
  run cma with a population of two and hand its candidates out one round at a time.
* Every random number comes from a private generator (`_Randn`) seeded from `seed` and the
  restart count, so rebuilding the strategy and telling it the same losses replays it exactly;
  there is no pickle of cma's state (docs/algorithms.md, "State is a replay").
"""
from __future__ import annotations

import logging
import math
from typing import Any, List, Optional, Sequence, Tuple

import cma
import numpy as np

from .base import Strategy, losses_with_failures_last

logger = logging.getLogger("autofinetune")

#: The original's sigma0 = 0.2 in [-1, 1]^n is 0.1 in [0, 1]^n (a tenth of the box width).
SIGMA0 = 0.1


def default_popsize(dim: int) -> int:
    """cma's default population size, 4 + floor(3 ln n): below it CMA-ES is less reliable."""
    return 4 + int(math.floor(3.0 * math.log(dim)))


class _Randn:
    """A private normal sampler for cma's ``randn`` option.

    cma's own ``seed`` option reseeds numpy's *global* generator: that generator is shared with
    everything else in the process, so another strategy instance, or any library, would shift
    our samples and a replay would diverge. Handing cma its own generator fixes both.
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


def _derived_seed(seed: int, restart: int) -> int:
    """A deterministic, well-mixed seed for run number `restart` (0 = the first run).

    Seed 0 must not mean "random" (as cma's own seed option would treat it), and restarts must
    not replay the first run's samples; SeedSequence gives both from (seed, restart).
    """
    entropy = [int(seed) % (2**64), int(restart)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


class HAZero(Strategy):
    """CMA-ES with box bounds, restarts instead of stops, and popsize-1 chunking."""

    def __init__(self, dim: int, init_point: np.ndarray, popsize: int, seed: int, sigma0: float = SIGMA0) -> None:
        super().__init__(dim, init_point, popsize, seed)
        if self.dim < 2:
            # The registry refuses this before any import; a direct construction lands here.
            raise ValueError(
                f"HAZero (CMA-ES) needs two or more hyperparameters, got dim={self.dim}; use PSHE2"
            )
        sigma0 = float(sigma0)
        # Beyond the box width the initial samples would mostly sit on the bounds.
        if not (0.0 < sigma0 <= 1.0):
            raise ValueError(f"sigma0 must be in (0, 1], got {sigma0}")
        self.sigma0 = sigma0
        # cma needs at least two candidates per generation; popsize 1 is served in chunks.
        self._cma_popsize = max(2, self.popsize)
        if self.popsize < default_popsize(self.dim):
            logger.warning(
                "HAZero: popsize %d is below CMA-ES's default population of %d for %d "
                "hyperparameters (4 + floor(3 ln n)); the search still runs but adapts less "
                "reliably -- consider --popsize=%d",
                self.popsize,
                default_popsize(self.dim),
                self.dim,
                default_popsize(self.dim),
            )
        self._restarts = 0
        self._es = self._new_es(self.init_point)
        #: The cma generation being handed out, exactly as cma.ask returned it (cma's tell
        #: needs its own arrays back to recover its internal, unbounded genotypes).
        self._gen: Optional[List[np.ndarray]] = None
        self._offset = 0  # rows of `_gen` already told
        self._told: List[Optional[float]] = []  # losses of those rows, None for failures
        self._best_x: Optional[np.ndarray] = None
        self._best_loss: Optional[float] = None
        self._rounds = 0

    def _new_es(self, x0: np.ndarray) -> cma.CMAEvolutionStrategy:
        options = {
            "popsize": self._cma_popsize,
            "bounds": [0.0, 1.0],
            # NaN tells cma to leave numpy's global seed alone; our _Randn does the sampling.
            "seed": float("nan"),
            "randn": _Randn(_derived_seed(self.seed, self._restarts)),
            # Quiet, and no outcmaes/ files in the user's working directory.
            "verb_disp": 0,
            "verb_log": 0,
            "verbose": -9,
        }
        return cma.CMAEvolutionStrategy(np.asarray(x0, dtype=float).tolist(), self.sigma0, options)

    def ask(self) -> np.ndarray:
        if self._gen is None:
            self._gen = [np.asarray(x, dtype=float) for x in self._es.ask()]
            self._offset = 0
            self._told = []
        rows = self._gen[self._offset : self._offset + self.popsize]
        # BoundTransform keeps points in the box; the clip only guards against rounding.
        return np.clip(np.array(rows, dtype=float).reshape(self.popsize, self.dim), 0.0, 1.0)

    @property
    def best(self) -> Optional[Tuple[np.ndarray, float]]:
        """The best successful (point, loss) so far, the centre of the next restart."""
        if self._best_x is None or self._best_loss is None:
            return None
        return self._best_x.copy(), self._best_loss

    @property
    def restarts(self) -> int:
        """How often CMA-ES met a stop condition and was restarted around the best point."""
        return self._restarts

    def tell(self, losses: Sequence[Optional[float]]) -> None:
        """Learn from the generation last asked (asking it first if nobody did: replay).

        cma is told its own samples (the ones `ask` returned before clipping), so its
        bookkeeping of the unbounded genotype stays exact.
        """
        values = self._checked_losses(losses)
        asked = self.ask()  # the generation being told (idempotent; creates it if needed)
        for x, value in zip(asked, values):
            self._told.append(value)
            if value is not None and (self._best_loss is None or value < self._best_loss):
                self._best_loss = value
                self._best_x = x.copy()
        self._offset += self.popsize
        self._rounds += 1
        assert self._gen is not None
        if self._offset < len(self._gen):
            return  # popsize 1: the rest of cma's generation is handed out first
        # Failures (None/NaN/inf) are told as worse than every success of the generation.
        self._es.tell(self._gen, losses_with_failures_last(self._told).tolist())
        self._gen = None
        self._told = []
        self._offset = 0
        stop = self._es.stop()
        if stop:
            self._restart(stop)

    def _restart(self, stop: Any) -> None:
        """Start a fresh ES around the best point so far: the round budget is the user's."""
        reasons = ", ".join(f"{k}={v}" for k, v in dict(stop).items())
        self._restarts += 1
        centre = self._best_x if self._best_x is not None else self.init_point
        logger.warning(
            "HAZero: CMA-ES met its stop condition (%s) after %d rounds; restarting it around "
            "the best point so far (restart %d)",
            reasons,
            self._rounds,
            self._restarts,
        )
        self._es = self._new_es(np.clip(centre, 0.0, 1.0))
