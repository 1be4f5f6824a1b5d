"""Which strategies exist, what they accept, and how to build one -- without importing them.

Each strategy is described by a `StrategyInfo`: plain data naming its implementation as
"package.module:ClassName". The CLI validates a whole command line (name, dimension, popsize,
options, --async) against that data before any trial starts, so a PSHE2 search, a typo or
`--help` never pays for importing cma and scipy (about a second), and a broken plugin
implementation cannot break a search that does not use it.

Third-party strategies register an entry point in the group ``autofinetune.strategies`` whose
object is a `StrategyInfo`, defined in a module that imports nothing heavy (the
implementation module is only imported by `make_strategy`):

    [project.entry-points."autofinetune.strategies"]
    uniform = "autofinetune_uniform.info:INFO"

`autofinetune.testing.strategies.StrategyTestCase` checks a strategy against the contract.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

from ..errors import ConfigError

if TYPE_CHECKING:  # numpy and the implementations stay unimported until make_strategy
    import numpy as np

    from .base import Strategy

logger = logging.getLogger("autofinetune")

#: The entry-point group third-party strategies register under.
ENTRY_POINT_GROUP = "autofinetune.strategies"


#: What an option's value may be: a number, or one of a categorical option's words.
OptionValue = Union[float, str]


@dataclass(frozen=True)
class OptionSpec:
    """One option a strategy's constructor takes as a keyword argument.

    Numeric by default (a float in [low, high]); with `choices` it is categorical and its value
    is one of those words (build one with `OptionSpec.categorical`).

    `legacy` is the value searches ran with before the current defaults (issue 15): the
    previous release's default, or for an option that did not exist then, the behaviour it had
    without it. Resuming a journal of that release must behave as it did (`journal_defaults`,
    docs/algorithms.md, "Options added later"). None: the default has not changed.

    `added` is the generation of strategy options the option came with: 1 for those of the
    first release that journaled strategy options (issue 15), 2 for the next (PSHE2's `explore`),
    and so on. A journal that names every option of generation k but lacks a later one resumes
    with today's defaults for the former (their defaults have not changed since) and `legacy`
    for the latter (`journal_defaults`).
    """

    name: str
    default: OptionValue
    low: float
    high: float
    help: str
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: Tuple[str, ...] = ()
    legacy: Optional[OptionValue] = None
    added: int = 1

    @classmethod
    def categorical(cls, name: str, default: str, choices: Tuple[str, ...], help: str,
                    legacy: Optional[str] = None, added: int = 1) -> "OptionSpec":
        """An option whose value is one of the words `choices` (`--strategy_option name=word`)."""
        return cls(name, default, 0.0, 0.0, help, choices=tuple(choices), legacy=legacy, added=added)

    def interval(self) -> str:
        """The range as users read it, e.g. "(0, 1]", or the choices, e.g. "redraw|fold"."""
        if self.choices:
            return "|".join(self.choices)
        return f"{'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}{']' if self.high_inclusive else ')'}"

    def contains(self, value: Any) -> bool:
        if self.choices:
            return isinstance(value, str) and value in self.choices
        if isinstance(value, (bool, str)) or not isinstance(value, (int, float)):
            return False
        above = value >= self.low if self.low_inclusive else value > self.low
        below = value <= self.high if self.high_inclusive else value < self.high
        return math.isfinite(value) and above and below

    def parse(self, raw: Any, strategy: str) -> OptionValue:
        """`--strategy_option name=raw` as the constructor takes it; ConfigError, one line, if bad."""
        where = f"--strategy_option {self.name}={raw}"
        if self.choices:
            if not isinstance(raw, str) or raw not in self.choices:
                raise ConfigError(f"{where}: {strategy}'s {self.name} ({self.help}) must be one of "
                                  f"{', '.join(self.choices)}; e.g. --strategy_option {self.name}={self.default}")
            return raw
        must = f"{strategy}'s {self.name} ({self.help}) must be a number in {self.interval()}"
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: not a number; {must}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: not a number; {must}") from None
        if not self.contains(value):
            raise ConfigError(f"{where} is out of range: {must}")
        return value


@dataclass(frozen=True)
class StrategyInfo:
    """What the tuner knows about a strategy before importing it."""

    name: str
    #: "package.module:ClassName", imported by `make_strategy` only.
    target: str
    display_name: str
    min_dim: int = 1
    #: Whether the class implements ask_particle/tell_particle (`--async`).
    supports_async: bool = False
    options: Tuple[OptionSpec, ...] = ()
    builtin: bool = True


BUILTINS: Tuple[StrategyInfo, ...] = (
    StrategyInfo(
        name="pshe2",
        target="autofinetune.strategies.pshe2:PSHE2",
        display_name="PSHE2",
        min_dim=1,
        supports_async=True,
        options=(
            OptionSpec("alpha", 0.9, 0.0, 1.0, "step size and damping rate of the swarm",
                       low_inclusive=False, high_inclusive=True, legacy=0.5),
            OptionSpec("epsilon", 0.2, 0.0, 1.0, "random kick, as a fraction of the distance to the box edge",
                       low_inclusive=True, high_inclusive=True),
            OptionSpec.categorical("kick", "decaying", ("decaying", "constant"),
                                   "the kick shrinks as epsilon / sqrt(t), or stays epsilon as in the original",
                                   legacy="constant"),
            OptionSpec.categorical("first_round", "spread", ("spread", "centred"),
                                   "the init point plus a Latin hypercube over the box, or draws on either side of the init point as the original",
                                   legacy="centred"),
            OptionSpec("explore", 1.0, 0.0, 1000.0,
                       "rounds after the first in which every particle but the best restarts at an unexplored point (a whole number); 0 as the original",
                       legacy=0.0, added=2),
        ),
    ),
    StrategyInfo(
        name="hazero",
        target="autofinetune.strategies.hazero:HAZero",
        display_name="HAZero",
        min_dim=2,
        supports_async=False,
        options=(
            OptionSpec("sigma0", 0.15, 0.0, 1.0, "initial CMA-ES step size in the unit box; the original's is 0.1 (0.2 in its [-1, 1])",
                       low_inclusive=False, high_inclusive=True, legacy=0.1),
            OptionSpec.categorical("boundary", "redraw", ("redraw", "fold"),
                                   "a candidate outside the box is redrawn, or folded back in as the original did",
                                   legacy="fold"),
            OptionSpec.categorical("first_round", "centred", ("centred", "spread"),
                                   "CMA-ES's first generation around the init point as the original, or the init point plus a Latin hypercube over the box",
                                   legacy="centred"),
            OptionSpec.categorical("elitism", "on", ("on", "off"),
                                   "the best point so far joins CMA-ES's recombination when a generation has nothing better; off as the original",
                                   legacy="off"),
            OptionSpec.categorical("evaluate_mean", "on", ("on", "off"),
                                   "every generation after the first also evaluates CMA-ES's mean; off as the original",
                                   legacy="off"),
            OptionSpec.categorical("mirrors", "on", ("on", "off"),
                                   "with boundary=redraw, the worst candidates are mirrored around CMA-ES's new mean into the next generation (cma's selective mirrors, at every generation size), or not as before this option",
                                   legacy="off", added=3),
        ),
    ),
)

_NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}


def _problem_with(info: Any) -> str:
    """Why a plugin's object is not a usable StrategyInfo ('' if it is)."""
    if not isinstance(info, StrategyInfo):
        return f"it is a {type(info).__name__}, not an autofinetune StrategyInfo"
    if ":" not in info.target:
        return f"its target {info.target!r} is not 'package.module:ClassName'"
    if info.min_dim < 1:
        return f"its min_dim {info.min_dim} is below 1"
    for option in info.options:
        if not isinstance(option, OptionSpec) or not option.contains(option.default):
            return f"its option {getattr(option, 'name', option)!r} has a default outside its range"
        if option.legacy is not None and not option.contains(option.legacy):
            return f"its option {option.name!r} has a legacy value outside its range"
    return ""


_BUILTINS_BY_NAME: Dict[str, StrategyInfo] = {info.name: info for info in BUILTINS}


def _entry_points() -> List[Any]:
    from importlib import metadata

    found = metadata.entry_points()
    if hasattr(found, "select"):
        return list(found.select(group=ENTRY_POINT_GROUP))
    return list(found.get(ENTRY_POINT_GROUP, []))  # Python 3.9: a dict of groups


@functools.lru_cache(maxsize=None)
def _discover() -> Tuple[StrategyInfo, ...]:
    """Built-ins, then plugins; each broken plugin is skipped with one warning, once."""
    infos: Dict[str, StrategyInfo] = {info.name: info for info in BUILTINS}
    for entry in sorted(_entry_points(), key=lambda e: (e.name, e.value)):
        where = f"strategy plugin {entry.name!r} ({entry.value})"
        try:
            info = entry.load()
        except Exception as error:  # a plugin's bug must not break other searches
            logger.warning("%s is skipped: loading it raised %s: %s", where, type(error).__name__, error)
            continue
        problem = _problem_with(info)
        if not problem and info.name != entry.name:
            problem = f"its StrategyInfo is named {info.name!r}, not {entry.name!r}"
        if not problem and info.name in infos:
            problem = f"the name {info.name!r} is already taken by {infos[info.name].target}"
        if problem:
            logger.warning("%s is skipped: %s", where, problem)
            continue
        infos[info.name] = dataclasses.replace(info, builtin=False)
    return tuple(infos.values())


def available() -> Dict[str, StrategyInfo]:
    """Every usable strategy by name: the built-ins and the installed plugins."""
    return {info.name: info for info in _discover()}


def get_info(name: str) -> StrategyInfo:
    """The StrategyInfo of `--tuning_strategy=name`; ConfigError listing the valid names.

    A built-in is returned without looking for plugins: built-ins win over a plugin of the same
    name anyway (`_discover`), and the scan of every installed package's entry points costs a
    search ~35 ms of its start-up (docs/overhead.md)."""
    builtin = _BUILTINS_BY_NAME.get(name)
    if builtin is not None:
        return builtin
    infos = available()
    if name not in infos:
        valid = ", ".join(sorted(infos))
        raise ConfigError(f"--tuning_strategy={name!r} is not a strategy; choose one of: {valid}")
    return infos[name]


def _preferred() -> List[Tuple[str, StrategyInfo]]:
    """Strategies in the order a hint suggests them: built-ins first, then by name."""
    return sorted(available().items(), key=lambda item: (not item[1].builtin, item[0]))


def _default(spec: OptionSpec) -> OptionValue:
    return spec.default if spec.choices else float(spec.default)


def journal_defaults(name: str, journaled: Optional[Mapping[str, Any]]) -> Dict[str, OptionValue]:
    """The defaults of the release that wrote a journal, for options a resume does not name.

    A search journals every option of its strategy (`check_strategy` fills the defaults in), so
    a journal whose `strategy_options` lack one (or that has none at all) was written before
    that option existed -- before issue 15 for the options that have a `legacy` value. Such a
    search ran with the defaults of its day: each option's `legacy` value (its default when it
    has none). A journal that names every option gets today's defaults, i.e. nothing ({}).

    A journal that names every option of the first generations but lacks one added later
    (`OptionSpec.added`) was written by the release in between: the options it names keep
    today's defaults (a default that changes must come with a new option or generation), the
    later ones their `legacy` value (docs/algorithms.md, "Options added later").
    """
    specs = get_info(name).options
    if journaled is not None and all(spec.name in journaled for spec in specs):
        return {}
    known = 0  # the newest generation whose options the journal all names
    for generation in sorted({spec.added for spec in specs}):
        if journaled is None or not all(spec.name in journaled for spec in specs if spec.added <= generation):
            break
        known = generation
    return {spec.name: _default(spec) if spec.added <= known else (spec.legacy if spec.legacy is not None else _default(spec))
            for spec in specs}


def legacy_options(name: str) -> Dict[str, OptionValue]:
    """Every option at its legacy value: the behaviour of PaddleHub's original, bit for bit."""
    return journal_defaults(name, None)


def resumed_options(
    name: str,
    dim: int,
    popsize: int,
    journaled: Optional[Mapping[str, Any]],
    given: Mapping[str, Any],
    asynchronous: bool = False,
) -> Dict[str, OptionValue]:
    """The options a resumed search runs with: `given` (the command line's), the rest at the
    defaults of the release that wrote the journal (`journal_defaults`).

    Pass the journal's own options as `given` to read what the interrupted search ran with; a
    resume is refused when the two differ, exactly as before options could be added. So the
    same command line resumes an old search with the behaviour it began with.
    """
    return check_strategy(name, dim, popsize, {**journal_defaults(name, journaled), **given}, asynchronous)


def check_strategy(
    name: str,
    dim: int,
    popsize: int,
    options: Mapping[str, Any] = {},
    asynchronous: bool = False,
) -> Dict[str, OptionValue]:
    """Validate a strategy request without importing the implementation.

    Returns every option of the strategy, defaults filled in: a float for a numeric option, the
    chosen word for a categorical one. Each error is one line naming the option as the CLI
    spells it, and the fix.
    """
    info = get_info(name)
    if popsize < 1:
        raise ConfigError(f"--popsize must be 1 or more, got {popsize}")
    if dim < info.min_dim:
        need = _NUMBER_WORDS.get(info.min_dim, str(info.min_dim))
        others = [n for n, i in _preferred() if i.min_dim <= dim and n != name]
        if asynchronous:
            others = [n for n in others if available()[n].supports_async] or others
        hint = f"; use --tuning_strategy={others[0]}" if others else ""
        raise ConfigError(
            f"--tuning_strategy={name}: {info.display_name} needs {need} or more hyperparameters, "
            f"the search space has {dim}{hint}"
        )
    specs = {spec.name: spec for spec in info.options}
    for key in options:
        if key not in specs:
            valid = f"valid options: {', '.join(specs)}" if specs else f"{info.display_name} takes no options"
            raise ConfigError(
                f"--strategy_option {key}=...: {info.display_name} (--tuning_strategy={name}) has no option {key!r}; {valid}"
            )
    values = {spec.name: spec.parse(options[spec.name], info.display_name) if spec.name in options else _default(spec)
              for spec in info.options}
    if asynchronous and not info.supports_async:
        fits = [n for n, i in _preferred() if i.supports_async and i.min_dim <= dim]
        instead = f"use --tuning_strategy={fits[0]} with --async, or drop --async" if fits else "drop --async"
        raise ConfigError(
            f"--async: --tuning_strategy={name} needs whole rounds (generations) of results; {instead}"
        )
    return values


def load_class(info: StrategyInfo) -> type:
    """Import the class `info.target` names; ConfigError if the plugin cannot be imported."""
    module_name, _, attribute = info.target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"--tuning_strategy={info.name}: cannot import its implementation {info.target} "
            f"({type(error).__name__}: {error}); reinstall the package that provides it"
        ) from None
    return obj


def make_strategy(
    name: str,
    dim: int,
    init_point: "np.ndarray",
    popsize: int,
    seed: int,
    options: Mapping[str, Any] = {},
) -> "Strategy":
    """Build `--tuning_strategy=name` after `check_strategy`, with its options parsed."""
    values = check_strategy(name, dim, popsize, options)
    cls = load_class(get_info(name))
    return cls(dim, init_point, popsize, seed, **values)
