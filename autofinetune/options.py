"""The one table of the search's options.

The CLI's argparse parser, `tune()`'s keyword checks, the configuration journaled with every
start and resume, and the rules a `--resume` enforces are all built from `OPTIONS`: adding an
option is one entry here (plus the code that uses it). See docs/architecture.md, "Options".
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .errors import ConfigError
from .pruners import PRUNER_NAMES, pruner_options

#: What a resume does with an option: "match" refuses a different value, "free" takes the new one.
MATCH, FREE = "match", "free"

Check = Callable[[Any], Optional[str]]


@dataclass(frozen=True)
class Option:
    """One option of a search, as the CLI spells it, the API names it and the journal keeps it."""

    name: str  # tune()'s keyword, the config attribute
    flag: str  # the CLI spelling
    kind: type  # int, float, str, bool (a flag), dict (repeatable key=value)
    default: Any
    help: str
    check: Optional[Check] = None
    resume: str = FREE
    journal_key: Optional[str] = None  # the key in the journaled config (None: not journaled)
    legacy: Any = None  # what a journal that predates the option implies
    choices: Tuple[str, ...] = ()
    metavar: Optional[str] = None

    def shown(self, value: Any) -> str:
        text = ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        return f"{self.flag}={text[:80]}"

    def coerce(self, value: Any) -> Any:
        """An API value checked for its type (the CLI's argparse does this for strings)."""
        if value is None:
            return None
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{self.shown(value)}: must be True or False")
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                try:
                    if isinstance(value, str):
                        return int(value)
                except ValueError:
                    pass
                raise ConfigError(f"{self.shown(value)}: must be a whole number")
            return int(value)
        if self.kind is float:
            if isinstance(value, bool):
                raise ConfigError(f"{self.shown(value)}: must be a number")
            try:
                return float(value)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"{self.shown(value)}: must be a number") from None
        if self.kind is dict:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{self.shown(value)}: must be a mapping of name to value")
            return {str(k): v for k, v in value.items()}
        return str(value)

    def validate(self, value: Any) -> Any:
        value = self.coerce(value)
        if value is None:
            return None
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.flag}={str(value)[:60]!r}: unknown {self.flag[2:].replace('_', ' ')}; choose one of {', '.join(self.choices)}")
        problem = self.check(value) if self.check else None
        if problem:
            raise ConfigError(f"{self.shown(value)}: {problem}")
        return value


def between(low: int, high: int, why: str = "") -> Check:
    """Whole numbers in [low, high]. Every count has a ceiling: a billion candidates or slots
    is a typo, and would end in a MemoryError instead of one line."""
    return lambda value: None if low <= value <= high else f"must be at least {low}" if value < low else f"must be at most {high}{why}"


#: The longest wait a timer can take (threading and select refuse more), about 31 years.
MAX_SECONDS = 1e9


def positive_seconds(value: float) -> Optional[str]:
    return None if math.isfinite(value) and 0 < value <= MAX_SECONDS else f"must be a positive number of seconds, at most {MAX_SECONDS:g}"


def non_negative_seconds(value: float) -> Optional[str]:
    return None if math.isfinite(value) and 0 <= value <= MAX_SECONDS else f"must be 0 or more seconds, at most {MAX_SECONDS:g}"


#: The Dask comm schemes a tuner can reach without extra packages (ucx needs ucx-py).
DASK_SCHEMES = ("tcp", "tls", "ws", "wss")


def dask_address(value: str) -> Optional[str]:
    """`scheme://host:port`, checked before anything connects: a wrong scheme would fail
    inside distributed with a traceback, or after a minute of retries."""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in DASK_SCHEMES:
        return f"expected {'|'.join(DASK_SCHEMES)}://HOST:PORT, e.g. tcp://10.0.0.5:8786"
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        return f"expected {scheme}://HOST:PORT with a port from 1 to 65535, e.g. {scheme}://10.0.0.5:8786"
    return None


def known_evaluator(value: str) -> Optional[str]:
    from .evaluators import EVALUATORS

    return None if value in EVALUATORS else f"unknown evaluator; choose one of {', '.join(sorted(EVALUATORS))}"


def known_backend(value: str) -> Optional[str]:
    from .backends import BACKENDS

    return None if value in BACKENDS else f"unknown backend; choose one of {', '.join(BACKENDS)}"


