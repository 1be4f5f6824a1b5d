"""The built-in strategies against the shared contract, plus what only each algorithm promises.

The contract itself lives in `autofinetune.testing.strategies.StrategyTestCase` so a plugin
runs exactly the same checks (tests/test_plugin.py proves it with a real installed plugin).
"""
from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import pytest

from autofinetune.errors import ConfigError
from autofinetune.strategies import (
    STRATEGIES,
    HAZero,
    OptionSpec,
    PSHE2,
    StrategyInfo,
    available,
    check_strategy,
    get_info,
    make_strategy,
    registry,
)
from autofinetune.strategies.pshe2 import pshe2_step, update_bests
from autofinetune.testing.strategies import StrategyTestCase, quadratic, run_rounds

REPO = Path(__file__).resolve().parents[1]


class TestPSHE2(StrategyTestCase):
    strategy_name = "pshe2"


class TestHAZero(StrategyTestCase):
    strategy_name = "hazero"


class TestPSHE2WithOptions(StrategyTestCase):
    """Options change the numbers, never the contract."""

    strategy_name = "pshe2"
    strategy_options = {"alpha": "0.3", "epsilon": 0.05}
    check_beats_random = False  # a quality claim about the defaults only


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="autofinetune")


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


def test_builtins_are_described_without_importing_them() -> None:
    infos = available()
    assert {"pshe2", "hazero"} <= set(infos)
    pshe2, hazero = infos["pshe2"], infos["hazero"]
    assert (pshe2.display_name, pshe2.min_dim, pshe2.supports_async, pshe2.builtin) == ("PSHE2", 1, True, True)
    assert (hazero.display_name, hazero.min_dim, hazero.supports_async, hazero.builtin) == ("HAZero", 2, False, True)
    assert pshe2.options == (
        OptionSpec("alpha", 0.9, 0.0, 1.0, pshe2.options[0].help, low_inclusive=False, high_inclusive=True, legacy=0.5),
        OptionSpec("epsilon", 0.2, 0.0, 1.0, pshe2.options[1].help, low_inclusive=True, high_inclusive=True),
        OptionSpec.categorical("kick", "decaying", ("decaying", "constant"), pshe2.options[2].help, legacy="constant"),
        OptionSpec.categorical("first_round", "spread", ("spread", "centred"), pshe2.options[3].help, legacy="centred"),
        OptionSpec("explore", 1.0, 0.0, 1000.0, pshe2.options[4].help, legacy=0.0, added=2),
    )
    assert hazero.options == (
        OptionSpec("sigma0", 0.15, 0.0, 1.0, hazero.options[0].help, False, True, legacy=0.1),
        OptionSpec.categorical("boundary", "redraw", ("redraw", "fold"), hazero.options[1].help, legacy="fold"),
        OptionSpec.categorical("first_round", "centred", ("centred", "spread"), hazero.options[2].help, legacy="centred"),
        OptionSpec.categorical("elitism", "on", ("on", "off"), hazero.options[3].help, legacy="off"),
        OptionSpec.categorical("evaluate_mean", "on", ("on", "off"), hazero.options[4].help, legacy="off"),
        OptionSpec.categorical("mirrors", "on", ("on", "off"), hazero.options[5].help, legacy="off", added=3),
    )
    assert STRATEGIES["pshe2"] is PSHE2 and STRATEGIES["hazero"] is HAZero
    assert set(STRATEGIES) == set(infos)


def test_metadata_and_checks_import_no_implementation() -> None:
    """A PSHE2 search, --help or a bad command line must not pay for cma and scipy."""
    script = "\n".join([
        "import sys",
        "from autofinetune.strategies import available, check_strategy, get_info",
        "from autofinetune.errors import ConfigError",
        "get_info('hazero'); available()",
        "assert check_strategy('hazero', 3, 8, {'sigma0': 0.2})['sigma0'] == 0.2",
        "assert check_strategy('hazero', 3, 8, {'boundary': 'fold'})['boundary'] == 'fold'",
        "for bad in [('hazero', 1, 8), ('hazero', 3, 8, {'sigma0': 7}), ('hazero', 3, 8, {'boundary': 'clip'}), ('hazero', 3, 8, {}, True)]:",
        "    try:",
        "        check_strategy(*bad)",
        "    except ConfigError:",
        "        pass",
        "    else:",
        "        raise SystemExit('no error for %r' % (bad,))",
        "loaded = sorted(m for m in ('cma', 'scipy', 'autofinetune.strategies.hazero', 'autofinetune.strategies.pshe2') if m in sys.modules)",
        "print(loaded)",
    ])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(REPO), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_strategy_is_one_line_naming_the_option_and_choices() -> None:
    for call in (lambda: get_info("bayes"), lambda: check_strategy("bayes", 2, 5),
                 lambda: make_strategy("bayes", 2, np.full(2, 0.5), 5, 0)):
        with pytest.raises(ConfigError) as info:
            call()
        message = str(info.value)
        assert message.startswith("--tuning_strategy='bayes'") and "\n" not in message
        assert "hazero" in message and "pshe2" in message


