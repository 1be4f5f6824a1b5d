"""Issue 15's changes to PSHE2 and HAZero: what each new behaviour promises, and that the
original behaviour is still there, bit for bit, behind the options' legacy values.

The algorithms, their sources and the benchmark cells that chose each default are in
docs/algorithms.md ("What changed in issue 15, and why"); the figures in
docs/strategies-benchmark.md.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from autofinetune.errors import ConfigError
from autofinetune.strategies import HAZero, PSHE2, check_strategy, make_strategy
from autofinetune.strategies.base import spread_design
from autofinetune.strategies.pshe2 import kick_size, pshe2_step, update_bests
from autofinetune.strategies.registry import get_info, journal_defaults, legacy_options, resumed_options
from autofinetune.testing.strategies import StrategyTestCase, quadratic, run_rounds

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "strategies_before_issue15.json"
CORNER = np.array([1.0, 0.0, 1.0, 0.0])
ORIGINAL = {name: legacy_options(name) for name in ("pshe2", "hazero")}


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="autofinetune")


def corner(x: np.ndarray) -> float:
    """A bowl whose minimum is a corner of the box: a strategy keeps proposing past the bounds."""
    return float(np.sum((np.asarray(x) - np.resize(CORNER, len(x))) ** 2))


def rotated_ellipsoid(dim: int) -> Any:
    """An ill-conditioned (condition 1e3), rotated bowl off the centre: covariance matters."""
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, dim)))
    optimum = np.resize(np.array([0.8, 0.15, 0.7, 0.3]), dim)
    scales = 10.0 ** (3.0 * np.arange(dim) / max(dim - 1, 1))

    def f(x: np.ndarray) -> float:
        z = rotation @ (np.asarray(x, dtype=float) - optimum)
        return float(np.sum(scales * z**2))

    return f


# --------------------------------------------------------------------------------------------
# The original behaviour, behind the legacy values
# --------------------------------------------------------------------------------------------


class TestHAZeroOriginal(StrategyTestCase):
    """The original's settings still meet the whole contract."""

    strategy_name = "hazero"
    strategy_options = ORIGINAL["hazero"]


class TestPSHE2Original(StrategyTestCase):
    strategy_name = "pshe2"
    strategy_options = ORIGINAL["pshe2"]


def test_legacy_values_are_the_original_settings() -> None:
    assert ORIGINAL["hazero"] == {"sigma0": 0.1, "boundary": "fold", "first_round": "centred", "elitism": "off",
                                  "evaluate_mean": "off", "mirrors": "off"}
    assert ORIGINAL["pshe2"] == {"alpha": 0.5, "epsilon": 0.2, "kick": "constant", "first_round": "centred",
                                 "explore": 0.0}


@pytest.mark.parametrize("run", sorted(json.loads(FIXTURE.read_text())["runs"]))
def test_legacy_options_reproduce_the_candidates_recorded_before_the_change(run: str) -> None:
    """tests/fixtures/strategies_before_issue15.json holds what the code before issue 15 asked
    (commit in the file): a journal that predates the new options must resume exactly so.

    Compared to 1e-12, not bit for bit: the fixture was written with another numpy, and numpy
    releases change the last bit of CMA-ES's linear algebra (numpy 2.4.6 moved two of these
    runs by one ulp). Any change of behaviour moves the candidates by far more; a resume in one
    environment replays bit for bit (tests/test_one_truth.py)."""
    asked = json.loads(FIXTURE.read_text())["runs"][run]
    name, dim, popsize, seed = run.split("-")
    d, p, s = int(dim[3:]), int(popsize[3:]), int(seed[4:])
    strategy = make_strategy(name, d, np.linspace(0.2, 0.8, d), p, s, ORIGINAL[name])
    for round_, expected in enumerate(asked):
        points = strategy.ask()
        np.testing.assert_allclose(points, np.array(expected), rtol=1e-12, atol=0, err_msg=f"round {round_} differs")
        strategy.tell([quadratic(x) if (round_ + i) % 7 != 3 else None for i, x in enumerate(points)])


# --------------------------------------------------------------------------------------------
# Options added later: what a journal without them ran with
# --------------------------------------------------------------------------------------------


