"""The pruners' decisions (autofinetune/pruners.py; the rules and sources in docs/pruning.md).

Hand-computed small cases for every rule, the shared conventions (NaN, repeated steps, the
sticky stop, a new attempt after `finished`), determinism, the option checks, and -- where
optuna is installed -- agreement with Optuna's MedianPruner and SuccessiveHalvingPruner on
randomised report sequences, decision by decision.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

from autofinetune.errors import ConfigError
from autofinetune.pruners import (
    PRUNER_NAMES,
    ASHAPruner,
    MedianPruner,
    NoPruner,
    check_pruner_options,
    make_pruner,
    pruner_options,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def complete(pruner, trial, values: Dict[int, float]) -> None:
    """A trial that reports `values` (step: score) and runs to completion."""
    for step, value in sorted(values.items()):
        assert pruner.report(trial, step, value) is False, (trial, step)
    pruner.finished(trial, "ok")


# ---------------------------------------------------------------------------- median


def test_median_waits_for_n_startup_completed_trials_then_prunes_strictly_below_the_median():
    pruner = MedianPruner(n_startup_trials=2)
    complete(pruner, "a", {1: 0.5})
    assert pruner.report("c", 1, 0.1) is False  # one completed trial < n_startup_trials=2
    complete(pruner, "b", {1: 0.7})
    # completed values at step 1: 0.5, 0.7 -> median 0.6
    assert pruner.report("d", 1, 0.55) is True
    assert pruner.report("e", 1, 0.6) is False  # equal to the median: kept
    assert pruner.report("f", 1, 0.65) is False


def test_median_needs_one_completed_trial_even_with_no_startup_trials():
    pruner = MedianPruner(n_startup_trials=0)
    assert pruner.report("a", 1, float("nan")) is False  # no completed trial: never a check
    complete(pruner, "b", {1: 0.5})
    assert pruner.report("c", 1, 0.4) is True


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    pruner = MedianPruner(n_startup_trials=1)
    for name, value in zip("abcd", (0.2, 0.4, 0.6, 0.8)):  # rising: none is pruned
        complete(pruner, name, {3: value})
    assert pruner.report("x", 3, 0.49) is True  # median 0.5
    assert pruner.report("y", 3, 0.51) is False


def test_median_compares_the_trials_best_value_so_far_not_its_latest():
    pruner = MedianPruner(n_startup_trials=1)
    complete(pruner, "a", {1: 0.5, 2: 0.8})
    assert pruner.report("b", 1, 0.9) is False
    assert pruner.report("b", 2, 0.1) is False  # latest 0.1 < 0.8, but its best 0.9 is not
    assert pruner.report("c", 1, 0.4) is True  # 0.4 < 0.5


def test_median_warm_up_steps_are_never_checked():
    pruner = MedianPruner(n_startup_trials=1, n_warmup_steps=3)
    complete(pruner, "a", {1: 0.9, 2: 0.9, 3: 0.9})
    assert [pruner.report("b", step, 0.0) for step in (1, 2, 3)] == [False, False, True]


def test_median_checks_the_first_report_of_each_interval_window_from_the_warm_up():
    # windows of interval_steps=3 from n_warmup_steps=2: [2, 5), [5, 8), ...
    pruner = MedianPruner(n_startup_trials=1, n_warmup_steps=2, interval_steps=3)
    complete(pruner, "a", {2: 0.5, 3: 0.9, 4: 0.9, 5: 0.9, 7: 0.99})
    assert pruner.report("b", 2, 0.6) is False  # checked: 0.6 >= 0.5
    assert pruner.report("b", 3, 0.6) is False  # below the median 0.9, but not the window's first report
    assert pruner.report("b", 4, 0.6) is False
    assert pruner.report("b", 5, 0.6) is True  # first report of [5, 8)
    # a check the trial skips over is made at its next report in the window
    assert pruner.report("c", 2, 0.6) is False
    assert pruner.report("c", 7, 0.6) is True  # first report of [5, 8), at 7
    assert pruner.report("d", 4, 0.0) is True  # a first report at 4 is the first of [2, 5)


def test_median_needs_n_min_trials_completed_values_at_the_step():
    pruner = MedianPruner(n_startup_trials=1, n_min_trials=2)
    complete(pruner, "a", {1: 0.9, 2: 0.9})
    complete(pruner, "b", {1: 0.9})
    assert pruner.report("c", 1, 0.1) is True  # two completed values at step 1
    assert pruner.report("d", 2, 0.1) is False  # one at step 2
    assert pruner.report("e", 3, 0.1) is False  # none at step 3


def test_median_learns_only_from_completed_trials():
    pruner = MedianPruner(n_startup_trials=1)
    assert pruner.report("a", 1, 0.9) is False
    pruner.finished("a", "failed")
    assert pruner.report("b", 1, 0.9) is False
    pruner.finished("b", "pruned")
    assert pruner.report("c", 1, 0.0) is False  # still no completed trial
    complete(pruner, "d", {1: 0.3})
    assert pruner.report("e", 1, 0.2) is True  # the median is 0.3, not 0.9


def test_median_nan_rules_follow_optuna():
    pruner = MedianPruner(n_startup_trials=1, n_min_trials=2)
    complete(pruner, "a", {1: 0.5, 2: float("nan")})
    assert pruner.report("c", 1, 0.4) is False  # one completed value at step 1 < n_min_trials
    complete(pruner, "b", {0: 0.7, 1: float("nan"), 2: float("nan")})
    # step 1: 0.5 and NaN count as two for n_min_trials; the median ignores the NaN: 0.5
    assert pruner.report("d", 1, 0.4) is True
    # step 2: only NaNs completed there -> no median, no stop
    assert pruner.report("e", 1, 0.6) is False
    assert pruner.report("e", 2, 0.0) is False
    # a trial whose every value is NaN stops at a checked step; one finite value saves it
    assert pruner.report("f", 1, float("nan")) is True
    assert pruner.report("g", 1, 0.7) is False
    assert pruner.report("g", 2, float("nan")) is False


def test_median_does_not_stop_a_nan_before_any_check():
    pruner = MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    complete(pruner, "a", {1: 0.5, 2: 0.5})
    assert pruner.report("b", 1, float("nan")) is False  # start-up: one completed trial of two
    complete(pruner, "c", {1: 0.5, 2: 0.5})
    assert pruner.report("d", 1, float("nan")) is False  # warm-up
    assert pruner.report("d", 2, float("nan")) is True


@pytest.mark.parametrize("broken", [float("inf"), float("-inf"), float("nan"), 10**400])
def test_a_non_finite_score_is_a_broken_measurement_like_nan(broken):
    pruner = MedianPruner(n_startup_trials=1)
    complete(pruner, "a", {1: 0.5})
    assert pruner.report("b", 1, broken) is True  # +inf does not win: it is not a score
    asha = ASHAPruner(min_resource=1, reduction_factor=3)
    assert asha.report("a", 1, 0.5) is False
    assert asha.report("b", 1, broken) is True
    assert asha.report("c", 1, 0.4) is True  # the broken value took no place: 0.5 is above


# ---------------------------------------------------------------------------- ASHA


def test_asha_keeps_the_top_1_over_eta_and_the_first_trials_only_while_best():
    pruner = ASHAPruner(min_resource=1, reduction_factor=3)
    values = (0.5, 0.4, 0.6, 0.55, 0.6, 0.58, 0.59, 0.61, 0.6)
    # rung 0 at step 1: n recorded so far (itself included), keep = max(n // 3, 1); a trial
    # goes on when fewer than `keep` recorded values are strictly above it
    #   n        1    2    3    4     5    6     7     8     9
    #   keep     1    1    1    1     1    2     2     2     3
    #   above    0    1    0    1     0    2     2     0     1   (ties are not above)
    outcomes = [pruner.report(f"t{i}", 1, value) for i, value in enumerate(values)]
    assert outcomes == [False, True, False, True, False, True, True, False, False]
    # rung 1 at step 3, rung 2 at step 9; no rung at 2, 4..8
    assert pruner.report("t0", 2, 0.0) is False
    assert pruner.report("t0", 3, 0.7) is False  # first at rung 1
    assert pruner.report("t2", 3, 0.65) is True  # n=2, keep 1, 0.7 above
    assert pruner.report("t4", 3, 0.7) is False  # a tie with the best goes on
    assert pruner.report("t4", 8, 0.0) is False
    assert pruner.report("t0", 9, 0.1) is False  # first at rung 2
    assert pruner.report("t4", 9, 0.05) is True


def test_asha_a_report_past_a_rung_counts_for_every_rung_it_passes():
    pruner = ASHAPruner(min_resource=1, reduction_factor=3)
    assert pruner.report("x", 4, 0.5) is False  # judged (alone) at step 1 and at step 3
    assert pruner.report("y", 1, 0.6) is False
    assert pruner.report("y", 3, 0.4) is True  # x's 0.5 was recorded at rung 1 (step 3)
    assert pruner.report("z", 1, 0.45) is True  # and at rung 0: 0.5 and 0.6 are above
    # one report judged at two rungs can pass the first and stop at the second
    assert pruner.report("w", 5, 0.55) is True  # rung 0: n=4, 0.6 above -> stop there already
    assert pruner.report("v", 1, 0.61) is False
    assert pruner.report("u", 3, 0.62) is False  # rung 0: best; rung 1: best of (0.5, 0.62)


def test_asha_min_early_stopping_rate_moves_the_first_rung():
    pruner = ASHAPruner(min_resource=1, reduction_factor=2, min_early_stopping_rate=1)
    # rungs at 2, 4, 8
    assert pruner.report("a", 1, 0.9) is False
    assert pruner.report("a", 2, 0.9) is False
    assert pruner.report("b", 1, 0.0) is False  # no rung at step 1
    assert pruner.report("b", 2, 0.0) is True
    assert pruner.rung_step(0) == 2 and pruner.rung_step(2) == 8


@pytest.mark.parametrize("max_resource, stopped", [(0, True), (9, False), (10, True)])
def test_asha_max_resource_drops_rungs_at_or_above_it(max_resource: int, stopped: bool):
    pruner = ASHAPruner(min_resource=1, reduction_factor=3, max_resource=max_resource)
    for step in (1, 3, 9):
        assert pruner.report("a", step, 0.9) is False
    assert pruner.report("c", 1, 0.95) is False
    assert pruner.report("c", 3, 0.95) is False
    assert pruner.report("c", 9, 0.0) is stopped  # the rung at 9 exists only below max_resource


def test_asha_a_nan_at_a_rung_stops_and_takes_no_place():
    pruner = ASHAPruner(min_resource=1, reduction_factor=3)
    assert pruner.report("a", 1, 0.5) is False
    assert pruner.report("a", 2, float("nan")) is False  # not at a rung
    assert pruner.report("c", 1, 0.6) is False
    assert pruner.report("d", 1, 0.55) is True
    assert pruner.report("e", 1, float("nan")) is True
    assert pruner.report("f", 1, 0.55) is True  # n=4, keep 1
    assert pruner.report("g", 1, 0.58) is True  # n=5, keep 1 (n=6 and keep 2 had e's NaN counted)


# ---------------------------------------------------------------------------- shared conventions


@pytest.mark.parametrize("make", [lambda: MedianPruner(n_startup_trials=1), lambda: ASHAPruner(min_resource=1)])
def test_a_stop_is_sticky_until_finished_and_a_finished_key_starts_over(make):
    pruner = make()
    complete(pruner, "a", {1: 0.5})  # median: a completed trial; ASHA: 0.5 recorded at step 1
    assert pruner.report("b", 1, 0.4) is True
    assert pruner.report("b", 2, 0.99) is True  # told to stop: stays stopped
    pruner.finished("b", "pruned")
    assert pruner.report("b", 1, 0.7) is False  # a new attempt under the same key


def test_a_repeated_or_earlier_step_is_ignored():
    pruner = MedianPruner(n_startup_trials=1)
    assert pruner.report("a", 2, 0.5) is False
    assert pruner.report("a", 2, 0.9) is False  # repeated: the first value stays
    assert pruner.report("a", 1, 0.9) is False  # earlier: not recorded
    pruner.finished("a", "ok")
    assert pruner.report("b", 2, 0.6) is False  # median at step 2 is 0.5, not 0.9
    assert pruner.report("c", 1, 0.0) is False  # no completed value at step 1
    assert pruner.report("d", 2, 0.4) is True
    asha = ASHAPruner(min_resource=1, reduction_factor=3)
    assert asha.report("a", 1, 0.5) is False
    assert asha.report("b", 1, 0.6) is False
    assert asha.report("a", 1, 0.0) is False  # repeated: no second judgement at the rung
    assert asha.report("a", 0, 0.0) is False


def test_no_pruner_never_stops_and_every_pruner_checks_its_caller():
    pruner = NoPruner()
    assert not any(pruner.report("a", step, float("nan")) for step in range(50))
    for each in (NoPruner(), MedianPruner(), ASHAPruner()):
        for bad_step in (-1, 1.0, True, "3", None):
            with pytest.raises(ValueError, match="step must be an int >= 0"):
                each.report("a", bad_step, 0.5)
        with pytest.raises(ValueError, match="status must be one of"):
            each.finished("a", "complete")


Plans = Dict[str, Tuple[List[Tuple[int, float]], str]]


def random_sequence(seed: int, n_trials: int = 16) -> Tuple[random.Random, Plans]:
    """Trials' reports, (step, value) each, with increasing and sometimes skipping steps, values
    on a 0.1 grid (ties) and NaNs, and how each ends if not stopped ("ok" or "failed"); plus the
    generator that `drive` interleaves them with."""
    rng = random.Random(seed)
    plans = {}
    for index in range(n_trials):
        step = rng.randint(0, 2)
        plan = []
        for _ in range(rng.randint(1, 12)):
            value = float("nan") if rng.random() < 0.07 else round(rng.random(), 1)
            plan.append((step, value))
            step += rng.randint(1, 3)
        plans[f"t{index}"] = (plan, "failed" if rng.random() < 0.15 else "ok")
    return rng, plans


def drive(pruner, rng: random.Random, plans: Plans, slots: int = 4, optuna_study=None) -> List[bool]:
    """Run `plans` through `pruner`, up to `slots` trials at a time, the next report drawn from a
    random running trial (through an Optuna study too when given, asserting the same decision at
    every report); return the decisions."""
    pending = sorted(plans, key=lambda name: int(name[1:]))
    running: Dict[str, list] = {}
    decisions: List[bool] = []
    while pending or running:
        while pending and len(running) < slots:
            name = pending.pop(0)
            running[name] = [0, optuna_study.ask() if optuna_study is not None else None]
        name = rng.choice(sorted(running))
        plan, status = plans[name]
        position, theirs = running[name]
        step, value = plan[position]
        ours = pruner.report(name, step, value)
        decisions.append(ours)
        if theirs is not None:
            theirs.report(value, step)
            expected = theirs.should_prune()
            assert ours == expected, f"{name} step {step} value {value}: ours {ours}, Optuna {expected}"
        running[name][0] += 1
        if ours or running[name][0] == len(plan):
            ended = "pruned" if ours else status
            pruner.finished(name, ended)
            del running[name]
            if theirs is not None:
                from optuna.trial import TrialState

                if ended == "ok":
                    optuna_study.tell(theirs, 0.5)
                else:
                    optuna_study.tell(theirs, state=TrialState.PRUNED if ended == "pruned" else TrialState.FAIL)
    return decisions


def random_pruner(name: str, seed: int) -> Dict[str, int]:
    rng = random.Random(seed * 7919)
    if name == "median":
        options = {"n_startup_trials": rng.choice([0, 1, 2, 3]), "n_warmup_steps": rng.choice([0, 2, 4]),
                   "interval_steps": rng.choice([1, 2, 3]), "n_min_trials": rng.choice([1, 2])}
    else:
        options = {"min_resource": rng.choice([1, 2]), "reduction_factor": rng.choice([2, 3, 4]),
                   "min_early_stopping_rate": rng.choice([0, 1])}
    return options


@pytest.mark.parametrize("name", ["median", "asha"])
def test_decisions_are_a_function_of_the_call_sequence_alone(name: str):
    for seed in range(10):
        runs = []
        for _ in range(2):
            rng, plans = random_sequence(seed)
            runs.append(drive(make_pruner(name, random_pruner(name, seed)), rng, plans))
        assert runs[0] == runs[1]


def test_decisions_do_not_depend_on_the_process_hash_seed():
    """Trial keys are hashed; a rule that iterated a set or dict of them in hash order would
    decide differently after a resume in a new process."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])\n"
        "from test_pruners import drive, random_sequence, random_pruner\n"
        "from autofinetune.pruners import make_pruner\n"
        "out = []\n"
        "for name in ('median', 'asha'):\n"
        "    for seed in range(6):\n"
        "        rng, plans = random_sequence(seed)\n"
        "        out.append(''.join('1' if d else '0' for d in drive(make_pruner(name, random_pruner(name, seed)), rng, plans)))\n"
        "print(' '.join(out))\n"
    )
    outputs = set()
    for hash_seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", script, REPO, os.path.join(REPO, "tests")],
                              capture_output=True, text=True, env=env, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert "1" in outputs.pop()