@pytest.mark.parametrize(
    "args, expected",
    [
        (("pshe2", 2, 0), "--popsize must be 1 or more, got 0"),
        (("hazero", 1, 5), "--tuning_strategy=hazero: HAZero needs two or more hyperparameters, the search space has 1; use --tuning_strategy=pshe2"),
        (("pshe2", 2, 5, {"beta": 1}), "--strategy_option beta=...: PSHE2 (--tuning_strategy=pshe2) has no option 'beta'; valid options: alpha, epsilon, kick, first_round"),
        (("pshe2", 2, 5, {"alpha": "fast"}), "--strategy_option alpha=fast: not a number; PSHE2's alpha (step size and damping rate of the swarm) must be a number in (0, 1]"),
        (("pshe2", 2, 5, {"alpha": 0}), "--strategy_option alpha=0 is out of range: PSHE2's alpha (step size and damping rate of the swarm) must be a number in (0, 1]"),
        (("pshe2", 2, 5, {"epsilon": True}), "--strategy_option epsilon=True: not a number"),
        (("hazero", 2, 5, {"sigma0": 1.5}), "--strategy_option sigma0=1.5 is out of range: HAZero's sigma0"),
        (("hazero", 2, 5, {"boundary": "clip"}), "--strategy_option boundary=clip: HAZero's boundary (a candidate outside the box is redrawn, or folded back in as the original did) must be one of redraw, fold; e.g. --strategy_option boundary=redraw"),
        (("pshe2", 2, 5, {"kick": 0.5}), "--strategy_option kick=0.5: PSHE2's kick"),
        (("hazero", 2, 5, {}, True), "--async: --tuning_strategy=hazero needs whole rounds (generations) of results; use --tuning_strategy=pshe2 with --async, or drop --async"),
    ],
)
def test_check_strategy_errors_are_one_line_with_the_fix(args: tuple, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_strategy(*args)
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message


def test_check_strategy_fills_defaults_as_floats_and_words() -> None:
    assert check_strategy("pshe2", 1, 1) == {"alpha": 0.9, "epsilon": 0.2, "kick": "decaying", "first_round": "spread",
                                            "explore": 1.0}
    assert check_strategy("pshe2", 1, 1, {"alpha": "0.3", "kick": "constant"}, asynchronous=True) == {
        "alpha": 0.3, "epsilon": 0.2, "kick": "constant", "first_round": "spread",
        "explore": 1.0}
    assert check_strategy("hazero", 2, 5) == {
        "sigma0": 0.15, "boundary": "redraw", "first_round": "centred", "elitism": "on", "evaluate_mean": "on",
        "mirrors": "on"}
    assert check_strategy("hazero", 2, 5, {"sigma0": 1}) == {
        "sigma0": 1.0, "boundary": "redraw", "first_round": "centred", "elitism": "on", "evaluate_mean": "on",
        "mirrors": "on"}
    strategy = make_strategy("pshe2", 2, np.full(2, 0.5), 3, 0, {"alpha": "0.3"})
    assert isinstance(strategy, PSHE2) and strategy.alpha == 0.3 and strategy.epsilon == 0.2


class _FakeEntryPoint:
    def __init__(self, name: str, value: str, obj: Any) -> None:
        self.name, self.value, self._obj = name, value, obj

    def load(self) -> Any:
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


def test_broken_plugins_are_skipped_with_one_warning_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = StrategyInfo("good", "nowhere.module:Good", "Good", builtin=True)
    entries = [
        _FakeEntryPoint("good", "x:GOOD", good),
        _FakeEntryPoint("crash", "broken.info:INFO", ImportError("No module named 'broken'")),
        _FakeEntryPoint("notinfo", "x:NOT", {"name": "notinfo"}),
        _FakeEntryPoint("pshe2", "x:SHADOW", StrategyInfo("pshe2", "evil:PSHE2", "Evil")),
        _FakeEntryPoint("renamed", "x:R", StrategyInfo("other", "x:Y", "Other")),
        _FakeEntryPoint("baddefault", "x:B", StrategyInfo("baddefault", "x:Y", "B", options=(OptionSpec("a", 5.0, 0.0, 1.0, "a"),))),
    ]
    monkeypatch.setattr(registry, "_entry_points", lambda: entries)
    registry._discover.cache_clear()
    try:
        infos = available()
        available()  # cached: no second round of warnings
        assert infos["good"].builtin is False  # a plugin cannot claim to be built in
        assert infos["pshe2"].target == "autofinetune.strategies.pshe2:PSHE2"
        assert set(infos) == {"pshe2", "hazero", "good"}
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 5
        for name in ("crash", "notinfo", "pshe2", "renamed", "baddefault"):
            assert sum(f"strategy plugin {name!r}" in w for w in warnings) == 1
        with pytest.raises(ConfigError, match="cannot import its implementation nowhere.module:Good"):
            make_strategy("good", 2, np.full(2, 0.5), 2, 0)
    finally:
        registry._discover.cache_clear()


# --------------------------------------------------------------------------------------------
# PSHE2
# --------------------------------------------------------------------------------------------


def test_pshe2_velocities_are_per_particle() -> None:
    """The original aliased one velocity list for every particle; each has its own here."""
    strategy = PSHE2(2, np.full(2, 0.5), 5, seed=0)
    run_rounds(strategy, 2)
    assert len({tuple(v) for v in strategy._v}) == 5


def test_pshe2_follows_equations_1_and_2_without_the_kick() -> None:
    """With epsilon = 0 (and no exploration round) the next positions follow docs/algorithms.md
    (1)-(2) exactly."""
    alpha = 0.5
    strategy = PSHE2(2, np.full(2, 0.5), 3, seed=1, alpha=alpha, epsilon=0.0, explore=0)
    x1 = strategy.ask()
    l1 = [quadratic(p) for p in x1]
    strategy.tell(l1)
    g = x1[int(np.argmin(l1))]
    v = (1 - 3 * alpha / 1) * 0.0 - alpha * (x1 - x1) - alpha * (x1 - g)
    x2 = strategy.ask()
    np.testing.assert_allclose(x2, np.clip(x1 + alpha * v, 0, 1))
    l2 = [quadratic(p) for p in x2]
    strategy.tell(l2)
    p = np.where((np.array(l2) <= np.array(l1))[:, None], x2, x1)
    all_x, all_l = np.vstack([x1, x2]), l1 + l2
    g = all_x[int(np.argmin(all_l))]
    v = (1 - 3 * alpha / 2) * v - alpha * (x2 - p) - alpha * (x2 - g)
    np.testing.assert_allclose(strategy.ask(), np.clip(x2 + alpha * v, 0, 1))


def test_pshe2_step_kick_is_equation_3() -> None:
    rng_seed = 5
    x = np.array([[0.2, 0.9], [0.5, 0.5]])
    v = np.array([[0.1, -0.2], [0.0, 0.3]])
    p = np.array([[0.3, 0.8], [0.4, 0.6]])
    g = np.array([0.35, 0.7])
    has_p = np.array([True, False])
    alpha, epsilon, t = 0.4, 0.3, 2
    x_next, v_next = pshe2_step(x, v, p, has_p, g, t, alpha, epsilon, np.random.default_rng(rng_seed))
    expected_v = (1 - 3 * alpha / t) * v - alpha * np.where(has_p[:, None], x - p, 0.0) - alpha * (x - g)
    y = np.clip(x + alpha * expected_v, 0, 1)
    r = np.random.default_rng(rng_seed).uniform(-1, 1, size=x.shape)
    expected_x = np.clip(np.where(r >= 0, y + epsilon * r * (1 - y), y + epsilon * r * y), 0, 1)
    np.testing.assert_array_equal(v_next, expected_v)
    np.testing.assert_array_equal(x_next, expected_x)
    # No population best yet: no pull towards it.
    _, v_none = pshe2_step(x, v, p, has_p, None, t, alpha, epsilon, np.random.default_rng(0))
    np.testing.assert_array_equal(v_none, (1 - 3 * alpha / t) * v - alpha * np.where(has_p[:, None], x - p, 0.0))


@pytest.mark.parametrize("popsize", [1, 3])
def test_tell_and_tell_particle_are_the_same_equations(popsize: int) -> None:
    """Telling every particle in index order equals telling the generation at once, bit for bit.

    Losses rise with the index, so the population best after particle 0 is the one `tell`
    sees for the whole generation, and the kicks are drawn in the same order: any difference
    between the two paths' formulas (velocity, inertia, pulls, kick, best rules) shows.
    """
    sync = PSHE2(3, np.full(3, 0.4), popsize, seed=21)
    async_ = PSHE2(3, np.full(3, 0.4), popsize, seed=21)
    for round_ in range(8):
        points = sync.ask()
        np.testing.assert_array_equal(points, np.array([async_.ask_particle(i) for i in range(popsize)]))
        losses: List[Optional[float]] = [i + quadratic(x) / 100.0 for i, x in enumerate(points)]
        if round_ == 4:
            losses[-1] = None
        sync.tell(losses)
        for i, loss in enumerate(losses):
            async_.tell_particle(i, loss)
        np.testing.assert_array_equal(sync._v, async_._v)
        assert sync.best is not None and async_.best is not None
        np.testing.assert_array_equal(sync.best[0], async_.best[0])
    np.testing.assert_array_equal(sync.ask(), np.array([async_.ask_particle(i) for i in range(popsize)]))


def test_update_bests_rules() -> None:
    x = np.array([[0.1], [0.2], [0.3]])
    p = np.array([[0.5], [0.5], [0.5]])
    p_loss = np.array([1.0, np.inf, 0.5])
    p2, p_loss2, g, g_loss = update_bests(x, [1.0, 0.7, None], p, p_loss, None, np.inf)
    np.testing.assert_array_equal(p2, [[0.1], [0.2], [0.5]])  # a tie moves the personal best
    np.testing.assert_array_equal(p_loss2, [1.0, 0.7, 0.5])
    assert g_loss == 0.7 and g is not None and g[0] == 0.2  # the round's best; a failure never
    np.testing.assert_array_equal(p, [[0.5], [0.5], [0.5]])  # inputs untouched
    _, _, g, g_loss = update_bests(x, [0.7, 0.7, 0.9], p2, p_loss2, g, g_loss)
    assert g is not None and g[0] == 0.1  # a tie with the best so far moves it; first row of the round wins
    _, _, g, g_loss = update_bests(x, [None, None, None], p2, p_loss2, g, g_loss)
    assert g is not None and g[0] == 0.1 and g_loss == 0.7


def test_pshe2_initial_particles_straddle_the_init_point() -> None:
    x0 = np.array([0.2, 0.9])
    points = PSHE2(2, x0, 400, seed=0, first_round="centred").ask()
    above = (points >= x0).mean(axis=0)
    assert np.all(np.abs(above - 0.5) < 0.1)  # a coin flip per coordinate, not uniform on the box
    assert np.all(points.min(axis=0) >= 0) and np.all(points.max(axis=0) <= 1)


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"epsilon": -0.1}, {"epsilon": 2.0}])
def test_pshe2_rejects_bad_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PSHE2(2, np.full(2, 0.5), 5, seed=0, **kwargs)