def test_a_journal_that_lacks_an_option_resumes_with_the_defaults_of_its_day() -> None:
    # A journal from before strategy options existed, and one from before issue 15.
    assert journal_defaults("hazero", None) == ORIGINAL["hazero"]
    assert journal_defaults("pshe2", {"alpha": 0.3, "epsilon": 0.2}) == ORIGINAL["pshe2"]
    # A journal of today names every option: today's defaults.
    assert journal_defaults("hazero", check_strategy("hazero", 3, 5)) == {}
    assert journal_defaults("pshe2", check_strategy("pshe2", 3, 5)) == {}


def test_a_journal_of_the_first_option_generation_resumes_without_the_later_options() -> None:
    """A journal written after issue 15's first options but before PSHE2's `explore` (added=2)
    names alpha, epsilon, kick and first_round: those keep their (unchanged) defaults, explore
    takes its legacy value -- not every option its original's."""
    first = {k: v for k, v in check_strategy("pshe2", 3, 5).items() if k != "explore"}
    assert journal_defaults("pshe2", first) == {**first, "explore": 0.0}
    assert resumed_options("pshe2", 3, 5, first, {}) == resumed_options("pshe2", 3, 5, first, first) == {**first, "explore": 0.0}
    assert [o.name for o in get_info("pshe2").options if o.added > 1] == ["explore"]


def test_a_journal_of_the_second_option_generation_resumes_without_hazeros_mirrors() -> None:
    """HAZero's `mirrors` came with generation 3: a journal of the releases before names every
    older HAZero option, which keep their (unchanged) defaults, and resumes without mirrors --
    how redrawing behaved then."""
    before = {k: v for k, v in check_strategy("hazero", 3, 5).items() if k != "mirrors"}
    assert journal_defaults("hazero", before) == {**before, "mirrors": "off"}
    assert resumed_options("hazero", 3, 5, before, {}) == {**before, "mirrors": "off"}
    assert [(o.name, o.added) for o in get_info("hazero").options if o.added > 1] == [("mirrors", 3)]
    # and a search started without mirrors proposes what it proposed then
    old = make_strategy("hazero", 3, np.full(3, 0.5), 4, 1, resumed_options("hazero", 3, 4, before, {}))
    assert old._es is not None and old._es.sp.lam_mirr == 0  # type: ignore[attr-defined]


def test_resumed_options_keep_the_behaviour_a_search_started_with() -> None:
    old_journal = {"sigma0": 0.1}  # HAZero before issue 15
    resumed = resumed_options("hazero", 3, 5, old_journal, {})
    assert resumed == ORIGINAL["hazero"]
    assert resumed_options("hazero", 3, 5, old_journal, old_journal) == resumed  # the journal's side agrees
    # What the command line names wins (and a resume refuses it if it differs from the journal).
    assert resumed_options("hazero", 3, 5, {"sigma0": 0.3}, {"sigma0": 0.3})["sigma0"] == 0.3
    assert resumed_options("hazero", 3, 5, old_journal, {"boundary": "redraw"})["boundary"] == "redraw"
    with pytest.raises(ConfigError, match="--strategy_option boundary=wrap"):
        resumed_options("hazero", 3, 5, old_journal, {"boundary": "wrap"})
    # A search of today resumes with today's defaults.
    new_journal = check_strategy("hazero", 3, 5)
    assert resumed_options("hazero", 3, 5, new_journal, {}) == new_journal == check_strategy("hazero", 3, 5, {})


def test_every_categorical_option_has_a_legacy_value_among_its_choices() -> None:
    for name in ("pshe2", "hazero"):
        for option in get_info(name).options:
            if option.choices:
                assert option.legacy in option.choices and option.default in option.choices


