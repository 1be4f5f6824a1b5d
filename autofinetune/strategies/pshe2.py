"""PSHE2: a particle swarm with momentum, PaddleHub's default tuning strategy (SPEC A4).

The original described it as "Hamiltonian dynamics looking for the lowest potential energy":
each particle carries a velocity that is pulled towards its own best point and the population's
best point, with a damping factor that fades as rounds go by, plus a small random kick so the
swarm keeps exploring. With few rounds and a handful of particles this is a cheap, robust
default for hyperparameter tuning.

Differences from PaddleHub 1.8's `PSHE2`, on purpose:

* The original worked in [-1, 1]^n; we work in the unit box [0, 1]^n. Every formula is linear,
  so the map x01 = (x11 + 1) / 2 leaves the dynamics unchanged.
* The original created its velocities as ``[[0] * n] * popsize`` -- one list aliased by every
  particle -- so all particles shared (and overwrote) one velocity and made the same move. We
  keep one velocity per particle, which is what the algorithm describes.
* Failed trials (``None``/NaN/inf losses) never become personal or population bests; the
  original scored a crash as a reward of 0.0, which could beat every real result.
* All randomness comes from one private ``np.random.Generator(PCG64(seed))`` whose state is part
  of `state_dict`, so a resumed search proposes exactly what an uninterrupted one would.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .base import Strategy

_STATE_VERSION = 1


def _seed_entropy(seed: int) -> int:
    """PCG64 refuses negative seeds; fold every Python int onto a valid, distinct-enough one."""
    return int(seed) % (2**64)


def _finite_or_none(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class PSHE2(Strategy):
    """Particle swarm with per-particle momentum in the unit box (SPEC A4)."""

    name = "pshe2"
    min_dim = 1

    def __init__(
        self,
        dim: int,
        init_point: np.ndarray,
        popsize: int,
        seed: int,
        alpha: float = 0.5,
        epsilon: float = 0.2,
    ) -> None:
        super().__init__(dim, init_point, popsize, seed)
        alpha = float(alpha)
        epsilon = float(epsilon)
        # alpha is both the step size and the damping rate; above 1 the position update
        # overshoots the attractors by more than the distance to them.
        if not (0.0 < alpha <= 1.0):
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        # epsilon is a fraction of the distance to the box edge; above 1 a kick would leave it.
        if not (0.0 <= epsilon <= 1.0):
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.alpha = alpha
        self.epsilon = epsilon
        self._rng = np.random.Generator(np.random.PCG64(_seed_entropy(self.seed)))
        #: Rounds told so far; the update of round t (t = 1, 2, ...) uses this after increment.
        self._t = 0
        #: Per-particle rounds told, for the asynchronous mode (`tell_particle`).
        self._particle_t = [0] * self.popsize
        #: The generation `ask` hands out until the next `tell` (ask is idempotent).
        self._x = self._initial_particles()
        self._v = np.zeros((self.popsize, self.dim))
        self._pbest_x = self._x.copy()
        self._pbest_loss: list[Optional[float]] = [None] * self.popsize
        self._gbest_x: Optional[np.ndarray] = None
        self._gbest_loss: Optional[float] = None

    # -- the algorithm ---------------------------------------------------------------------

    def _initial_particles(self) -> np.ndarray:
        """Spread the swarm around the user's init point, half above and half below it.

        Per coordinate, with probability 1/2 uniform in [x0, 1], else uniform in [0, x0]: the
        original's `set_random_hparam`, so particles start on both sides of a sensible default
        rather than uniformly in a box whose edges are often poor choices.
        """
        x0 = self.init_point
        ratio = self._rng.uniform(-1.0, 1.0, size=(self.popsize, self.dim))
        up = x0 + ratio * (1.0 - x0)  # ratio >= 0: towards the upper edge
        down = x0 + ratio * x0  # ratio < 0: towards the lower edge
        return np.clip(np.where(ratio >= 0.0, up, down), 0.0, 1.0)

    def _perturb(self, x: np.ndarray) -> np.ndarray:
        """Kick each coordinate by r * epsilon of its distance to the edge it moves towards.

        r ~ U(-1, 1); r >= 0 moves towards 1 by r*eps*(1 - x), r < 0 towards 0 by |r|*eps*x.
        Scaling by the distance to the edge keeps the point inside the box without clipping.
        """
        r = self._rng.uniform(-1.0, 1.0, size=x.shape)
        step = np.where(r >= 0.0, (1.0 - x), x) * r * self.epsilon
        return x + step

    def ask(self) -> np.ndarray:
        return self._x.copy()

    @property
    def best(self) -> Optional[Tuple[np.ndarray, float]]:
        """The population best (point, loss) the swarm is attracted to; None before a success."""
        if self._gbest_x is None or self._gbest_loss is None:
            return None
        return self._gbest_x.copy(), self._gbest_loss

    def tell(self, points: np.ndarray, losses: Sequence[Optional[float]]) -> None:
        """Update bests, then move every particle one step (the next `ask` returns the result).

        `points` are taken as the particles' positions: they are what was evaluated (the search
        loop may have snapped them, e.g. to integers).
        """
        x = np.asarray(points, dtype=float)
        if x.shape != (self.popsize, self.dim):
            raise ValueError(
                f"tell() expects points of shape ({self.popsize}, {self.dim}), got {x.shape}"
            )
        if len(losses) != self.popsize:
            raise ValueError(f"tell() expects {self.popsize} losses, got {len(losses)}")
        x = np.clip(x, 0.0, 1.0)
        values = [_finite_or_none(v) for v in losses]

        # Personal and population bests. `<=` as in the original: on a tie the newer point wins,
        # which keeps a swarm on a plateau moving. Failures never qualify.
        for i, loss in enumerate(values):
            if loss is None:
                continue
            best = self._pbest_loss[i]
            if best is None or loss <= best:
                self._pbest_loss[i] = loss
                self._pbest_x[i] = x[i]
            if self._gbest_loss is None or loss <= self._gbest_loss:
                self._gbest_loss = loss
                self._gbest_x = x[i].copy()

        self._t += 1
        t = self._t
        a = self.alpha
        # A particle without a personal best (all its trials failed) or a swarm without a
        # population best feels no pull from the missing attractor: its term is zero.
        has_p = np.array([b is not None for b in self._pbest_loss])[:, None]
        local_pull = np.where(has_p, x - self._pbest_x, 0.0)
        global_pull = x - self._gbest_x if self._gbest_x is not None else np.zeros_like(x)

        # SPEC A4, per particle i at round t:
        #   v_i <- (1 - 3*alpha/t) * v_i - alpha*(x_i - p_i) - alpha*(x_i - g)
        # One velocity row per particle (the original aliased a single list for all of them).
        self._v = (1.0 - 3.0 * a / t) * self._v - a * local_pull - a * global_pull
        #   x_i <- x_i + alpha * v_i
        moved = np.clip(x + a * self._v, 0.0, 1.0)
        # Then the random kick towards an edge, and a final clip against rounding.
        self._x = np.clip(self._perturb(moved), 0.0, 1.0)

    # -- asynchronous mode -----------------------------------------------------------------
    #: Particles are independent but for the shared best, so each may move on its own.
    supports_async = True

    def ask_particle(self, index: int) -> np.ndarray:
        """Where particle `index` goes next (its current position until it is told again)."""
        return self._x[index].copy()

    def tell_particle(self, index: int, point: np.ndarray, loss: Optional[float]) -> None:
        """Asynchronous PSHE2: update particle `index` alone, the moment its trial ends.

        The same update as `tell` (SPEC A4), with t the particle's own round count and g the
        best of all results told so far: a freed slot need not wait for the round's slowest
        trial. The outcome then depends on the order trials finish in, so an asynchronous
        search is not repeatable to the bit even with a seed.
        """
        i = int(index)
        x = np.clip(np.asarray(point, dtype=float).reshape(self.dim), 0.0, 1.0)
        loss = _finite_or_none(loss)
        if loss is not None:
            if self._pbest_loss[i] is None or loss <= self._pbest_loss[i]:
                self._pbest_loss[i] = loss
                self._pbest_x[i] = x
            if self._gbest_loss is None or loss <= self._gbest_loss:
                self._gbest_loss = loss
                self._gbest_x = x.copy()
        self._particle_t[i] += 1
        a = self.alpha
        local_pull = x - self._pbest_x[i] if self._pbest_loss[i] is not None else np.zeros(self.dim)
        global_pull = x - self._gbest_x if self._gbest_x is not None else np.zeros(self.dim)
        self._v[i] = (1.0 - 3.0 * a / self._particle_t[i]) * self._v[i] - a * local_pull - a * global_pull
        moved = np.clip(x + a * self._v[i], 0.0, 1.0)
        self._x[i] = np.clip(self._perturb(moved), 0.0, 1.0)

    # -- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "version": _STATE_VERSION,
            "dim": self.dim,
            "popsize": self.popsize,
            "seed": self.seed,
            "alpha": self.alpha,
            "epsilon": self.epsilon,
            "t": self._t,
            "particle_t": list(self._particle_t),
            "x": self._x.tolist(),
            "v": self._v.tolist(),
            "pbest_x": self._pbest_x.tolist(),
            "pbest_loss": list(self._pbest_loss),
            "gbest_x": None if self._gbest_x is None else self._gbest_x.tolist(),
            "gbest_loss": self._gbest_loss,
            # PCG64's state is a dict of Python ints (128-bit values are fine in JSON).
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state, _STATE_VERSION)
        shape = (self.popsize, self.dim)
        self.alpha = float(state["alpha"])
        self.epsilon = float(state["epsilon"])
        self._t = int(state["t"])
        self._particle_t = [int(t) for t in state.get("particle_t", [0] * self.popsize)]
        self._x = np.asarray(state["x"], dtype=float).reshape(shape)
        self._v = np.asarray(state["v"], dtype=float).reshape(shape)
        self._pbest_x = np.asarray(state["pbest_x"], dtype=float).reshape(shape)
        self._pbest_loss = [None if v is None else float(v) for v in state["pbest_loss"]]
        g = state["gbest_x"]
        self._gbest_x = None if g is None else np.asarray(g, dtype=float).reshape(self.dim)
        g_loss = state["gbest_loss"]
        self._gbest_loss = None if g_loss is None else float(g_loss)
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng"]
        self._rng = rng
