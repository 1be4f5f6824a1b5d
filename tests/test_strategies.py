"""Conformance suite for every tuning strategy, plus algorithm-specific checks.

Like Optuna's sampler tests: one set of contract tests parametrised over the registry, so a new
strategy is tested the moment it is registered, and a few tests per algorithm for what only it
promises. Every test asserts something a broken strategy would fail.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pytest

from autofinetune.errors import ConfigError
from autofinetune.strategies import STRATEGIES, HAZero, PSHE2, check_strategy, make_strategy
from autofinetune.strategies.base import Strategy

REPO = Path(__file__).resolve().parents[1]
NAMES = sorted(STRATEGIES)
OPTIMUM = np.array([0.3, 0.7, 0.2, 0.6, 0.45])


def quadratic(x: np.ndarray, optimum: np.ndarray = OPTIMUM) -> float:
    """An off-centre, mildly ill-conditioned bowl: its minimum is not at the init point."""
    o = optimum[: len(x)]
    weights = np.arange(1, len(x) + 1, dtype=float)
    return float(np.sum(weights * (np.asarray(x) - o) ** 2))


def build(name: str, dim: int = 3, popsize: int = 4, seed: int = 0, init: Optional[float] = None) -> Strategy:
    init_point = np.full(dim, 0.5 if init is None else init)
    return make_strategy(name, dim, init_point, popsize, seed)


def run_rounds(
    strategy: Strategy, rounds: int, loss: Callable[[np.ndarray], Optional[float]] = quadratic
) -> List[np.ndarray]:
    """Ask/tell `rounds` generations; return what was asked, in order."""
    asked = []
    for _ in range(rounds):
        points = strategy.ask()
        asked.append(points)
        strategy.tell(points, [loss(p) for p in points])
    return asked


def best_of_search(strategy: Strategy, rounds: int, loss: Callable[[np.ndarray], float]) -> float:
    return min(min(loss(p) for p in gen) for gen in run_rounds(strategy, rounds, loss))


def random_search_best(dim: int, budget: int, seed: int, loss: Callable[[np.ndarray], float]) -> float:
    points = np.random.default_rng(10_000 + seed).random((budget, dim))
    return min(loss(p) for p in points)


@pytest.fixture(autouse=True)
def _quiet_small_popsize(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="autofinetune")


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


def test_registry_names_match_strategy_names() -> None:
    assert set(STRATEGIES) == {"pshe2", "hazero"}
    for name, cls in STRATEGIES.items():
        assert cls.name == name


def test_unknown_strategy_is_a_config_error_naming_the_option_and_choices() -> None:
    with pytest.raises(ConfigError) as info:
        make_strategy("bayes", 2, np.full(2, 0.5), 5, 0)
    message = str(info.value)
    assert "--tuning_strategy" in message and "\n" not in message
    for name in STRATEGIES:
        assert name in message


def test_check_strategy_refuses_bad_popsize() -> None:
    with pytest.raises(ConfigError, match="--popsize"):
        check_strategy("pshe2", 2, 0)


# --------------------------------------------------------------------------------------------
# The contract, for every strategy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_asks(name: str) -> None:
    a = run_rounds(build(name, seed=7), 5)
    b = run_rounds(build(name, seed=7), 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


_SUBPROCESS_SCRIPT = """
import json, sys
import numpy as np
np.random.seed(12345)  # a different global numpy state must not matter
sys.path.insert(0, {repo!r})
from autofinetune.strategies import make_strategy
s = make_strategy({name!r}, 3, np.full(3, 0.5), 4, 7)
out = []
for _ in range(5):
    p = s.ask()
    out.append(p.tolist())
    o = np.array([0.3, 0.7, 0.2])
    s.tell(p, [float(np.sum(np.arange(1, 4) * (x - o) ** 2)) for x in p])