# ---------------------------------------------------------------------------- agreement with Optuna


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("name", ["median", "asha"])
def test_same_decisions_as_optuna(name: str, seed: int):
    """Optuna's MedianPruner / SuccessiveHalvingPruner (maximize, in-memory study) and ours on
    the same interleaved reports. Intended differences are kept out of these sequences and
    listed in docs/pruning.md: steps only increase per trial, scores are finite or NaN, and
    ASHA's min_resource is given (Optuna's 'auto' guesses it from the first completed trial)."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    options = random_pruner(name, seed)
    if name == "median":
        theirs = optuna.pruners.MedianPruner(options["n_startup_trials"], options["n_warmup_steps"],
                                             options["interval_steps"], n_min_trials=options["n_min_trials"])
    else:
        theirs = optuna.pruners.SuccessiveHalvingPruner(**options)
    study = optuna.create_study(direction="maximize", pruner=theirs)
    rng, plans = random_sequence(seed, n_trials=24)
    decisions = drive(make_pruner(name, options), rng, plans, optuna_study=study)
    assert len(decisions) > 24


def test_the_agreement_sequences_exercise_both_decisions():
    """Guard for the agreement test: over its seeds, both rules stop trials and let others
    finish, so agreeing is not agreeing on 'never'."""
    for name in ("median", "asha"):
        stops = total = 0
        for seed in range(40):
            rng, plans = random_sequence(seed, n_trials=24)
            decisions = drive(make_pruner(name, random_pruner(name, seed)), rng, plans)
            stops += sum(decisions)
            total += len(decisions)
        assert 0.05 < stops / total < 0.5, (name, stops, total)


# ---------------------------------------------------------------------------- options


def test_every_pruner_has_options_with_defaults_in_range():
    assert PRUNER_NAMES == ("none", "median", "asha")
    assert pruner_options("none") == ()
    for name in PRUNER_NAMES:
        for spec in pruner_options(name):
            assert spec.kind is int and spec.contains(spec.default) and spec.help
    assert check_pruner_options("median", {}) == {"n_startup_trials": 5, "n_warmup_steps": 0,
                                                  "interval_steps": 1, "n_min_trials": 1}
    assert check_pruner_options("asha", {}) == {"min_resource": 2, "reduction_factor": 2,
                                                "min_early_stopping_rate": 0, "max_resource": 0}


def test_option_values_parse_from_strings_and_numbers():
    values = check_pruner_options("asha", {"min_resource": " 2 ", "reduction_factor": 4,
                                           "min_early_stopping_rate": "1e0", "max_resource": "30.0"})
    assert values == {"min_resource": 2, "reduction_factor": 4, "min_early_stopping_rate": 1, "max_resource": 30}
    assert all(type(v) is int for v in values.values())
    pruner = make_pruner("asha", values)
    assert isinstance(pruner, ASHAPruner) and pruner.name == "asha"
    assert (pruner.min_resource, pruner.reduction_factor, pruner.min_early_stopping_rate,
            pruner.max_resource) == (2, 4, 1, 30)
    median = make_pruner("median", {"n_warmup_steps": "3"})
    assert isinstance(median, MedianPruner) and (median.n_startup_trials, median.n_warmup_steps) == (5, 3)
    assert isinstance(make_pruner("none", {}), NoPruner)


@pytest.mark.parametrize("name, raw, words", [
    ("hyperband", {}, "--pruner=hyperband is not a pruner; choose one of: none, median, asha"),
    ("none", {"n_warmup_steps": "1"},
     "--pruner_option n_warmup_steps=...: --pruner=none takes no options; drop the --pruner_option"),
    ("median", {"warmup": "1"},
     "--pruner_option warmup=...: the median pruner (--pruner=median) has no option 'warmup'; valid options: "
     "n_startup_trials, n_warmup_steps, interval_steps, n_min_trials"),
    ("median", {"n_warmup_steps": "-1"},
     "--pruner_option n_warmup_steps=-1 is out of range: the median pruner's n_warmup_steps"),
    ("median", {"interval_steps": "0"}, "must be an integer >= 1; fix: e.g. --pruner_option interval_steps=1"),
    ("asha", {"reduction_factor": "1"}, "fix: e.g. --pruner_option reduction_factor=2 (the default)"),
    ("asha", {"reduction_factor": "1"}, "--pruner_option reduction_factor=1 is out of range"),
    ("asha", {"reduction_factor": "2.5"}, "--pruner_option reduction_factor=2.5: not a whole number"),
    ("asha", {"min_resource": "one"}, "--pruner_option min_resource=one: not a whole number"),
    ("asha", {"min_resource": "nan"}, "--pruner_option min_resource=nan: not a whole number"),
    ("asha", {"min_resource": "inf"}, "--pruner_option min_resource=inf: not a whole number"),
    ("asha", {"min_resource": True}, "--pruner_option min_resource=True: not a number"),
    ("asha", {"min_early_stopping_rate": "61"}, "min_early_stopping_rate (s: the first rung is at min_resource*eta^s) "
     "must be an integer in [0, 60]"),
    ("asha", {"min_resource": "2", "reduction_factor": "3", "max_resource": "6", "min_early_stopping_rate": "1"},
     "--pruner_option max_resource=6: the first rung is at step 6"),
])
def test_bad_options_are_one_line_naming_the_option_and_the_fix(name, raw, words):
    with pytest.raises(ConfigError) as caught:
        check_pruner_options(name, raw)
    message = str(caught.value)
    assert words in message and "\n" not in message
    with pytest.raises(ConfigError):
        make_pruner(name, raw)


def test_a_pruner_built_directly_checks_its_options_too():
    with pytest.raises(ConfigError, match="reduction_factor=1 is out of range"):
        ASHAPruner(reduction_factor=1)  # would judge a trial at one rung forever
    with pytest.raises(ConfigError, match="interval_steps=0 is out of range"):
        MedianPruner(interval_steps=0)


def test_a_numpy_integer_is_a_step():
    numpy = pytest.importorskip("numpy")
    pruner = ASHAPruner(min_resource=1)
    assert pruner.report("a", numpy.int64(1), 0.5) is False
    assert pruner.report("b", numpy.int64(1), numpy.float32(0.25)) is True
