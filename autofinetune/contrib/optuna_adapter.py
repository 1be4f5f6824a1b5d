"""Optuna's samplers as autofinetune strategies, on Optuna's ask-and-tell interface (docs/optuna.md).

Each strategy drives one in-memory Optuna study whose parameters are the unit box: one
``FloatDistribution(0, 1)`` per dimension, so Optuna sees exactly the points the tuner decodes,
and the search space's types, log scales and choices stay autofinetune's (space.py).

The Strategy contract (strategies/base.py) says a strategy is rebuilt on ``--resume`` by replay:
the same seed, then the same tells in the same order, and never an ask. An Optuna sampler's
state lives in its study, which changes on every ``study.ask`` (a trial is created, the
sampler's generator advances, CMA-ES stores its generation). So this adapter asks Optuna only
inside ``__init__``, ``tell`` and ``tell_particle`` -- every candidate that is pending is
already a RUNNING Optuna trial -- and ``ask`` / ``ask_particle`` merely return those points.
Replay then repeats the very same sequence of study calls. Whether a sampler is a deterministic
function of that sequence is the sampler's business; tests/test_optuna_adapter.py checks it for
each one.

Optuna is imported when a strategy is built, never when this module is: the registry imports
this module only for a search that chose an Optuna sampler, and a missing dependency becomes
one ConfigError line naming the install command before any trial runs.
"""
from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from ..strategies.base import Strategy, finite_or_none

INSTALL = 'pip install "autofinetune[optuna]"'


def _import_dependencies(strategy: str, modules: Sequence[Tuple[str, str]]) -> Any:
    """Import `optuna` and what the sampler imports lazily; ConfigError naming the fix.

    Optuna imports cmaes, torch and scipy only when a sampler first needs them, which for the
    tuner is after round 0 has run: importing them here moves that failure before any trial.
    """
    for module, fix in (("optuna", INSTALL), *modules):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(
                f"--tuning_strategy={strategy}: needs the Python module {module!r}, which cannot be imported here "
                f"({type(error).__name__}: {error}); fix: {fix}"
            ) from None
    import optuna

    return optuna


@contextlib.contextmanager
def _quiet(optuna: Any, numpy_errors: Mapping[str, str]) -> Iterator[None]:
    """Optuna's INFO lines ("A new study created in memory ...") would interleave with the
    tuner's own output; its warnings stay visible. Restored afterwards, so a program that uses
    Optuna itself keeps its verbosity."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(before, optuna.logging.WARNING))
    try:
        with warnings.catch_warnings(), np.errstate(**numpy_errors):
            # The user picked the sampler by name; being told per search that Optuna calls an
            # argument experimental is noise they cannot act on.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)


class OptunaStrategy(Strategy):
    """An in-memory Optuna study behind the Strategy contract; subclasses choose the sampler.

    The first candidate is the search space's init point (``study.enqueue_trial``): the
    user's ``init_value`` in hparam.yaml is evaluated, as PSHE2 and HAZero start from it.
    A failed trial (None, NaN, inf) is told as ``TrialState.FAIL``: Optuna's samplers leave
    failed trials out of their models, which ranks a failure below every success without
    inventing a loss for it (docs/optuna.md, "Failures").
    """

    #: The registry name, for error messages.
    registry_name: ClassVar[str] = ""
    #: (module, fix) pairs the sampler imports lazily, checked when the strategy is built.
    dependencies: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    #: numpy floating-point errors the sampler is known to raise harmlessly (np.errstate keywords).
    numpy_errors: ClassVar[Dict[str, str]] = {}

    def __init__(self, dim: int, init_point: np.ndarray, popsize: int, seed: int, **options: float) -> None:
        super().__init__(dim, init_point, popsize, seed)
        self._optuna = _import_dependencies(self.registry_name, self.dependencies)
        from optuna.distributions import FloatDistribution

        self._names = [f"x{i}" for i in range(self.dim)]
        self._distributions = {name: FloatDistribution(0.0, 1.0) for name in self._names}
        with _quiet(self._optuna, self.numpy_errors):
            # RandomState seeds must be below 2**32; --seed may be up to 2**63 - 1.
            sampler = self._make_sampler(self._optuna, self.seed % 2**32, **options)
            self._study = self._optuna.create_study(direction="minimize", sampler=sampler)
            self._study.enqueue_trial({name: float(v) for name, v in zip(self._names, self.init_point)})
            self._trials: List[Any] = [self._new_trial() for _ in range(self.popsize)]
        self._points = [self._point_of(trial) for trial in self._trials]

    def _make_sampler(self, optuna: Any, seed: int, **options: float) -> Any:
        """The sampler, built from the seed the replay contract needs and the registry's options.

        Called with Optuna imported and its logging quieted, so a subclass names only the
        sampler and its arguments.
        """
        raise NotImplementedError

    # -- the contract ----------------------------------------------------------------------

    def ask(self) -> np.ndarray:
        return np.stack(self._points).copy()

    def tell(self, losses: Sequence[Optional[float]]) -> None:
        checked = self._checked_losses(losses)
        with _quiet(self._optuna, self.numpy_errors):
            for trial, loss in zip(self._trials, checked):
                self._finish(trial, loss)
            self._trials = [self._new_trial() for _ in range(self.popsize)]
        self._points = [self._point_of(trial) for trial in self._trials]

    def ask_particle(self, index: int) -> np.ndarray:
        return self._points[self._checked_index(index)].copy()

    def tell_particle(self, index: int, loss: Optional[float]) -> None:
        i = self._checked_index(index)
        with _quiet(self._optuna, self.numpy_errors):
            self._finish(self._trials[i], finite_or_none(loss))
            self._trials[i] = self._new_trial()
        self._points[i] = self._point_of(self._trials[i])

    # -- Optuna ----------------------------------------------------------------------------

    def _new_trial(self) -> Any:
        """A RUNNING trial with every parameter sampled now (``study.ask`` with the
        distributions fixed), so the sampler's draws happen in the order replay repeats."""
        return self._study.ask(self._distributions)

    def _finish(self, trial: Any, loss: Optional[float]) -> None:
        if loss is None:
            self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, loss)

    def _point_of(self, trial: Any) -> np.ndarray:
        point = np.array([trial.params[name] for name in self._names], dtype=np.float64)
        return np.clip(point, 0.0, 1.0)