print(json.dumps(out))
"""


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_asks_in_another_process(name: str) -> None:
    script = _SUBPROCESS_SCRIPT.format(repo=str(REPO), name=name)
    env = dict(os.environ, PYTHONHASHSEED="99")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = [p.tolist() for p in run_rounds(build(name, seed=7), 5)]
    assert theirs == ours


@pytest.mark.parametrize("name", NAMES)
def test_different_seeds_differ(name: str) -> None:
    a = run_rounds(build(name, seed=1), 3)
    b = run_rounds(build(name, seed=2), 3)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("init", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("popsize", [1, 3, 7])
def test_points_in_box_with_popsize_rows_and_dim_columns(name: str, init: float, popsize: int) -> None:
    dim = 3
    # A loss pulling hard towards a corner makes the strategies push against the bounds.
    corner = np.array([1.0, 0.0, 1.0])
    strategy = build(name, dim=dim, popsize=popsize, seed=3, init=init)
    for points in run_rounds(strategy, 8, lambda x: float(np.sum((x - corner) ** 2))):
        assert points.shape == (popsize, dim)
        assert points.dtype == float
        assert np.all(np.isfinite(points))
        assert np.all(points >= 0.0) and np.all(points <= 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_ask_is_idempotent_until_tell(name: str) -> None:
    strategy = build(name, seed=4)
    first = strategy.ask()
    np.testing.assert_array_equal(first, strategy.ask())
    strategy.tell(first, [quadratic(p) for p in first])
    second = strategy.ask()
    np.testing.assert_array_equal(second, strategy.ask())
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("popsize", [1, 5])
def test_state_round_trips_through_json_to_the_same_next_asks(name: str, popsize: int) -> None:
    original = build(name, popsize=popsize, seed=11)
    run_rounds(original, 6)
    state = json.loads(json.dumps(original.state_dict()))
    restored = build(name, popsize=popsize, seed=11)
    restored.load_state_dict(state)
    # Identical for several more rounds, not just the next one.
    for a, b in zip(run_rounds(original, 4), run_rounds(restored, 4)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_state_saved_between_ask_and_tell_resumes_the_pending_generation(name: str) -> None:
    original = build(name, seed=5)
    run_rounds(original, 2)
    pending = original.ask()
    restored = build(name, seed=5)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    np.testing.assert_array_equal(restored.ask(), pending)
    for a, b in zip(run_rounds(original, 3), run_rounds(restored, 3)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_state_of_a_different_shape_is_refused(name: str) -> None:
    state = build(name, popsize=4).state_dict()
    with pytest.raises(ValueError):
        build(name, popsize=5).load_state_dict(state)


@pytest.mark.parametrize("name", NAMES)
def test_tell_with_wrong_number_of_losses_raises(name: str) -> None:
    strategy = build(name, popsize=4)
    points = strategy.ask()
    with pytest.raises(ValueError):
        strategy.tell(points, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("name", NAMES)
def test_failed_trials_are_handled_and_never_best(name: str) -> None:
    """Failures sit exactly where the loss would be lowest: they must still never win."""
    strategy = build(name, popsize=5, seed=9)
    best_success = math.inf
    for round_ in range(8):
        points = strategy.ask()
        values = [quadratic(p) for p in points]
        order = np.argsort(values)
        losses: List[Optional[float]] = list(values)
        losses[int(order[0])] = None  # the best-looking point crashed
        losses[int(order[1])] = float("nan")  # the next one reported NaN
        if round_ == 3:
            losses = [None] * len(points)  # a whole generation crashed
        strategy.tell(points, losses)
        ok = [v for v in losses if v is not None and math.isfinite(v)]
        if ok:
            best_success = min(best_success, min(ok))
        best = strategy.best  # type: ignore[attr-defined]
        assert best is not None
        point, loss = best
        assert math.isfinite(loss)
        assert loss == best_success
        assert np.all(point >= 0.0) and np.all(point <= 1.0)
    after = strategy.ask()
    assert after.shape == (5, 3) and np.all(np.isfinite(after))


@pytest.mark.parametrize("name", NAMES)
def test_only_failures_leave_no_best_and_keep_proposing(name: str) -> None:
    strategy = build(name, popsize=4, seed=2)
    for _ in range(6):
        points = strategy.ask()
        strategy.tell(points, [None, float("nan"), None, float("inf")])
    assert strategy.best is None  # type: ignore[attr-defined]
    points = strategy.ask()
    assert points.shape == (4, 3)
    assert np.all(points >= 0.0) and np.all(points <= 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_popsize_one_searches(name: str) -> None:
    strategy = build(name, dim=2, popsize=1, seed=1)
    asked = run_rounds(strategy, 12)
    assert all(p.shape == (1, 2) for p in asked)
    assert len({tuple(p[0]) for p in asked}) == 12  # it moves every round
    assert strategy.best[1] == min(quadratic(p[0]) for p in asked)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [n for n in NAMES if STRATEGIES[n].min_dim <= 1])
def test_one_dimensional_space(name: str) -> None:
    assert "pshe2" in [n for n in NAMES if STRATEGIES[n].min_dim <= 1]
    strategy = build(name, dim=1, popsize=4, seed=0)
    asked = run_rounds(strategy, 10)
    assert all(p.shape == (4, 1) and np.all((p >= 0) & (p <= 1)) for p in asked)
    assert strategy.best[1] < 0.01  # type: ignore[attr-defined]  # optimum at 0.3


@pytest.mark.parametrize("name", NAMES)
def test_global_numpy_random_state_is_left_alone(name: str) -> None:
    """Strategies own their randomness: resuming must not depend on anyone else's draws."""
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    run_rounds(build(name, seed=3), 3)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [2, 5])
def test_beats_random_search_on_a_quadratic(name: str, dim: int) -> None:
    popsize, rounds, seeds = 6, 10, range(5)
    ours = [best_of_search(build(name, dim=dim, popsize=popsize, seed=s), rounds, quadratic) for s in seeds]
    theirs = [random_search_best(dim, popsize * rounds, s, quadratic) for s in seeds]
    assert np.median(ours) < np.median(theirs)