def known_pruner(value: str) -> Optional[str]:
    return None if value in PRUNER_NAMES else f"unknown pruner; choose one of {', '.join(PRUNER_NAMES)}"


OPTIONS: Tuple[Option, ...] = (
    Option("gpu", "--gpu", str, None, "GPU ids, comma separated; 0,0 = two trials on GPU 0 (default: all GPUs pynvml finds, else CPU slots)"),
    Option("popsize", "--popsize", int, 5, "candidates per round (default 5)", between(1, 10_000, "; for a larger budget, add rounds"), MATCH, "popsize"),
    Option("rounds", "--round", int, 10, "rounds (default 10; may grow on --resume)", between(1, 1_000_000), FREE, "rounds"),
    Option("output_dir", "--output_dir", str, None, "where results go (default output_YYYYmmddHHMMSS)"),
    Option("evaluator", "--evaluator", str, "populationbased",
           "populationbased (default: resume from the better models of the last round) | fulltrail (train every candidate from scratch)",
           known_evaluator, MATCH, "evaluator"),
    Option("tuning_strategy", "--tuning_strategy", str, "pshe2", "pshe2 (default) | hazero | optuna.tpe, optuna.cmaes, optuna.gp (pip install autofinetune[optuna]) | an installed plugin's name",
           None, MATCH, "strategy"),
    Option("strategy_options", "--strategy_option", dict, None,
           "a strategy constant, NAME=VALUE, repeatable (pshe2: alpha, epsilon, kick, first_round, explore; hazero: sigma0, "
           "boundary, first_round, elitism, evaluate_mean, mirrors; optuna.tpe/optuna.gp: n_startup_trials; see docs/algorithms.md)",
           None, MATCH, "strategy_options", legacy={}, metavar="NAME=VALUE"),
    Option("workers", "--workers", int, None, "CPU slots when there is no GPU (default: one per core)", between(1, 4096)),
    Option("seed", "--seed", int, None, "makes the proposed candidates repeatable (default: drawn and journaled)", between(0, 2**63 - 1),
           journal_key="seed"),
    Option("timeout", "--timeout", float, None, "seconds a trial may run before it is stopped (status timeout)", positive_seconds, FREE, "timeout"),
    Option("max_retries", "--max_retries", int, 0, "re-run a failed or timed-out trial up to N more times (default 0)", between(0, 1000), FREE, "max_retries"),
    Option("kill_grace", "--kill_grace", float, 5.0, "seconds between SIGTERM and SIGKILL when a trial is stopped (default 5)",
           non_negative_seconds, FREE, "kill_grace"),
    Option("resume_epochs", "--resume_epochs", int, 1, "population-based: the --epochs given to a trial resumed from a parent (default 1)",
           between(1, 1_000_000), MATCH, "resume_epochs", legacy=1),
    Option("threads_per_trial", "--threads_per_trial", int, None,
           "OMP/MKL/OpenBLAS threads each trial may use (default: the cores divided among the slots; a value set in the "
           "environment is kept)", between(1, 4096), FREE, "threads_per_trial"),
    Option("skip_preflight", "--skip_preflight", bool, False,
           "do not run `train.py --help` before the search to check that it takes every option the search passes"),
    Option("resume", "--resume", bool, False, "continue the interrupted search in --output_dir (same command otherwise)"),
    Option("backend", "--backend", str, "local", "local (default: child processes here) | dask (tasks on a Dask cluster)",
           known_backend, FREE, "backend"),
    Option("scheduler_address", "--scheduler_address", str, None, "with --backend=dask: the Dask scheduler, e.g. tcp://10.0.0.5:8786",
           dask_address, FREE, "scheduler_address"),
    Option("asynchronous", "--async", bool, False,
           "a freed slot starts the candidate's next trial at once instead of waiting for the round's slowest (pshe2 only; not bit-repeatable)",
           None, MATCH, "asynchronous", legacy=False),
    Option("pruner", "--pruner", str, "none",
           "stop trials whose intermediate results are hopeless: none (default) | median | asha (see docs/pruning.md)",
           known_pruner, MATCH, "pruner", legacy="none"),
    Option("pruner_options", "--pruner_option", dict, None,
           "a pruner setting, NAME=VALUE, repeatable (" + "; ".join(
               f"{name}: " + ", ".join(o.name for o in pruner_options(name)) for name in PRUNER_NAMES if pruner_options(name))
           + "; see docs/pruning.md)",
           None, MATCH, "pruner_options", legacy={}, metavar="NAME=VALUE"),
    Option("prune_grace", "--prune_grace", float, 30.0,
           "seconds a pruned trial has, once asked to stop, before SIGTERM (default 30)", non_negative_seconds, FREE, "prune_grace"),
)
BY_NAME: Dict[str, Option] = {option.name: option for option in OPTIONS}


