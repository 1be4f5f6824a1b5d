"""HAZero: CMA-ES on the `cma` package, as PaddleHub's `HAZero` (SPEC A4).

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
"""
from __future__ import annotations

import base64
import logging
import math
import pickle
from typing import Any, Optional, Sequence, Tuple

import cma
import numpy as np

from .base import Strategy, losses_with_failures_last

logger = logging.getLogger("autofinetune")

_STATE_VERSION = 1

#: The original's sigma0 = 0.2 in [-1, 1]^n is 0.1 in [0, 1]^n (a tenth of the box width).
SIGMA0 = 0.1


def default_popsize(dim: int) -> int:
    """cma's default population size, 4 + floor(3 ln n): below it CMA-ES is less reliable."""
    return 4 + int(math.floor(3.0 * math.log(dim)))


class _Randn:
    """A private, picklable normal sampler for cma's ``randn`` option.

    cma's own ``seed`` option reseeds numpy's *global* generator: that generator is shared with
    everything else in the process (so another strategy instance, or any library, would shift
    our samples) and it is not part of a pickled ES (so resume would diverge). Handing cma its
    own generator fixes both; its state travels inside the pickled ES.
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
    """CMA-ES with box bounds, restarts instead of stops, and a JSON-serialisable state."""

    name = "hazero"
    min_dim = 2

    def __init__(self, dim: int, init_point: np.ndarray, popsize: int, seed: int) -> None:
        super().__init__(dim, init_point, popsize, seed)
        if self.dim < self.min_dim:
            # Built directly (not through make_strategy): refuse with the registry's message.
            # Lazy import, as the registry imports this module.
            from . import check_strategy

            check_strategy(self.name, self.dim, self.popsize)
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
        self._gen: Optional[list[np.ndarray]] = None
        self._offset = 0  # rows of `_gen` already told
        self._told: list[Optional[float]] = []  # raw losses of those rows
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
        return cma.CMAEvolutionStrategy(np.asarray(x0, dtype=float).tolist(), SIGMA0, options)

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

    def tell(self, points: np.ndarray, losses: Sequence[Optional[float]]) -> None:
        """Learn from the generation last asked.

        cma is told its own samples (the ones `ask` returned before clipping) rather than
        `points`, so its bookkeeping of the unbounded genotype stays exact.
        """
        pts = np.asarray(points, dtype=float)
        if pts.shape != (self.popsize, self.dim):
            raise ValueError(
                f"tell() expects points of shape ({self.popsize}, {self.dim}), got {pts.shape}"
            )
        if len(losses) != self.popsize:
            raise ValueError(f"tell() expects {self.popsize} losses, got {len(losses)}")
        asked = self.ask()  # the generation being told (idempotent; creates it if needed)
        for x, loss in zip(asked, losses):
            value = None if loss is None else float(loss)
            if value is None or not math.isfinite(value):
                self._told.append(None)
                continue
            self._told.append(value)
            if self._best_loss is None or value < self._best_loss:
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

    # -- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The ES object pickled and base64-encoded, plus plain counters.

        cma's ES holds dozens of adapted quantities (mean, step size, covariance, evolution
        paths, its generation archive) with no stable public constructor from them; its pickle
        is the only complete, version-exact snapshot. base64 makes it a JSON string. The
        pickle is only as portable as the installed cma version (recorded here) and, like every
        pickle, must only be loaded from a trusted file (the search's own journal).
        """
        blob = pickle.dumps((self._es, self._gen), protocol=pickle.HIGHEST_PROTOCOL)
        return {
            "strategy": self.name,
            "version": _STATE_VERSION,
            "cma_version": cma.__version__,
            "dim": self.dim,
            "popsize": self.popsize,
            "seed": self.seed,
            "es_pickle_b64": base64.b64encode(blob).decode("ascii"),
            "offset": self._offset,
            "told": list(self._told),
            "best_x": None if self._best_x is None else self._best_x.tolist(),
            "best_loss": self._best_loss,
            "restarts": self._restarts,
            "rounds": self._rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state, _STATE_VERSION)
        if state.get("cma_version") != cma.__version__:
            logger.warning(
                "HAZero: resuming a state saved with cma %s under cma %s; the pickled ES may "
                "not load or may behave differently",
                state.get("cma_version"),
                cma.__version__,
            )
        self._es, self._gen = pickle.loads(base64.b64decode(state["es_pickle_b64"]))
        self._offset = int(state["offset"])
        self._told = [None if v is None else float(v) for v in state["told"]]
        b = state["best_x"]
        self._best_x = None if b is None else np.asarray(b, dtype=float).reshape(self.dim)
        b_loss = state["best_loss"]
        self._best_loss = None if b_loss is None else float(b_loss)
        self._restarts = int(state["restarts"])
        self._rounds = int(state["rounds"])