@pytest.mark.parametrize("name", ["pshe2", "hazero"])
def test_failed_trials_are_never_best(name: str) -> None:
    """Failures sit exactly where the loss would be lowest: they must still never win."""
    strategy = make_strategy(name, 3, np.full(3, 0.5), 5, 9)
    best_success = math.inf
    for round_ in range(8):
        points = strategy.ask()
        values = [quadratic(p) for p in points]
        order = np.argsort(values)
        losses: List[Optional[float]] = list(values)
        losses[int(order[0])] = None
        losses[int(order[1])] = float("nan")
        if round_ == 3:
            losses = [None] * len(points)
        strategy.tell(losses)
        ok = [v for v in losses if v is not None and math.isfinite(v)]
        if ok:
            best_success = min(best_success, min(ok))
        best = strategy.best  # type: ignore[attr-defined]
        assert best is not None and best[1] == best_success


@pytest.mark.parametrize("name", ["pshe2", "hazero"])
def test_no_pickle_no_state_dict(name: str) -> None:
    """State is a replay of seed + tells (docs/algorithms.md), never a pickle in the journal."""
    strategy = make_strategy(name, 2, np.full(2, 0.5), 4, 0)
    assert not hasattr(strategy, "state_dict") and not hasattr(strategy, "load_state_dict")
    source = Path(sys.modules[type(strategy).__module__].__file__ or "").read_text()
    assert "pickle" not in source.replace("no pickle", "")