def defaults() -> Dict[str, Any]:
    return {option.name: option.default for option in OPTIONS}


def validate(values: Mapping[str, Any]) -> Dict[str, Any]:
    """Every option checked on its own (type, range, choices); unknown names refused."""
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; the options are: {', '.join(BY_NAME)}")
    checked = defaults()
    for name, value in values.items():
        checked[name] = BY_NAME[name].validate(value)
    if checked["strategy_options"] is None:
        checked["strategy_options"] = {}
    if checked["pruner_options"] is None:
        checked["pruner_options"] = {}
    if checked["pruner_options"] and checked["pruner"] == "none":
        raise ConfigError(f"--pruner_option {next(iter(checked['pruner_options']))}=...: needs a pruner; "
                          f"fix: add --pruner=median or --pruner=asha, or drop the option")
    if checked["scheduler_address"] and checked["backend"] != "dask":
        raise ConfigError(f"--scheduler_address={checked['scheduler_address']} needs --backend=dask; fix: add --backend=dask or drop the address")
    return checked


def journaled(values: Mapping[str, Any]) -> Dict[str, Any]:
    """The options as the journal's config keeps them."""
    return {option.journal_key: values.get(option.name) for option in OPTIONS if option.journal_key}


def resume_conflicts(old: Mapping[str, Any], new: Mapping[str, Any]) -> Optional[str]:
    """The first option a resume may not change, as one line; None when they agree."""
    for option in OPTIONS:
        if option.resume != MATCH or not option.journal_key:
            continue
        then = old.get(option.journal_key, option.legacy)
        now = new.get(option.name)
        if then != now:
            return (f"--resume: {option.flag} differs from the interrupted search ({then!r} then, {now!r} now); "
                    f"fix: resume with the original settings, or start a new search in another --output_dir")
    return None


# -- the CLI -------------------------------------------------------------------------------------
class _KeyValue(argparse.Action):
    """`--strategy_option alpha=0.3` (or `--pruner_option`), repeatable, into a dict."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Optional[str] = None) -> None:
        text = str(values)
        if "=" not in text or not text.split("=", 1)[0]:
            parser.error(f"{option_string} {text[:60]!r}: expected NAME=VALUE, e.g. {option_string} alpha=0.3")
        name, value = text.split("=", 1)
        found = dict(getattr(namespace, self.dest) or {})
        found[name] = value
        setattr(namespace, self.dest, found)


def add_to_parser(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        if option.kind is bool:
            parser.add_argument(option.flag, dest=option.name, action="store_true", help=option.help)
        elif option.kind is dict:
            parser.add_argument(option.flag, dest=option.name, action=_KeyValue, default=None, metavar=option.metavar, help=option.help)
        else:
            parser.add_argument(option.flag, dest=option.name, type=option.kind, default=option.default,
                                metavar=option.metavar, help=option.help)


def from_namespace(namespace: argparse.Namespace) -> Dict[str, Any]:
    return {option.name: getattr(namespace, option.name) for option in OPTIONS}


def api_doc() -> str:
    """The option list for `tune()`'s docstring, from the same table."""
    lines = []
    for option in OPTIONS:
        lines.append(f"    {option.name} ({option.kind.__name__}, CLI {option.flag}): {option.help}")
    return "\n".join(lines)


__all__ = ["Option", "OPTIONS", "BY_NAME", "defaults", "validate", "journaled", "resume_conflicts", "add_to_parser",
           "from_namespace", "api_doc", "MATCH", "FREE"]



class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (with where to look), like every other error."""

    def error(self, message: str) -> "None":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")