class OptunaTPE(OptunaStrategy):
    """Optuna's TPESampler, multivariate, with the constant liar.

    Multivariate TPE models the hyperparameters jointly (Optuna's own default from 5.0 for one
    objective); the constant liar makes the candidates of one round, which run at the same time,
    keep apart instead of piling onto one promising spot (Optuna's default from 5.0). Both are
    passed explicitly so an Optuna 3 or 4 install searches the same way.
    """

    registry_name = "optuna.tpe"

    def __init__(self, dim: int, init_point: np.ndarray, popsize: int, seed: int, n_startup_trials: float = 10.0) -> None:
        super().__init__(dim, init_point, popsize, seed, n_startup_trials=n_startup_trials)

    def _make_sampler(self, optuna: Any, seed: int, **options: float) -> Any:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(options["n_startup_trials"]),
                                          multivariate=True, constant_liar=True)


class OptunaCmaEs(OptunaStrategy):
    """Optuna's CmaEsSampler with one CMA-ES generation per round.

    CMA-ES's population is the tuner's popsize, so a round is a generation as with HAZero
    (a population of two for ``--popsize=1``: CMA-ES needs two recombination weights). It
    starts at the centre of the box with step 1/6 of its width, Optuna's defaults (its ``x0``
    and ``sigma0`` are deprecated since Optuna 4.9); the init point is the first trial.
    """

    registry_name = "optuna.cmaes"
    dependencies = (("cmaes", INSTALL),)
    # With a population of 2 or 3 (one parent), cmaes's rank-mu rate is 0 and its eq. 50 and 52
    # divide by it inside a min() that an infinity does not win: a warning users cannot act on.
    numpy_errors = {"divide": "ignore"}

    def __init__(self, dim: int, init_point: np.ndarray, popsize: int, seed: int) -> None:
        if int(dim) < 2:
            raise ValueError(f"CMA-ES needs two or more hyperparameters, got dim={dim}; use optuna.tpe")
        super().__init__(dim, init_point, popsize, seed)

    def _make_sampler(self, optuna: Any, seed: int, **options: float) -> Any:
        return optuna.samplers.CmaEsSampler(seed=seed, popsize=max(2, self.popsize))


class OptunaGP(OptunaStrategy):
    """Optuna's GPSampler: Gaussian-process Bayesian optimisation (Optuna 3.6 and later).

    It needs torch and scipy besides Optuna, which ``autofinetune[optuna]`` does not pull in
    (torch alone is hundreds of megabytes). Recent Optuna (5.x) accounts for the other running
    candidates of a round (q-batch log EI); older versions may propose near-duplicates.
    """

    registry_name = "optuna.gp"
    dependencies = (("torch", f'{INSTALL} torch scipy'), ("scipy", f'{INSTALL} torch scipy'))

    def __init__(self, dim: int, init_point: np.ndarray, popsize: int, seed: int, n_startup_trials: float = 10.0) -> None:
        super().__init__(dim, init_point, popsize, seed, n_startup_trials=n_startup_trials)

    def _make_sampler(self, optuna: Any, seed: int, **options: float) -> Any:
        if not hasattr(optuna.samplers, "GPSampler"):
            raise ConfigError(f"--tuning_strategy={self.registry_name}: Optuna {optuna.__version__} has no GPSampler (added in 3.6); "
                              f"fix: pip install -U \"optuna>=3.6\"")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=int(options["n_startup_trials"]))
