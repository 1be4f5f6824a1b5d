"""HAZero: CMA-ES on the `cma` package, as PaddleHub's `HAZero` (docs/algorithms.md).

CMA-ES adapts a full covariance matrix, so it learns how hyperparameters interact (learning rate
with batch size, say) -- which is why it needs two or more of them to be worth its machinery.
Every setting of the original is an option (the registry's legacy values); the defaults were
chosen on benchmark cells for the small budgets of tuning (docs/algorithms.md, "What changed in
issue 15, and why"), and the rest is made dependable for long, resumable searches:

* Start at the normalised init point with sigma0 = 0.15 of the unit box [0, 1]^n. The original
  used 0.2 in its [-1, 1]^n box, 0.1 here (``sigma0=0.1``); with elitism a wider first step
  costs little and finds better basins (docs/algorithms.md has the cells).
* Box bounds (`boundary`): by default a candidate outside the box is redrawn from the same
  distribution until it lies inside (as the `cmaes` library behind Optuna does), so cma adapts
  to points it actually proposed and its mean cannot drift out of the box;
  ``boundary=fold`` is the original's setting, cma's BoundTransform, which folds such a
  candidate back in while cma keeps adapting the unfolded one.
* Small budgets: ``elitism=on`` lets the best point so far take part in the recombination
  whenever a generation has nothing better (cma's ``CMA_elitist``), and ``evaluate_mean=on``
  makes the distribution's mean one candidate of every generation after the first. The
  original had neither (``off``).
* Selective mirrors (`mirrors`): by default the worst candidates of a generation (about 16%
  of them) are mirrored around the new mean into the next, at every generation size -- cma's
  own default does so below 6 candidates only, and with `redraw` the original had none
  (``mirrors=off``, the behaviour before the option). `fold` keeps cma's default, as the
  original.
* The first round (`first_round`): ``centred`` is CMA-ES's own first generation around the
  init point (the original's, and the default); ``spread`` evaluates the init point plus a
  space-filling Latin hypercube over the whole box and starts CMA-ES at the best of them.
  docs/algorithms.md says which cells chose each default, and by how much.
* cma's stop conditions (a flat round, tiny spread) are meant for a benchmark run that may
  end; a tuning run has a fixed budget of rounds, so instead of stopping we restart around the
  best point found so far and say so in a warning.
* cma refuses a population of one (it needs two recombination weights), and of two without its
  mirrored samples (which `redraw` never has at so few candidates). With ``popsize=1`` we run
  cma with a population of two (`fold`) or three (`redraw`), with ``popsize=2`` and `redraw` of
  four, and hand its candidates out popsize at a time, one round each.
* Every random number comes from a private generator (`_Randn`) seeded from `seed` and the
  restart count, so rebuilding the strategy and telling it the same losses replays it exactly;
  there is no pickle of cma's state (docs/algorithms.md, "State is a replay").
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cma
import numpy as np

from .base import Strategy, losses_with_failures_last, spread_design

logger = logging.getLogger("autofinetune")

#: The initial step size in the unit box, chosen on the benchmark's main cells
#: (docs/algorithms.md). The original's sigma0 = 0.2 in [-1, 1]^n is 0.1 here.
SIGMA0 = 0.15
#: How a candidate outside the box is handled: redrawn (default) or folded back (the original).
BOUNDARIES = ("redraw", "fold")
#: The first round: a space-filling spread around the init point, or CMA-ES's own (the original).
FIRST_ROUNDS = ("spread", "centred")
#: The words of an on/off option (elitism, evaluate_mean, mirrors).
SWITCH = ("on", "off")
#: Redraws per candidate before it is clipped instead: a mean far outside the box (possible only
#: when every in-box candidate failed) must not make `ask` loop for ever. The `cmaes` library
#: uses the same number.
MAX_REDRAWS = 100


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


#: The stream number of the spread first round's generator (restarts use 0, 1, 2, ...).
_DESIGN_STREAM = 2**32 - 1


def _derived_seed(seed: int, restart: int) -> int:
    """A deterministic, well-mixed seed for run number `restart` (0 = the first run).

    Seed 0 must not mean "random" (as cma's own seed option would treat it), and restarts must
    not replay the first run's samples; SeedSequence gives both from (seed, restart).
    """
    entropy = [int(seed) % (2**64), int(restart)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


class HAZero(Strategy):
    """CMA-ES with box bounds, restarts instead of stops, and popsize-1 chunking."""

    def __init__(
        self,
        dim: int,
        init_point: np.ndarray,
        popsize: int,
        seed: int,
        sigma0: float = SIGMA0,
        boundary: str = "redraw",
        first_round: str = "centred",
        elitism: str = "on",
        evaluate_mean: str = "on",
        mirrors: str = "on",
    ) -> None:
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
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
        if first_round not in FIRST_ROUNDS:
            raise ValueError(f"first_round must be one of {', '.join(FIRST_ROUNDS)}, got {first_round!r}")
        for name, value in (("elitism", elitism), ("evaluate_mean", evaluate_mean), ("mirrors", mirrors)):
            if value not in SWITCH:
                raise ValueError(f"{name} must be one of {', '.join(SWITCH)}, got {value!r}")
        self.sigma0 = sigma0
        self.elitism = elitism
        self.evaluate_mean = evaluate_mean
        self.boundary = boundary
        self.first_round = first_round
        # cma needs two candidates per generation with its mirrors (the fold setting), three
        # without them (redraw); a smaller popsize is served cma's generation in chunks.
        smallest = 2 if boundary == "fold" else 3
        self._cma_popsize = self.popsize * -(-smallest // self.popsize) if self.popsize < smallest else self.popsize
        self.mirrors = mirrors
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
        self._redraws = 0
        #: The spread first round, before CMA-ES exists; None once it was told (or never used).
        self._design: Optional[np.ndarray] = None
        self._es: Optional[cma.CMAEvolutionStrategy] = None
        if first_round == "spread" and self.popsize > 1:
            # Its own generator: the design never shifts the samples CMA-ES draws later.
            design_rng = np.random.Generator(np.random.PCG64(_derived_seed(self.seed, _DESIGN_STREAM)))
            self._design = spread_design(self.init_point, self.popsize, design_rng)
        else:
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
        options: Dict[str, Any] = {
            "popsize": self._cma_popsize,
            # NaN tells cma to leave numpy's global seed alone; our _Randn does the sampling.
            "seed": float("nan"),
            "randn": _Randn(_derived_seed(self.seed, self._restarts)),
            # Quiet, and no outcmaes/ files in the user's working directory.
            "verb_disp": 0,
            "verb_log": 0,
            "verbose": -9,
        }
        if self.elitism == "on":
            # cma's (mu/mu_w + lambda) variant: when the generation has nothing better than the
            # best point ever told, that point joins the recombination. No extra evaluation:
            # cma re-uses the loss it was told.
            options["CMA_elitist"] = True
        if self.boundary == "fold":
            # The original's: cma's BoundTransform, with cma's default mirrors (below 6
            # candidates per generation); `mirrors` leaves it as it was.
            options["bounds"] = [0.0, 1.0]
        elif self.mirrors == "on":
            # Selective mirrors (Auger, Brockhoff & Hansen 2011, "Mirrored sampling in evolution
            # strategies with weighted recombination", GECCO): the worst candidates of a
            # generation, about 16% of them (cma's ratio for True), are mirrored around the new
            # mean into the next one: the opposite of a bad step is likely a good one, and it
            # costs no new randomness. cma's own default uses them below 6 candidates only; at
            # every generation size they won on the benchmark's main and validation cells
            # (docs/algorithms.md, "The validation cells, and HAZero's mirrors"). A mirror
            # outside the box is redrawn like any sample (see `_tell_es`).
            options["CMA_mirrors"] = True
        else:
            # No mirrors: the behaviour with `redraw` before this option existed.
            options["CMA_mirrors"] = 0
        return cma.CMAEvolutionStrategy(np.asarray(x0, dtype=float).tolist(), self.sigma0, options)

    def _new_generation(self) -> List[np.ndarray]:
        """cma's next generation; with `redraw`, every candidate inside the box.

        A candidate outside is replaced by a fresh sample of the same distribution
        (`ask(1)`), up to MAX_REDRAWS times, then clipped. All draws come from our `_Randn` in
        row order, so a replay redraws exactly the same way.
        """
        assert self._es is not None
        # With one parent (mu = 1, cma's choice for 3 or fewer candidates) the mean *is* a
        # point already evaluated: evaluating it again would waste a trial.
        if self.evaluate_mean == "on" and self._es.countiter > 0 and self._es.sp.weights.mu > 1:
            # The mean is the recombination of the best candidates so far: at a budget of a few
            # generations it is often better than any sample, and CMA-ES never evaluates it.
            # Injected (genotype, as cma keeps it), it is the generation's first candidate and
            # cma's update treats it like a sample. From the second generation on: the first
            # mean is the init point, which the first generation surrounds already.
            self._es.inject([np.array(self._es.mean, dtype=float)], force=True)
        rows = [np.asarray(x, dtype=float) for x in self._es.ask()]
        if self.boundary == "fold":
            return rows
        for i, x in enumerate(rows):
            for _ in range(MAX_REDRAWS):
                if np.all((x >= 0.0) & (x <= 1.0)):
                    break
                self._redraws += 1
                x = np.asarray(self._es.ask(1)[0], dtype=float)
            rows[i] = np.clip(x, 0.0, 1.0)
        return rows

    def ask(self) -> np.ndarray:
        if self._design is not None:
            return self._design.copy()
        if self._gen is None:
            self._gen = self._new_generation()
            self._offset = 0
            self._told = []
        rows = self._gen[self._offset : self._offset + self.popsize]
        # BoundTransform and redrawing keep points in the box; the clip only guards rounding.
        return np.clip(np.array(rows, dtype=float).reshape(self.popsize, self.dim), 0.0, 1.0)

    @property
    def best(self) -> Optional[Tuple[np.ndarray, float]]:
        """The best successful (point, loss) so far, the centre of the next restart."""
        if self._best_x is None or self._best_loss is None:
            return None
        return self._best_x.copy(), self._best_loss

    @property
    def redraws(self) -> int:
        """How many samples fell outside the box and were drawn again (`boundary=redraw`)."""
        return self._redraws

    @property
    def restarts(self) -> int:
        """How often CMA-ES met a stop condition and was restarted around the best point."""
        return self._restarts

    def _remember_best(self, points: np.ndarray, values: Sequence[Optional[float]]) -> None:
        for x, value in zip(points, values):
            if value is not None and (self._best_loss is None or value < self._best_loss):
                self._best_loss = value
                self._best_x = np.array(x, dtype=float)

    def tell(self, losses: Sequence[Optional[float]]) -> None:
        """Learn from the generation last asked (asking it first if nobody did: replay).

        cma is told its own samples (the ones `ask` returned before clipping), so its
        bookkeeping of the unbounded genotype stays exact.
        """
        values = self._checked_losses(losses)
        asked = self.ask()  # the generation being told (idempotent; creates it if needed)
        self._remember_best(asked, values)
        self._rounds += 1
        if self._design is not None:
            # The spread round is not CMA-ES's: CMA-ES starts at its best point (the init
            # point when every trial failed), with the usual sigma0.
            self._design = None
            self._es = self._new_es(self._best_x if self._best_x is not None else self.init_point)
            return
        self._told.extend(values)
        self._offset += self.popsize
        assert self._gen is not None and self._es is not None
        if self._offset < len(self._gen):
            return  # popsize 1: the rest of cma's generation is handed out first
        # Failures (None/NaN/inf) are told as worse than every success of the generation.
        self._tell_es(self._gen, losses_with_failures_last(self._told).tolist())
        self._gen = None
        self._told = []
        self._offset = 0
        stop = self._es.stop()
        if stop:
            self._restart(stop)

    def _tell_es(self, solutions: List[np.ndarray], values: List[float]) -> None:
        """cma's tell, without its warning about an orphaned injected solution.

        With `mirrors=on` and `redraw`, a selective mirror outside the box is replaced by a
        fresh sample, which cma's update then treats as the ordinary sample it is; cma only
        forgets the mirror it expected (after two generations) and warns each time. That is
        expected here, not the calling-order bug the warning is meant to catch.
        """
        assert self._es is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cma.evolution_strategy.InjectionWarning)
            self._es.tell(solutions, values)

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
