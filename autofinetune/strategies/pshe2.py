"""PSHE2: a particle swarm with momentum, PaddleHub's default tuning strategy.

The algorithm, its source and how it differs from the original and from textbook PSO are in
docs/algorithms.md; the update itself is `pshe2_step` (positions and velocities) and
`update_bests` (the attractors). Both the synchronous `tell` and the asynchronous
`tell_particle` go through those two functions, so the two modes cannot drift apart.

All randomness comes from one private ``np.random.Generator(PCG64(seed))`` drawn only inside
`tell`/`tell_particle`, so a strategy rebuilt with the same arguments and told the same results
proposes exactly the same points (restore by replay, docs/algorithms.md).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .base import Strategy, finite_or_none, spread_design

#: alpha: step size and damping rate (PaddleHub 1.8's is 0.5; 0.9 with the decaying kick and the
#: spread first round, chosen on the benchmark's main cells, docs/algorithms.md); epsilon: the
#: random kick as a fraction of the distance to the box edge (PaddleHub 1.8's).
DEFAULT_ALPHA = 0.9
DEFAULT_EPSILON = 0.2
#: The kick over time: epsilon / sqrt(t) at a particle's t-th step (default), or epsilon at every
#: step (the original).
KICKS = ("decaying", "constant")
#: The first round: the init point plus a space-filling spread (default), or the original's
#: per-coordinate draws on either side of the init point.
FIRST_ROUNDS = ("spread", "centred")
#: `explore`: the default number of rounds after the first in which every particle but the
#: holder of the population best restarts at an unexplored point (chosen on the benchmark's main
#: cells, docs/algorithms.md); 0 is the behaviour before this option existed.
DEFAULT_EXPLORE = 1
#: Uniform candidates drawn per exploring particle; the one farthest from every point told so
#: far and from the other particles' next points is taken.
EXPLORE_CANDIDATES = 32


def kick_size(epsilon: float, t: Union[int, float, np.ndarray], kick: str) -> Union[float, np.ndarray]:
    """The kick fraction at step t: epsilon / sqrt(t) when decaying, epsilon when constant.

    Why decay: a constant kick of 0.2 keeps re-randomising a fifth of the way to the edge long
    after the swarm has found its basin, which on ill-conditioned losses undoes the progress of
    the pulls (docs/algorithms.md, "What changed in issue 15, and why"); 1 / sqrt(t) keeps early
    exploration and lets late steps refine.
    """
    if kick == "constant":
        return epsilon
    t_col = np.asarray(t, dtype=float).reshape(-1, 1) if np.ndim(t) else float(t)
    return epsilon / np.sqrt(np.maximum(t_col, 1.0))


def _seed_entropy(seed: int) -> int:
    """PCG64 refuses negative seeds; fold every Python int onto a valid, distinct-enough one."""
    return int(seed) % (2**64)


def pshe2_initial(x0: np.ndarray, popsize: int, rng: np.random.Generator) -> np.ndarray:
    """The first generation: per coordinate, uniform on one side of the init point.

    With r ~ U(-1, 1): x = x0 + r (1 - x0) if r >= 0, else x0 + r x0 -- PaddleHub's
    `set_random_hparam`. Particles start on both sides of a sensible default instead of
    uniformly in a box whose edges are often poor choices.
    """
    r = rng.uniform(-1.0, 1.0, size=(popsize, x0.shape[0]))
    up = x0 + r * (1.0 - x0)
    down = x0 + r * x0
    return np.clip(np.where(r >= 0.0, up, down), 0.0, 1.0)


def pshe2_step(
    x: np.ndarray,
    v: np.ndarray,
    p: np.ndarray,
    has_p: np.ndarray,
    g: Optional[np.ndarray],
    t: Union[int, float, np.ndarray],
    alpha: float,
    epsilon: Union[float, np.ndarray],
    rng: np.random.Generator,
) -> Tuple[np.ndarray, np.ndarray]:
    """Move k particles one PSHE2 step; returns (x_next, v_next), both of shape (k, dim).

    Source: PaddleHub 1.8, ``paddlehub/autofinetune/autoft.py``, class ``PSHE2``
    (``estimate_momemtum``, ``feedback``, ``small_peturb``), mapped linearly from its
    [-1, 1] box onto [0, 1]. For particle i at its t-th told round (t = 1, 2, ...):

        (1) v_i' = (1 - 3 alpha / t) v_i - alpha [has p_i] (x_i - p_i) - alpha [has g] (x_i - g)
        (2) y_i  = clip(x_i + alpha v_i', 0, 1)
        (3) x_i' = clip(y_i + epsilon r (1 - y_i) if r >= 0 else y_i + epsilon r y_i, 0, 1),
            r ~ U(-1, 1) per coordinate, drawn from `rng` in row-major order

    A missing attractor (no success yet) pulls with zero force. Unlike textbook PSO
    (Shi & Eberhart 1998, v <- w v + c1 r1 (p - x) + c2 r2 (g - x), x <- x + v) the pulls have
    the deterministic weight alpha, the inertia 1 - 3 alpha / t is negative at t = 1 for
    alpha > 1/3 (harmless only because v = 0 then) and grows towards 1, the velocity is scaled
    by alpha again in (2), and exploration comes from the edge-scaled kick (3) instead. The
    clips are ours: the original let points leave its box. `t` may be a scalar (a whole
    generation) or shape (k,) (each particle's own count, the asynchronous mode); `epsilon` a
    scalar or shape (k, 1) (`kick_size` of each particle's t).
    """
    t_col = np.asarray(t, dtype=float).reshape(-1, 1) if np.ndim(t) else float(t)
    local_pull = np.where(np.asarray(has_p, dtype=bool).reshape(-1, 1), x - p, 0.0)
    global_pull = x - g if g is not None else np.zeros_like(x)
    v_next = (1.0 - 3.0 * alpha / t_col) * v - alpha * local_pull - alpha * global_pull
    moved = np.clip(x + alpha * v_next, 0.0, 1.0)
    r = rng.uniform(-1.0, 1.0, size=x.shape)
    kicked = moved + np.where(r >= 0.0, 1.0 - moved, moved) * r * epsilon
    return np.clip(kicked, 0.0, 1.0), v_next


def update_bests(
    x: np.ndarray,
    losses: Sequence[Optional[float]],
    p: np.ndarray,
    p_loss: np.ndarray,
    g: Optional[np.ndarray],
    g_loss: float,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], float]:
    """The attractors after k results: (p, p_loss, g, g_loss), new arrays.

    As the original's `feedback`: a particle's best moves to its point when the loss is <= its
    best (on a tie the newer point wins, which keeps a swarm on a plateau moving); the
    population best moves to the told rows' lowest loss (the first such row) when that is <=
    the best so far. `losses` holds finite floats or None: failures never become bests. A
    missing best has loss +inf.
    """
    p, p_loss = p.copy(), p_loss.copy()
    best_row, best_loss = -1, np.inf
    for i, loss in enumerate(losses):
        if loss is None:
            continue
        if loss <= p_loss[i]:
            p_loss[i] = loss
            p[i] = x[i]
        if loss < best_loss:
            best_row, best_loss = i, loss
    if best_row >= 0 and best_loss <= g_loss:
        g, g_loss = x[best_row].copy(), float(best_loss)
    return p, p_loss, g, g_loss


class PSHE2(Strategy):
    """Particle swarm with per-particle momentum in the unit box (docs/algorithms.md)."""

    def __init__(
        self,
        dim: int,
        init_point: np.ndarray,
        popsize: int,
        seed: int,
        alpha: float = DEFAULT_ALPHA,
        epsilon: float = DEFAULT_EPSILON,
        kick: str = "decaying",
        first_round: str = "spread",
        explore: float = DEFAULT_EXPLORE,
    ) -> None:
        super().__init__(dim, init_point, popsize, seed)
        alpha = float(alpha)
        epsilon = float(epsilon)
        # Above 1 the position update overshoots the attractors by more than the distance to
        # them; 0 would freeze the swarm.
        if not (0.0 < alpha <= 1.0):
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        # A fraction of the distance to the box edge; above 1 a kick would leave the box.
        if not (0.0 <= epsilon <= 1.0):
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if kick not in KICKS:
            raise ValueError(f"kick must be one of {', '.join(KICKS)}, got {kick!r}")
        if first_round not in FIRST_ROUNDS:
            raise ValueError(f"first_round must be one of {', '.join(FIRST_ROUNDS)}, got {first_round!r}")
        explore = float(explore)
        if not (explore >= 0.0 and explore == int(explore)):
            raise ValueError(f"explore must be a whole number of rounds >= 0, got {explore}")
        self.explore = int(explore)
        self.alpha = alpha
        self.epsilon = epsilon
        self.kick = kick
        self.first_round = first_round
        self._rng = np.random.Generator(np.random.PCG64(_seed_entropy(self.seed)))
        #: Rounds told per particle; `tell` advances all of them, `tell_particle` one.
        self._t = np.zeros(self.popsize, dtype=np.int64)
        if first_round == "spread":
            self._x = spread_design(self.init_point, self.popsize, self._rng)
        else:
            self._x = pshe2_initial(self.init_point, self.popsize, self._rng)
        self._v = np.zeros((self.popsize, self.dim))
        self._p = self._x.copy()
        self._p_loss = np.full(self.popsize, np.inf)
        self._g: Optional[np.ndarray] = None
        self._g_loss = np.inf
        #: Told rounds per particle that count towards `explore` (the step's `_t` does too, but
        #: an exploring particle starts its `_t` again).
        self._told_rounds = np.zeros(self.popsize, dtype=np.int64)
        #: Every point told so far, in order, while some particle may still explore.
        self._seen: List[np.ndarray] = []

    def ask(self) -> np.ndarray:
        return self._x.copy()

    @property
    def best(self) -> Optional[Tuple[np.ndarray, float]]:
        """The population best (point, loss) the swarm is attracted to; None before a success."""
        if self._g is None:
            return None
        return self._g.copy(), float(self._g_loss)

    def tell(self, losses: Sequence[Optional[float]]) -> None:
        """Update the attractors with the whole generation, then move every particle."""
        values = self._checked_losses(losses)
        self._p, self._p_loss, self._g, self._g_loss = update_bests(
            self._x, values, self._p, self._p_loss, self._g, self._g_loss
        )
        self._t += 1
        told = self._x
        self._x, self._v = pshe2_step(
            self._x, self._v, self._p, np.isfinite(self._p_loss), self._g, self._t,
            self.alpha, kick_size(self.epsilon, self._t, self.kick), self._rng,
        )
        self._explore(range(self.popsize), told)

    # -- asynchronous mode -----------------------------------------------------------------

    def ask_particle(self, index: int) -> np.ndarray:
        return self._x[self._checked_index(index)].copy()

    def tell_particle(self, index: int, loss: Optional[float]) -> None:
        """Update the attractors with one result and move that particle alone.

        The same two functions as `tell`, on one row, with t the particle's own round count
        and g the best of everything told so far: a freed slot need not wait for the round's
        slowest trial. The outcome depends on the order results arrive in; replaying that
        order reproduces it.
        """
        i = self._checked_index(index)
        values = [finite_or_none(loss)]
        row = slice(i, i + 1)
        told = self._x.copy()
        p, p_loss, self._g, self._g_loss = update_bests(
            self._x[row], values, self._p[row], self._p_loss[row], self._g, self._g_loss
        )
        self._p[row], self._p_loss[row] = p, p_loss
        self._t[i] += 1
        x, v = pshe2_step(
            self._x[row], self._v[row], self._p[row], np.isfinite(self._p_loss[row]), self._g,
            self._t[row], self.alpha, kick_size(self.epsilon, self._t[row], self.kick), self._rng,
        )
        self._x[row], self._v[row] = x, v
        self._explore([i], told)

    # -- exploration rounds (`explore`) ----------------------------------------------------

    def _explore(self, rows: Sequence[int], told: np.ndarray) -> None:
        """Send the particles of `rows` that are still in their exploration rounds elsewhere.

        For each particle i of `rows` (just told; `told[i]` is the point it was told about):
        while it has been told `explore` rounds or fewer, it does not follow the swarm's step
        but restarts at an unexplored point -- unless it holds the population best, which
        keeps its step. The point is the one of `EXPLORE_CANDIDATES` uniform draws farthest from
        every point told so far and from every particle's next point; the particle restarts
        there with no velocity, no personal best and its step count at 0 (a full kick again).

        Why: with the default alpha the swarm moves most of the way to the population best
        after its first round, so a small budget searches around the best point of one spread
        round; an early round of new, far-apart points gives the swarm more basins to choose
        from (docs/algorithms.md, "What changed in issue 15, and why").
        """
        if self.explore <= 0:
            return
        for i in rows:
            self._told_rounds[i] += 1
        if int(self._told_rounds.min()) > self.explore:
            self._seen = []  # no particle explores again: the history is not needed
            return
        self._seen.extend(told[i].copy() for i in rows)
        for i in rows:
            if self._told_rounds[i] > self.explore:
                continue
            if self._g is not None and self._p_loss[i] == self._g_loss and np.array_equal(self._p[i], self._g):
                continue
            candidates = self._rng.random((EXPLORE_CANDIDATES, self.dim))
            others = np.vstack([np.array(self._seen), np.delete(self._x, i, axis=0)])
            gaps = np.sqrt(((candidates[:, None, :] - others[None, :, :]) ** 2).sum(axis=-1)).min(axis=1)
            self._x[i] = candidates[int(np.argmax(gaps))]
            self._v[i] = 0.0
            self._p_loss[i] = np.inf
            self._t[i] = 0
