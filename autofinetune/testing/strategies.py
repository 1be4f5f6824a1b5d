"""The conformance suite for tuning strategies, in the shape of Optuna's sampler test cases.

Subclass `StrategyTestCase` in a test module and name the registered strategy; pytest then
runs every contract check on it::

    from autofinetune.testing.strategies import StrategyTestCase

    class TestUniform(StrategyTestCase):
        strategy_name = "uniform"
        check_beats_random = False  # random search cannot beat random search

The checks are what the search loop relies on (docs/algorithms.md): points in [0, 1], `ask`
idempotent, failures ranked last, the global numpy generator untouched, and above all restore
by replay -- the same constructor arguments and the same tells give bit-identical asks, in
this process and in another one. Every test asserts something a broken strategy would fail.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any, Callable, List, Mapping, Optional, Sequence

import numpy as np
import pytest

from ..errors import ConfigError
from ..space import ChoiceParam, FloatParam, IntParam, SearchSpace
from ..strategies.base import Strategy
from ..strategies.registry import StrategyInfo, check_strategy, get_info, load_class, make_strategy

Loss = Callable[[np.ndarray], Optional[float]]

OPTIMUM = np.array([0.3, 0.7, 0.2, 0.6, 0.45, 0.55, 0.35, 0.65])


def quadratic(x: np.ndarray) -> float:
    """An off-centre, mildly ill-conditioned bowl: its minimum is not at the init point."""
    x = np.asarray(x, dtype=float)
    o = np.resize(OPTIMUM, len(x))
    weights = np.arange(1, len(x) + 1, dtype=float)
    return float(np.sum(weights * (x - o) ** 2))


def run_rounds(strategy: Strategy, rounds: int, loss: Loss = quadratic) -> List[np.ndarray]:
    """Ask/tell `rounds` generations; what was asked, in order."""
    asked = []
    for _ in range(rounds):
        points = strategy.ask()
        asked.append(points)
        strategy.tell([loss(p) for p in points])
    return asked


def determinism_run(name: str, dim: int, popsize: int, seed: int, options: Mapping[str, Any], rounds: int) -> List[Any]:
    """The asks of a fixed search, as JSON-ready lists: the in-process and subprocess sides."""
    strategy = make_strategy(name, dim, np.full(dim, 0.5), popsize, seed, options)
    return [p.tolist() for p in run_rounds(strategy, rounds)]


_SUBPROCESS = """
import json, sys
sys.path[:] = json.loads(sys.argv[1])
import numpy as np
np.random.seed(12345)  # a different global numpy state must not matter
from autofinetune.testing.strategies import determinism_run
print(json.dumps(determinism_run(**json.loads(sys.argv[2]))))
"""


class StrategyTestCase:
    """Contract tests for the strategy registered as `strategy_name`; subclass to run them."""

    #: The name the strategy is registered under (built-in or entry point).
    strategy_name: str = ""
    #: Options passed through make_strategy, as `--strategy_option` would.
    strategy_options: Mapping[str, Any] = {}
    #: The slow-ish "beats random search on a quadratic" check; off for random searches.
    check_beats_random: bool = True

    # -- helpers ---------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _warnings_captured(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="autofinetune")

    @property
    def info(self) -> StrategyInfo:
        assert self.strategy_name, f"{type(self).__name__} must set strategy_name"
        return get_info(self.strategy_name)

    def dim(self, at_least: int = 3) -> int:
        return max(at_least, self.info.min_dim)

    def make(self, dim: Optional[int] = None, popsize: int = 4, seed: int = 0, init: float = 0.5) -> Strategy:
        dim = self.dim() if dim is None else dim
        return make_strategy(self.strategy_name, dim, np.full(dim, init), popsize, seed, self.strategy_options)

    def _require_async(self) -> None:
        if not self.info.supports_async:
            pytest.skip(f"{self.strategy_name} has supports_async=False")

    # -- registry and options --------------------------------------------------------------

    def test_info_matches_the_implementation(self) -> None:
        info = self.info
        assert info.name == self.strategy_name
        assert info.target.count(":") == 1, "target must be 'package.module:ClassName'"
        cls = load_class(info)
        assert isinstance(cls, type) and issubclass(cls, Strategy)
        strategy = self.make()
        if info.supports_async:
            assert type(strategy).ask_particle is not Strategy.ask_particle
            assert type(strategy).tell_particle is not Strategy.tell_particle
        else:
            with pytest.raises(NotImplementedError):
                strategy.ask_particle(0)
            with pytest.raises(NotImplementedError):
                strategy.tell_particle(0, 1.0)

    def test_registry_defaults_are_the_constructor_defaults(self) -> None:
        """A search built through the registry and a direct construction must agree."""
        dim = self.dim()
        defaults = check_strategy(self.strategy_name, dim, 4)
        assert defaults == {o.name: o.default if o.choices else float(o.default) for o in self.info.options}
        for option in self.info.options:  # JSON-ready: a word for a categorical option, else a float
            assert type(defaults[option.name]) is (str if option.choices else float)
        cls = load_class(self.info)
        init = np.full(dim, 0.5)
        via_registry = make_strategy(self.strategy_name, dim, init, 4, 3)
        explicit = cls(dim, init, 4, 3, **defaults)
        implicit = cls(dim, init, 4, 3)
        for a, b, c in zip(run_rounds(via_registry, 3), run_rounds(explicit, 3), run_rounds(implicit, 3)):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)

    def test_every_option_in_range_is_accepted_and_out_of_range_refused(self) -> None:
        dim = self.dim()
        for option in self.info.options:
            if option.choices:
                for word in option.choices:
                    assert check_strategy(self.strategy_name, dim, 3, {option.name: word})[option.name] == word
                    strategy = make_strategy(self.strategy_name, dim, np.full(dim, 0.5), 3, 0, {option.name: word})
                    for points in run_rounds(strategy, 2):
                        assert np.all((points >= 0.0) & (points <= 1.0))
                for bad in ["", option.choices[0].upper() + "x", 1.0, None]:
                    with pytest.raises(ConfigError, match=f"--strategy_option {option.name}=.*must be one of"):
                        check_strategy(self.strategy_name, dim, 3, {option.name: bad})
                continue
            inside = [option.default]
            inside += [option.low] if option.low_inclusive else []
            inside += [option.high] if option.high_inclusive else []
            for value in inside:
                values = check_strategy(self.strategy_name, dim, 3, {option.name: str(value)})
                assert values[option.name] == float(value)
                strategy = make_strategy(self.strategy_name, dim, np.full(dim, 0.5), 3, 0, {option.name: value})
                for points in run_rounds(strategy, 3):
                    assert np.all((points >= 0.0) & (points <= 1.0))
            outside = [option.high + 1.0, option.low - 1.0, float("nan"), "not-a-number"]
            outside += [] if option.low_inclusive else [option.low]
            outside += [] if option.high_inclusive else [option.high]
            for bad in outside:
                with pytest.raises(ConfigError, match=f"--strategy_option {option.name}="):
                    check_strategy(self.strategy_name, dim, 3, {option.name: bad})
        with pytest.raises(ConfigError, match="--strategy_option no_such_option="):
            check_strategy(self.strategy_name, dim, 3, {"no_such_option": 1.0})

    def test_too_few_dimensions_refused_or_one_dimension_searched(self) -> None:
        min_dim = self.info.min_dim
        if min_dim > 1:
            with pytest.raises(ConfigError, match=f"--tuning_strategy={self.strategy_name}"):
                check_strategy(self.strategy_name, min_dim - 1, 4)
            return
        for points in run_rounds(self.make(dim=1, popsize=4), 6):
            assert points.shape == (4, 1) and np.all((points >= 0.0) & (points <= 1.0))

    # -- determinism and replay --------------------------------------------------------------

    def test_same_seed_same_asks(self) -> None:
        for a, b in zip(run_rounds(self.make(seed=7), 5), run_rounds(self.make(seed=7), 5)):
            np.testing.assert_array_equal(a, b)

    def test_same_seed_same_asks_in_another_process(self) -> None:
        args = dict(name=self.strategy_name, dim=self.dim(), popsize=4, seed=7,
                    options=dict(self.strategy_options), rounds=5)
        env = dict(os.environ, PYTHONHASHSEED="99")
        proc = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS, json.dumps(sys.path), json.dumps(args)],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        np.random.seed(54321)
        assert theirs == determinism_run(**args)  # type: ignore[arg-type]

    def test_different_seeds_differ(self) -> None:
        a = run_rounds(self.make(seed=1), 3)
        b = run_rounds(self.make(seed=2), 3)
        assert not all(np.array_equal(x, y) for x, y in zip(a, b))

    @pytest.mark.parametrize("popsize", [1, 5])
    def test_replay_of_seed_and_tells_gives_the_same_next_asks(self, popsize: int) -> None:
        """The restore contract: rebuild, re-tell the journaled losses, continue identically.

        The original asks twice per round, the replay never asks: asking must not matter.
        """
        original = self.make(popsize=popsize, seed=11)
        told: List[List[Optional[float]]] = []
        for round_ in range(6):
            points = original.ask()
            np.testing.assert_array_equal(points, original.ask())
            losses: List[Optional[float]] = [quadratic(p) for p in points]
            if round_ == 2:
                losses[0] = None  # failures are part of what is replayed
            told.append(losses)
            original.tell(losses)
        replayed = self.make(popsize=popsize, seed=11)
        for losses in told:
            replayed.tell(losses)
        for a, b in zip(run_rounds(original, 4), run_rounds(replayed, 4)):
            np.testing.assert_array_equal(a, b)

    def test_global_numpy_random_state_is_left_alone(self) -> None:
        """Strategies own their randomness: a replay must not depend on anyone else's draws."""
        np.random.seed(0)
        before = np.random.get_state()[1].copy()
        first = run_rounds(self.make(seed=3), 3)
        if self.info.supports_async:
            strategy = self.make(seed=3)
            for i in range(4):
                strategy.tell_particle(i, quadratic(strategy.ask_particle(i)))
        np.testing.assert_array_equal(np.random.get_state()[1], before)
        np.random.seed(1)
        for a, b in zip(first, run_rounds(self.make(seed=3), 3)):
            np.testing.assert_array_equal(a, b)

    # -- shapes, bounds, types ---------------------------------------------------------------

    @pytest.mark.parametrize("init", [0.0, 0.5, 1.0])
    @pytest.mark.parametrize("popsize", [1, 3, 7])
    def test_points_in_box_with_popsize_rows_and_dim_columns(self, init: float, popsize: int) -> None:
        dim = self.dim()
        # A loss pulling hard towards a corner makes a strategy push against the bounds.
        corner = np.resize(np.array([1.0, 0.0]), dim)
        strategy = self.make(dim=dim, popsize=popsize, seed=3, init=init)
        for points in run_rounds(strategy, 8, lambda x: float(np.sum((x - corner) ** 2))):
            assert points.shape == (popsize, dim)
            assert points.dtype == np.float64
            assert np.all(np.isfinite(points))
            assert np.all(points >= 0.0) and np.all(points <= 1.0)

    def test_decoded_values_are_plain_python_types(self) -> None:
        """Values reach train.py's argv, JSON and CSV: numpy scalars would leak 'np.float64(..)'."""
        params = [
            FloatParam("lr", 0.01, 1e-4, 0.1, log=True),
            IntParam("batch", 16, 8, 64),
            ChoiceParam("opt", "adam", ["sgd", "adam", 3, 0.5]),
        ]
        params += [FloatParam(f"extra{i}", 0.5, 0.0, 1.0) for i in range(self.dim() - len(params))]
        space = SearchSpace(params)
        strategy = make_strategy(self.strategy_name, space.dim, space.init_unit(), 5, 0, self.strategy_options)
        for points in run_rounds(strategy, 4):
            for point in points:
                values = space.decode(point)
                assert type(values["lr"]) is float
                assert type(values["batch"]) is int
                assert type(values["opt"]) in (str, int, float)
                assert all(type(v) in (int, float, str) for v in values.values())

    def test_ask_is_idempotent_until_tell(self) -> None:
        strategy = self.make(seed=4)
        first = strategy.ask()
        first_copy = first.copy()
        first[...] = -1.0  # the caller owns what it was given
        np.testing.assert_array_equal(strategy.ask(), first_copy)
        strategy.tell([quadratic(p) for p in first_copy])
        second = strategy.ask()
        np.testing.assert_array_equal(second, strategy.ask())
        assert not np.array_equal(first_copy, second)

    def test_tell_with_wrong_number_of_losses_raises(self) -> None:
        strategy = self.make(popsize=4)
        strategy.ask()
        with pytest.raises(ValueError):
            strategy.tell([1.0, 2.0, 3.0])

    def test_popsize_one_searches(self) -> None:
        dim = self.dim(2)
        asked = run_rounds(self.make(dim=dim, popsize=1, seed=1), 12)
        assert all(p.shape == (1, dim) for p in asked)
        assert len({tuple(p[0]) for p in asked}) == 12  # it moves every round

    # -- failures ----------------------------------------------------------------------------

    def test_failures_never_attract(self) -> None:
        """Failures fill the region x0 < 0.3; successes get better away from it.

        A strategy that scored a failure as 0 (the original's reward for a crash) or let a
        NaN win an argmin would be drawn into the failing region; one that ranks failures
        last leaves it (random search stays at its 30%).
        """
        dim = self.dim(2)
        kinds: Sequence[Optional[float]] = (None, float("nan"), float("inf"), float("-inf"))

        def loss(x: np.ndarray, row: int) -> Optional[float]:
            if x[0] < 0.3:
                return kinds[row % len(kinds)]
            return 1.0 + float(np.sum((x - 0.8) ** 2))

        strategy = self.make(dim=dim, popsize=6, seed=0, init=0.3)
        late: List[bool] = []
        for round_ in range(15):
            points = strategy.ask()
            assert np.all(np.isfinite(points))
            strategy.tell([loss(p, i) for i, p in enumerate(points)])
            if round_ >= 10:
                late += [bool(p[0] < 0.3) for p in points]
        assert np.mean(late) <= 0.5, f"{np.mean(late):.0%} of the last rounds' points are in the failing region"

    def test_whole_failed_generations_keep_it_proposing(self) -> None:
        strategy = self.make(popsize=4, seed=2)
        for _ in range(6):
            strategy.ask()
            strategy.tell([None, float("nan"), float("inf"), float("-inf")])
        for points in run_rounds(strategy, 3):
            assert points.shape == (4, self.dim())
            assert np.all(np.isfinite(points)) and np.all((points >= 0.0) & (points <= 1.0))

    # -- quality -----------------------------------------------------------------------------

    @pytest.mark.parametrize("dim", [2, 5])
    def test_beats_random_search_on_a_quadratic(self, dim: int) -> None:
        if not self.check_beats_random:
            pytest.skip("check_beats_random = False")
        if dim < self.info.min_dim:
            pytest.skip(f"{self.strategy_name} needs {self.info.min_dim} or more dimensions")
        popsize, rounds, seeds = 6, 10, range(5)
        ours, theirs = [], []
        for s in seeds:
            asked = run_rounds(self.make(dim=dim, popsize=popsize, seed=s), rounds)
            ours.append(min(quadratic(p) for gen in asked for p in gen))
            theirs.append(min(quadratic(p) for p in np.random.default_rng(10_000 + s).random((popsize * rounds, dim))))
        assert np.median(ours) < np.median(theirs)

    # -- asynchronous mode -------------------------------------------------------------------

    def test_async_particles_have_the_right_shape_and_stay_put_until_told(self) -> None:
        self._require_async()
        dim = self.dim()
        strategy = self.make(dim=dim, popsize=4, seed=5)
        before = [strategy.ask_particle(i) for i in range(4)]
        for point in before:
            assert point.shape == (dim,) and point.dtype == np.float64
            assert np.all((point >= 0.0) & (point <= 1.0))
        mine = strategy.ask_particle(0)
        mine[...] = -1.0  # the caller owns what it was given
        np.testing.assert_array_equal(strategy.ask_particle(0), before[0])
        strategy.tell_particle(0, quadratic(before[0]))
        assert not np.array_equal(strategy.ask_particle(0), before[0])
        np.testing.assert_array_equal(strategy.ask_particle(0), strategy.ask_particle(0))
        for i in (1, 2, 3):  # their trials are still running with these points
            np.testing.assert_array_equal(strategy.ask_particle(i), before[i])
        for bad in (-1, 4):
            with pytest.raises((IndexError, ValueError)):
                strategy.ask_particle(bad)
            with pytest.raises((IndexError, ValueError)):
                strategy.tell_particle(bad, 1.0)

    def test_async_replay_in_arrival_order_is_exact(self) -> None:
        """Results arrive in any order; replaying that order (without asks) reproduces it."""
        self._require_async()
        order = np.random.default_rng(0).integers(0, 5, size=40).tolist()
        original = self.make(popsize=5, seed=8)
        told = []
        for n, i in enumerate(order):
            point = original.ask_particle(i)
            loss = None if n % 7 == 3 else quadratic(point)
            told.append((i, loss))
            original.tell_particle(i, loss)
        replayed = self.make(popsize=5, seed=8)
        for i, loss in told:
            replayed.tell_particle(i, loss)
        for _ in range(3):
            for i in range(5):
                a, b = original.ask_particle(i), replayed.ask_particle(i)
                np.testing.assert_array_equal(a, b)
                assert np.all((a >= 0.0) & (a <= 1.0))
                original.tell_particle(i, quadratic(a))
                replayed.tell_particle(i, quadratic(b))

    def test_async_failures_are_accepted(self) -> None:
        self._require_async()
        strategy = self.make(popsize=3, seed=1)
        for n in range(12):
            i = n % 3
            strategy.ask_particle(i)
            strategy.tell_particle(i, [None, float("nan"), float("inf")][i])
        for i in range(3):
            point = strategy.ask_particle(i)
            assert np.all(np.isfinite(point)) and np.all((point >= 0.0) & (point <= 1.0))