# --------------------------------------------------------------------------------------------
# PSHE2
# --------------------------------------------------------------------------------------------


def test_pshe2_velocities_are_per_particle() -> None:
    strategy = PSHE2(2, np.full(2, 0.5), 5, seed=0)
    run_rounds(strategy, 2)
    velocities = strategy.state_dict()["v"]
    assert len({tuple(v) for v in velocities}) == 5


def test_pshe2_implements_the_spec_update_rule() -> None:
    """With epsilon = 0 (no kick) the next positions follow SPEC A4 exactly."""
    alpha = 0.5
    strategy = PSHE2(2, np.full(2, 0.5), 3, seed=1, alpha=alpha, epsilon=0.0)
    x1 = strategy.ask()
    l1 = [quadratic(p) for p in x1]
    strategy.tell(x1, l1)
    # Round t=1: v starts at 0, p_i = x_i, g = the best x.
    g = x1[int(np.argmin(l1))]
    v = (1 - 3 * alpha / 1) * 0.0 - alpha * (x1 - x1) - alpha * (x1 - g)
    x2_expected = np.clip(x1 + alpha * v, 0, 1)
    x2 = strategy.ask()
    np.testing.assert_allclose(x2, x2_expected)
    # Round t=2, with personal bests chosen per particle.
    l2 = [quadratic(p) for p in x2]
    strategy.tell(x2, l2)
    p = np.where((np.array(l2) <= np.array(l1))[:, None], x2, x1)
    all_x, all_l = np.vstack([x1, x2]), l1 + l2
    g = all_x[int(np.argmin(all_l))]
    v = (1 - 3 * alpha / 2) * v - alpha * (x2 - p) - alpha * (x2 - g)
    np.testing.assert_allclose(strategy.ask(), np.clip(x2 + alpha * v, 0, 1))


def test_pshe2_initial_particles_straddle_the_init_point() -> None:
    x0 = np.array([0.2, 0.9])
    points = PSHE2(2, x0, 400, seed=0).ask()
    above = (points >= x0).mean(axis=0)
    assert np.all(np.abs(above - 0.5) < 0.1)  # a coin flip per coordinate, not uniform on the box
    assert np.all(points.min(axis=0) >= 0) and np.all(points.max(axis=0) <= 1)


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"epsilon": -0.1}, {"epsilon": 2.0}])
def test_pshe2_rejects_bad_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PSHE2(2, np.full(2, 0.5), 5, seed=0, **kwargs)