# --------------------------------------------------------------------------------------------
# HAZero
# --------------------------------------------------------------------------------------------


def test_hazero_built_directly_refuses_one_hyperparameter() -> None:
    with pytest.raises(ValueError, match="two or more"):
        HAZero(1, np.array([0.5]), 5, seed=0)
    with pytest.raises(ValueError, match="sigma0"):
        HAZero(2, np.full(2, 0.5), 5, seed=0, sigma0=0.0)


def test_hazero_restarts_instead_of_stopping_on_flat_losses(caplog: pytest.LogCaptureFixture) -> None:
    strategy = HAZero(2, np.full(2, 0.5), 6, seed=0)
    asked = run_rounds(strategy, 25, lambda x: 0.25)  # every round ties: cma's tolfun/flat stop
    restarts = [r for r in caplog.records if "restart" in r.getMessage()]
    assert restarts and all(r.levelno == logging.WARNING for r in restarts)
    assert any("tolfun" in r.getMessage() or "flat" in r.getMessage() for r in restarts)
    assert strategy.restarts >= 1
    last = strategy.ask()
    assert last.shape == (6, 2) and np.all((last >= 0) & (last <= 1))
    assert not np.array_equal(asked[-1], asked[-2])


def test_hazero_replay_across_restarts_is_exact() -> None:
    """A restart draws from a generator derived from (seed, restart count): replay meets it too."""
    losses = [[0.25] * 6 if r < 12 else [quadratic(np.full(2, 0.1 * i)) for i in range(6)] for r in range(16)]
    original = HAZero(2, np.full(2, 0.5), 6, seed=3)
    for row in losses:
        original.ask()
        original.tell(row)
    assert original.restarts >= 1
    replayed = HAZero(2, np.full(2, 0.5), 6, seed=3)
    for row in losses:
        replayed.tell(row)
    assert replayed.restarts == original.restarts
    for a, b in zip(run_rounds(original, 3), run_rounds(replayed, 3)):
        np.testing.assert_array_equal(a, b)


