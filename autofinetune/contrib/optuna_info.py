"""What the registry knows about the Optuna samplers before importing anything (docs/optuna.md).

The entry points in pyproject.toml load these objects, so this module must stay light: the
registry loads it for every search and for ``--help``, and a PSHE2 search must not pay for
importing Optuna (a few hundred milliseconds) or torch (seconds).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..strategies.registry import OptionSpec, StrategyInfo


@dataclass(frozen=True)
class WholeNumberOption(OptionSpec):
    """An OptionSpec that accepts only whole numbers, refused by the registry's own check.

    The registry hands options over as floats; a trial count of 2.5 must be refused before the
    output directory exists, with the range the user reads saying why, not rounded silently.
    """

    def interval(self) -> str:
        return f"{super().interval()}, a whole number"

    def contains(self, value: float) -> bool:
        return super().contains(value) and float(value).is_integer()


def _startup_trials(default: int, what: str) -> WholeNumberOption:
    return WholeNumberOption("n_startup_trials", float(default), 0.0, 10000.0,
                             f"random trials before {what} takes over, Optuna's n_startup_trials")


TPE = StrategyInfo(
    name="optuna.tpe",
    target="autofinetune.contrib.optuna_adapter:OptunaTPE",
    display_name="Optuna TPE",
    min_dim=1,
    supports_async=True,
    options=(_startup_trials(10, "the TPE model"),),
)

CMAES = StrategyInfo(
    name="optuna.cmaes",
    target="autofinetune.contrib.optuna_adapter:OptunaCmaEs",
    display_name="Optuna CMA-ES",
    # Optuna's CmaEsSampler falls back to random sampling on one parameter, as CMA-ES needs a
    # covariance to adapt: refuse it up front, as for HAZero.
    min_dim=2,
    supports_async=True,
)

GP = StrategyInfo(
    name="optuna.gp",
    target="autofinetune.contrib.optuna_adapter:OptunaGP",
    display_name="Optuna GP",
    min_dim=1,
    supports_async=True,
    options=(_startup_trials(10, "the Gaussian process"),),
)
