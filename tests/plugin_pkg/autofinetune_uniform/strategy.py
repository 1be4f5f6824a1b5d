"""Uniform random search: every candidate independent and uniform in the unit box.

Draws happen in `__init__` and in `tell`/`tell_particle` only, never in `ask`, so rebuilding
the strategy with the same seed and re-telling the same results replays it exactly (the
contract autofinetune restores a search by).
"""
from typing import Optional, Sequence

import numpy as np

from autofinetune.strategies.base import Strategy


class Uniform(Strategy):
    def __init__(self, dim: int, init_point: np.ndarray, popsize: int, seed: int) -> None:
        super().__init__(dim, init_point, popsize, seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed % 2**64))
        self._x = self._rng.random((self.popsize, self.dim))

    def ask(self) -> np.ndarray:
        return self._x.copy()

    def tell(self, losses: Sequence[Optional[float]]) -> None:
        self._checked_losses(losses)  # the results are not used, but a wrong count is a bug
        self._x = self._rng.random((self.popsize, self.dim))

    def ask_particle(self, index: int) -> np.ndarray:
        return self._x[self._checked_index(index)].copy()

    def tell_particle(self, index: int, loss: Optional[float]) -> None:
        self._x[self._checked_index(index)] = self._rng.random(self.dim)