# --------------------------------------------------------------------------------------------
# HAZero: redraw, elitism, the mean
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("popsize", [1, 2, 6])
def test_redraw_proposes_only_points_in_the_box_and_keeps_cma_inside(popsize: int) -> None:
    """Pushed against a corner, cma's samples leave the box: each is drawn again, never folded,
    so what cma adapts to is what it proposed, and its mean stays in the box. The original's
    fold lets the mean drift out (the measurement behind issue 15)."""
    redraw = HAZero(4, np.full(4, 0.5), popsize, seed=0)
    fold = HAZero(4, np.full(4, 0.5), popsize, seed=0, boundary="fold")
    rounds = 10 * max(1, 6 // popsize)
    for gen in run_rounds(redraw, rounds, corner):
        assert np.all((gen >= 0.0) & (gen <= 1.0))
    run_rounds(fold, rounds, corner)
    assert redraw.redraws > 0
    assert redraw._es is not None and np.all((redraw._es.mean >= 0.0) & (redraw._es.mean <= 1.0))
    assert fold.redraws == 0
    if popsize == 6:
        assert fold._es is not None and not np.all((fold._es.mean >= 0.0) & (fold._es.mean <= 1.0))


def test_redraws_are_replayed_exactly() -> None:
    original = HAZero(3, np.full(3, 0.9), 5, seed=12)
    told: List[List[Optional[float]]] = []
    for round_ in range(8):
        losses: List[Optional[float]] = [corner(x) for x in original.ask()]
        if round_ == 3:
            losses[1] = None
        told.append(losses)
        original.tell(losses)
    assert original.redraws > 0
    replayed = HAZero(3, np.full(3, 0.9), 5, seed=12)
    for losses in told:
        replayed.tell(losses)
    assert replayed.redraws == original.redraws
    for a, b in zip(run_rounds(original, 3, corner), run_rounds(replayed, 3, corner)):
        np.testing.assert_array_equal(a, b)


def test_evaluate_mean_makes_the_mean_a_candidate_from_the_second_generation() -> None:
    strategy = HAZero(3, np.full(3, 0.5), 6, seed=1)
    run_rounds(strategy, 1)
    assert strategy._es is not None
    mean = np.array(strategy._es.mean)
    # injected after cma's mirror of the first generation's worst candidate (row 0)
    np.testing.assert_array_equal(strategy.ask()[1], mean)
    unmirrored = HAZero(3, np.full(3, 0.5), 6, seed=1, mirrors="off")
    run_rounds(unmirrored, 1)
    assert unmirrored._es is not None
    np.testing.assert_array_equal(unmirrored.ask()[0], np.array(unmirrored._es.mean))
    off = HAZero(3, np.full(3, 0.5), 6, seed=1, evaluate_mean="off")
    run_rounds(off, 1)
    assert off._es is not None and not np.array_equal(off.ask()[0], np.array(off._es.mean))


def test_evaluate_mean_never_repeats_a_point_with_one_parent() -> None:
    """With 3 or fewer candidates cma recombines one parent: its mean is a point already tried."""
    asked = run_rounds(HAZero(2, np.full(2, 0.5), 3, seed=0), 12)
    points = [tuple(p) for gen in asked for p in gen]
    assert len(set(points)) == len(points)


class TestHAZeroWithoutMirrors(StrategyTestCase):
    """Redrawing without mirrors (`mirrors=off`, the behaviour before the option) still meets
    the whole contract."""

    strategy_name = "hazero"
    strategy_options = {"mirrors": "off"}


@pytest.mark.parametrize("popsize", [4, 6, 12])
def test_mirrors_put_cmas_selective_mirrors_in_every_generation_and_stay_in_the_box(popsize: int) -> None:
    """mirrors=on (the default): whatever the generation size, cma mirrors its worst
    candidates (about 16%) around the new mean into the next generation; a mirror outside the
    box is redrawn like any sample, cma's warning about the mirror it then misses does not
    reach the user, and a replay proposes the same points. mirrors=off has none, as before."""
    import warnings

    on = HAZero(4, np.full(4, 0.5), popsize, seed=3)
    off = HAZero(4, np.full(4, 0.5), popsize, seed=3, mirrors="off")
    assert on._es is not None and on._es.sp.lam_mirr == max(1, round(0.159 * popsize))
    assert off._es is not None and off._es.sp.lam_mirr == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cma's InjectionWarning included
        asked = run_rounds(on, 10, corner)
    assert on.redraws > 0  # the corner pushes samples, mirrors included, out of the box
    for gen in asked:
        assert np.all((gen >= 0.0) & (gen <= 1.0))
    replayed = HAZero(4, np.full(4, 0.5), popsize, seed=3)
    for gen in asked[:-1]:
        replayed.tell([corner(x) for x in gen])
    np.testing.assert_array_equal(replayed.ask(), asked[-1])
    np.testing.assert_array_equal(run_rounds(off, 1, corner)[0], asked[0])  # the same first generation
    assert not np.array_equal(run_rounds(off, 2, corner)[1], asked[2])


def test_mirrors_leave_fold_as_the_original_had_it() -> None:
    """`fold` always had cma's default mirrors (below 6 candidates): the option changes nothing
    there, so the original's settings reproduce whatever `mirrors` says."""
    for popsize in (4, 8):
        on = run_rounds(HAZero(3, np.full(3, 0.4), popsize, seed=2, boundary="fold", mirrors="on"), 6, corner)
        off = run_rounds(HAZero(3, np.full(3, 0.4), popsize, seed=2, boundary="fold", mirrors="off"), 6, corner)
        np.testing.assert_array_equal(np.array(on), np.array(off))


def test_elitism_is_cmas_elitist_option() -> None:
    assert HAZero(2, np.full(2, 0.5), 6, seed=0)._es.opts["CMA_elitist"] is True  # type: ignore[union-attr]
    assert HAZero(2, np.full(2, 0.5), 6, seed=0, elitism="off")._es.opts["CMA_elitist"] in (False, "False")  # type: ignore[union-attr]


def test_spread_first_round_then_cma_starts_at_its_best_point() -> None:
    strategy = HAZero(3, np.array([0.2, 0.5, 0.9]), 6, seed=4, first_round="spread")
    first = strategy.ask()
    np.testing.assert_array_equal(first[0], [0.2, 0.5, 0.9])
    losses = [corner(x) for x in first]
    strategy.tell(losses)
    assert strategy._es is not None
    np.testing.assert_array_equal(strategy._es.mean, first[int(np.argmin(losses))])


@pytest.mark.parametrize("name", ["hazero", "pshe2"])
def test_the_defaults_beat_the_original_on_ill_conditioned_bowls(name: str) -> None:
    """A cheap guard on what issue 15 bought, measured as the benchmark measures it: over four
    (dimension, popsize, rounds) settings of a rotated ellipsoid of condition 1e3, the geometric
    mean of (median best loss of the defaults / of the original) over 7 seeds is below 1, and
    the defaults beat random search in every setting (docs/algorithms.md has the bbob figures;
    single settings are too noisy to promise more)."""
    ratios = []
    for dim, popsize, rounds in [(4, 8, 12), (4, 6, 10), (3, 6, 10), (5, 8, 15)]:
        f = rotated_ellipsoid(dim)

        def median_best(options: Dict[str, Any]) -> float:
            bests = []
            for seed in range(7):
                asked = run_rounds(make_strategy(name, dim, np.full(dim, 0.5), popsize, seed, options), rounds, f)
                bests.append(min(f(p) for gen in asked for p in gen))
            return float(np.median(bests))

        draws = popsize * rounds
        random = float(np.median([min(f(p) for p in np.random.default_rng(100 + s).random((draws, dim))) for s in range(7)]))
        new, old = median_best({}), median_best(ORIGINAL[name])
        assert new < random / 2, (dim, popsize, rounds, new, random)
        ratios.append(new / old)
    assert float(np.exp(np.mean(np.log(ratios)))) < 0.9, ratios


# --------------------------------------------------------------------------------------------
# PSHE2: the kick, the spread first round
# --------------------------------------------------------------------------------------------


def test_decaying_kick_is_epsilon_over_sqrt_t() -> None:
    assert kick_size(0.2, 1, "decaying") == pytest.approx(0.2)
    assert kick_size(0.2, 4, "decaying") == pytest.approx(0.1)
    np.testing.assert_allclose(kick_size(0.2, np.array([1, 4, 16]), "decaying"), [[0.2], [0.1], [0.05]])
    assert kick_size(0.2, 9, "constant") == 0.2


def test_pshe2_tell_uses_the_decaying_kick() -> None:
    """Equation (3) of docs/algorithms.md with epsilon / sqrt(t), replayed by hand, bit for bit
    (without the exploration round, which restarts the step count of the particles it moves)."""
    strategy = PSHE2(2, np.full(2, 0.5), 3, seed=6, explore=0)
    run_rounds(strategy, 2)
    x, v = strategy._x.copy(), strategy._v.copy()
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = strategy._rng.bit_generator.state
    losses: List[Optional[float]] = [quadratic(row) for row in x]
    p, p_loss, g, _ = update_bests(x, losses, strategy._p, strategy._p_loss, strategy._g, strategy._g_loss)
    t = np.full(3, 3)  # the third told round
    expected, _ = pshe2_step(x, v, p, np.isfinite(p_loss), g, t, 0.9, kick_size(0.2, t, "decaying"), rng)
    strategy.tell(losses)
    np.testing.assert_array_equal(strategy.ask(), expected)


def test_spread_design_is_a_latin_hypercube_after_the_init_point() -> None:
    init = np.array([0.1, 0.5, 0.95])
    design = spread_design(init, 9, np.random.default_rng(3))
    assert design.shape == (9, 3)
    np.testing.assert_array_equal(design[0], init)
    for column in design[1:].T:  # one point in each eighth of every coordinate
        assert sorted(np.floor(column * 8).astype(int).tolist()) == list(range(8))
    np.testing.assert_array_equal(design, spread_design(init, 9, np.random.default_rng(3)))
    assert spread_design(init, 1, np.random.default_rng(0)).tolist() == [init.tolist()]


def test_pshe2_explore_round_restarts_all_but_the_best_far_from_what_was_told() -> None:
    """explore=1 (the default): after the first round every particle but the holder of the
    population best restarts at a point farther from everything told than the swarm's step
    would put it; the best moves as usual; from then on the swarm is PSHE2's."""
    f = rotated_ellipsoid(3)
    explored, plain = PSHE2(3, np.full(3, 0.5), 6, seed=4), PSHE2(3, np.full(3, 0.5), 6, seed=4, explore=0)
    first = explored.ask()
    np.testing.assert_array_equal(first, plain.ask())
    losses = [f(x) for x in first]
    explored.tell(losses)
    plain.tell(losses)
    second, stepped = explored.ask(), plain.ask()
    best = int(np.argmin(losses))
    np.testing.assert_array_equal(second[best], stepped[best])  # same draws up to the step

    def gap(points: np.ndarray) -> float:
        return float(np.sqrt(((points[:, None, :] - first[None, :, :]) ** 2).sum(-1)).min(axis=1).mean())

    others = [i for i in range(6) if i != best]
    assert gap(second[others]) > 2 * gap(stepped[others])
    assert np.all(explored._v[others] == 0) and not np.isfinite(explored._p_loss[others]).any()
    explored.tell([f(x) for x in second])
    assert explored._seen == []  # no particle explores again: the history is dropped
    # async: one particle at a time explores the same way, and only in its own first round
    lone = PSHE2(3, np.full(3, 0.5), 6, seed=4)
    for i in range(6):
        lone.tell_particle(i, f(lone.ask_particle(i)))
    assert all(lone._told_rounds == 1)


def test_pshe2_explore_must_be_a_whole_number() -> None:
    with pytest.raises(ValueError, match="explore"):
        PSHE2(2, np.full(2, 0.5), 4, seed=0, explore=1.5)
    with pytest.raises(ConfigError, match="explore"):
        check_strategy("pshe2", 2, 4, {"explore": -1})


def test_pshe2_spread_first_round_covers_the_box() -> None:
    points = PSHE2(2, np.array([0.5, 0.5]), 10, seed=0).ask()
    np.testing.assert_array_equal(points[0], [0.5, 0.5])
    centred = PSHE2(2, np.array([0.5, 0.5]), 10, seed=0, first_round="centred").ask()
    # a Latin hypercube reaches every tenth of the box in each coordinate
    assert len(set(np.floor(points[1:, 0] * 9).astype(int))) == 9
    assert not np.array_equal(points, centred)