def test_hazero_restart_centres_on_the_best_point() -> None:
    strategy = HAZero(2, np.full(2, 0.5), 6, seed=1)
    run_rounds(strategy, 3)
    best_point, _ = strategy.best
    restarts_before = strategy.restarts
    # Two whole rounds crash: flat fitness twice is cma's tolflatfitness stop -> a restart.
    run_rounds(strategy, 2, lambda x: None)
    assert strategy.restarts == restarts_before + 1
    mean = strategy.ask().mean(axis=0)
    assert np.linalg.norm(mean - best_point) < 0.2  # sigma0 = 0.15 around the best point


def test_hazero_warns_once_about_a_small_population(caplog: pytest.LogCaptureFixture) -> None:
    strategy = HAZero(5, np.full(5, 0.5), 5, seed=0)  # cma's default for n=5 is 8
    run_rounds(strategy, 5)
    small = [r for r in caplog.records if "below CMA-ES's default population" in r.getMessage()]
    assert len(small) == 1
    caplog.clear()
    HAZero(5, np.full(5, 0.5), 8, seed=0)
    assert not [r for r in caplog.records if "default population" in r.getMessage()]


@pytest.mark.parametrize("sigma0, low, high", [(0.1, 0.05, 0.15), (0.03, 0.01, 0.05)])
def test_hazero_starts_at_the_init_point_with_sigma0_and_writes_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigma0: float, low: float, high: float
) -> None:
    monkeypatch.chdir(tmp_path)
    init = np.array([0.2, 0.8, 0.6])
    strategy = make_strategy("hazero", 3, init, 40, 0, {"sigma0": sigma0, "first_round": "centred"})
    first = strategy.ask()
    assert np.linalg.norm(first.mean(axis=0) - init) < 0.05
    assert low < first.std(axis=0).mean() < high
    run_rounds(strategy, 3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("boundary, generation", [("fold", 2), ("redraw", 3)])
def test_hazero_popsize_one_serves_cma_generations_in_chunks(boundary: str, generation: int) -> None:
    """cma needs 2 candidates a generation with its mirrors (fold), 3 without them (redraw)."""
    strategy = HAZero(2, np.full(2, 0.5), 1, seed=0, boundary=boundary)
    for told in range(1, generation):
        strategy.tell([quadratic(strategy.ask()[0])])
        assert strategy._offset == told and strategy._gen is not None  # part of cma's generation told
    strategy.tell([quadratic(strategy.ask()[0])])
    assert strategy._gen is None  # the whole generation went to cma


def test_subprocess_determinism_covers_json_round_trip() -> None:
    """json keeps a float's exact value: the cross-process comparison is bit-exact."""
    values = make_strategy("hazero", 2, np.full(2, 0.5), 6, 0).ask().ravel().tolist()
    assert json.loads(json.dumps(values)) == values