def test_pshe2_beats_random_search_on_an_off_centre_sphere() -> None:
    optimum = np.array([0.3, 0.7])

    def sphere(x: np.ndarray) -> float:
        return float(np.sum((x - optimum) ** 2))

    ours = [best_of_search(PSHE2(2, np.full(2, 0.5), 5, seed=s), 10, sphere) for s in range(10)]
    theirs = [random_search_best(2, 50, s, sphere) for s in range(10)]
    assert np.median(ours) < np.median(theirs)


# --------------------------------------------------------------------------------------------
# HAZero
# --------------------------------------------------------------------------------------------


def test_hazero_refuses_one_hyperparameter_and_suggests_pshe2() -> None:
    with pytest.raises(ConfigError) as info:
        check_strategy("hazero", 1, 5)
    message = str(info.value)
    assert "pshe2" in message and "two or more" in message and "\n" not in message
    with pytest.raises(ConfigError, match="pshe2"):
        make_strategy("hazero", 1, np.array([0.5]), 5, 0)
    check_strategy("hazero", 2, 5)  # two is enough
    check_strategy("pshe2", 1, 5)


def test_hazero_restarts_instead_of_stopping_on_flat_losses(caplog: pytest.LogCaptureFixture) -> None:
    strategy = HAZero(2, np.full(2, 0.5), 6, seed=0)
    asked = run_rounds(strategy, 25, lambda x: 0.25)  # every round ties: cma's tolfun/flat stop
    restarts = [r for r in caplog.records if "restart" in r.getMessage()]
    assert restarts and all(r.levelno == logging.WARNING for r in restarts)
    assert any("tolfun" in r.getMessage() or "flat" in r.getMessage() for r in restarts)
    assert strategy.state_dict()["restarts"] >= 1
    last = strategy.ask()
    assert last.shape == (6, 2) and np.all((last >= 0) & (last <= 1))
    assert not np.array_equal(asked[-1], asked[-2])


def test_hazero_restart_centres_on_the_best_point(caplog: pytest.LogCaptureFixture) -> None:
    strategy = HAZero(2, np.full(2, 0.5), 6, seed=1)
    run_rounds(strategy, 3)
    best_point, _ = strategy.best
    restarts_before = strategy.state_dict()["restarts"]
    # Two whole rounds crash: flat fitness twice is cma's tolflatfitness stop -> a restart.
    run_rounds(strategy, 2, lambda x: None)
    assert strategy.state_dict()["restarts"] == restarts_before + 1
    mean = strategy.ask().mean(axis=0)
    assert np.linalg.norm(mean - best_point) < 0.15  # sigma0 = 0.1 around the best point


def test_hazero_warns_once_about_a_small_population(caplog: pytest.LogCaptureFixture) -> None:
    strategy = HAZero(5, np.full(5, 0.5), 5, seed=0)  # cma's default for n=5 is 8
    run_rounds(strategy, 5)
    small = [r for r in caplog.records if "below CMA-ES's default population" in r.getMessage()]
    assert len(small) == 1
    caplog.clear()
    HAZero(5, np.full(5, 0.5), 8, seed=0)
    assert not [r for r in caplog.records if "default population" in r.getMessage()]


def test_hazero_starts_at_the_init_point_and_writes_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    init = np.array([0.2, 0.8, 0.6])
    strategy = HAZero(3, init, 40, seed=0)
    first = strategy.ask()
    assert np.linalg.norm(first.mean(axis=0) - init) < 0.05
    assert 0.05 < first.std(axis=0).mean() < 0.15  # sigma0 = 0.1 of the unit box
    run_rounds(strategy, 3)
    assert list(tmp_path.iterdir()) == []


def test_hazero_seed_zero_is_deterministic() -> None:
    a = run_rounds(HAZero(2, np.full(2, 0.5), 4, seed=0), 3)
    b = run_rounds(HAZero(2, np.full(2, 0.5), 4, seed=0), 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
