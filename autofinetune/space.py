"""The search space: typed hyperparameters and their map to and from the unit box.

Strategies only ever see [0, 1]^dim; each parameter type owns its own map (no if/elif over
types elsewhere). The maps are chosen so that a uniform point of the box is a uniform (or
log-uniform) draw of the parameter, and so that every integer of an int range is equally
reachable (the original truncated with int() and almost never tried the upper bound).
"""
from __future__ import annotations

import abc
import hashlib
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np

from .errors import SpaceError

Value = Union[int, float, str]

#: argparse option names a trial must accept; a hyperparameter may not take them over.
RESERVED_NAMES = frozenset({"saved_params_dir", "model_path"})
_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_KNOWN_TYPES = ("int", "float", "choice")


class Param(abc.ABC):
    """One hyperparameter: its name, its initial value, and its unit-box map."""

    kind: str = ""

    def __init__(self, name: str, init_value: Value) -> None:
        self.name = name
        self.init_value = init_value

    @abc.abstractmethod
    def from_unit(self, u: float) -> Value:
        """Map a unit-box coordinate (clipped to [0, 1]) to a value of this parameter."""

    @abc.abstractmethod
    def to_unit(self, value: Value) -> float:
        """Map a value back to the unit box; `from_unit(to_unit(v)) == v`."""

    @abc.abstractmethod
    def to_json(self) -> Dict[str, Any]:
        """The parameter as it would be written in hparam.yaml (for the journal and results)."""

    def format(self, value: Value) -> str:
        """How the value appears on a trial's command line."""
        return str(value)


class FloatParam(Param):
    kind = "float"

    def __init__(self, name: str, init_value: float, low: float, high: float, log: bool = False):
        super().__init__(name, float(init_value))
        self.low, self.high, self.log = float(low), float(high), bool(log)

    def from_unit(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            value = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + u * (self.high - self.low)
        return min(max(value, self.low), self.high)  # guard against rounding past a bound

    def to_unit(self, value: Value) -> float:
        v = float(value)
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def format(self, value: Value) -> str:
        return repr(float(value))

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "type": "float", "init_value": self.init_value,
                "greater_than": self.low, "lower_than": self.high, "log": self.log}


class IntParam(Param):
    """Integers in [low, high], both included.

    The box is cut into high - low + 1 equal bins (in log space when `log`), one per integer,
    so a uniform draw reaches each integer with the same probability (log: log-uniform
    weight), the upper bound included.
    """

    kind = "int"

    def __init__(self, name: str, init_value: int, low: int, high: int, log: bool = False):
        super().__init__(name, int(init_value))
        self.low, self.high, self.log = int(low), int(high), bool(log)

    def from_unit(self, u: float) -> int:
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            edge = math.exp(math.log(self.low) + u * (math.log(self.high + 1) - math.log(self.low)))
            value = math.floor(edge)
        else:
            value = self.low + math.floor(u * (self.high - self.low + 1))
        return int(min(max(value, self.low), self.high))

    def to_unit(self, value: Value) -> float:
        v = int(value)
        if self.log:
            # the log-space centre of the bin [v, v + 1)
            centre = 0.5 * (math.log(v) + math.log(v + 1))
            return (centre - math.log(self.low)) / (math.log(self.high + 1) - math.log(self.low))
        return (v - self.low + 0.5) / (self.high - self.low + 1)

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "type": "int", "init_value": self.init_value,
                "greater_than": self.low, "lower_than": self.high, "log": self.log}


class ChoiceParam(Param):
    """One of a list of values; the box is cut into one equal bin per value."""

    kind = "choice"

    def __init__(self, name: str, init_value: Value, values: Sequence[Value]):
        super().__init__(name, init_value)
        self.values = list(values)

    def from_unit(self, u: float) -> Value:
        u = min(max(float(u), 0.0), 1.0)
        index = min(int(math.floor(u * len(self.values))), len(self.values) - 1)
        return self.values[index]

    def to_unit(self, value: Value) -> float:
        return (self.values.index(value) + 0.5) / len(self.values)

    def format(self, value: Value) -> str:
        return repr(value) if isinstance(value, float) else str(value)

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "type": "choice", "init_value": self.init_value,
                "values": list(self.values)}


class SearchSpace:
    """An ordered list of parameters; the order fixes the unit-box coordinates."""

    def __init__(self, params: Sequence[Param], source: str = "<search space>") -> None:
        self.params: List[Param] = list(params)
        self.source = source

    @property
    def dim(self) -> int:
        return len(self.params)

    @property
    def names(self) -> List[str]:
        return [p.name for p in self.params]

    def init_unit(self) -> np.ndarray:
        return np.array([p.to_unit(p.init_value) for p in self.params], dtype=float)

    def decode(self, point: Sequence[float]) -> Dict[str, Value]:
        return {p.name: p.from_unit(u) for p, u in zip(self.params, point)}

    def encode(self, values: Mapping[str, Value]) -> np.ndarray:
        return np.array([p.to_unit(values[p.name]) for p in self.params], dtype=float)

    def argv(self, values: Mapping[str, Value]) -> List[str]:
        """The trial's options for these values, `--name=value`, in space order."""
        return [f"--{p.name}={p.format(values[p.name])}" for p in self.params]

    def to_json(self) -> List[Dict[str, Any]]:
        return [p.to_json() for p in self.params]

    def fingerprint(self) -> str:
        """A hash of the space's meaning, so resume can refuse a changed hparam file."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_yaml(cls, path: Union[str, "os.PathLike[str]"]) -> "SearchSpace":
        """Read an hparam.yaml; every malformed file gets one line naming file, entry, field."""
        import yaml

        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise SpaceError(f"{path}: no such file; fix: pass an existing hparam.yaml as --param_file") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
            raise SpaceError(f"{path}: cannot be read ({error.__class__.__name__}); fix: pass a readable UTF-8 YAML file as --param_file") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise SpaceError(f"{path}: YAML syntax error{where}: {problem}; fix the YAML syntax there") from None
        if not isinstance(document, dict) or "param_list" not in document:
            raise SpaceError(f"{path}: missing top-level key 'param_list'; fix: start the file with 'param_list:' followed by a list of hyperparameters")
        return cls.from_list(document["param_list"], source=path)

    @classmethod
    def from_list(cls, entries: Any, source: str = "<search space>") -> "SearchSpace":
        """Build a space from the `param_list` entries (dicts as in hparam.yaml)."""
        if not isinstance(entries, list):
            raise SpaceError(f"{source}: 'param_list' must be a list of hyperparameters (entries starting with '- name:'), got {_describe(entries)}")
        if not entries:
            raise SpaceError(f"{source}: 'param_list' is empty; fix: add at least one hyperparameter")
        params: List[Param] = []
        seen: Dict[str, int] = {}
        for index, entry in enumerate(entries):
            param = _parse_entry(source, index, entry)
            if param.name in seen:
                raise SpaceError(f"{source}: param_list[{index}] ({param.name}): field 'name' duplicates param_list[{seen[param.name]}]; fix: give every hyperparameter a unique name")
            seen[param.name] = index
            params.append(param)
        return cls(params, source=source)



def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"[:80]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_entry(source: str, index: int, entry: Any) -> Param:
    where = f"{source}: param_list[{index}]"
    if not isinstance(entry, dict):
        raise SpaceError(f"{where}: must be a mapping with name, type, init_value, greater_than, lower_than; got {_describe(entry)}")
    name = entry.get("name")
    if "name" not in entry:
        raise SpaceError(f"{where}: missing field 'name'; fix: add 'name: <option name>'")
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise SpaceError(f"{where}: field 'name' is {_describe(name)}, not a valid option name; fix: use letters, digits and _ (e.g. learning_rate), starting with a letter or _")
    where = f"{where} ({name})"
    if name in RESERVED_NAMES:
        raise SpaceError(f"{where}: field 'name' {name!r} is reserved for the tuner (it passes --{name} itself); fix: rename the hyperparameter")
    if "type" not in entry:
        raise SpaceError(f"{where}: missing field 'type'; fix: add 'type: float' (or int, choice)")
    kind = entry["type"]
    if kind not in _KNOWN_TYPES:
        raise SpaceError(f"{where}: field 'type' is {_describe(kind)}; fix: use one of {', '.join(_KNOWN_TYPES)}")
    known_fields = {"name", "type", "init_value", "greater_than", "lower_than", "log", "values"}
    unknown = sorted(set(map(str, entry)) - known_fields)
    if unknown:
        raise SpaceError(f"{where}: unknown field {unknown[0]!r}; fix: use only {', '.join(sorted(known_fields))}")
    if kind == "choice":
        return _parse_choice(where, name, entry)
    return _parse_numeric(where, name, kind, entry)


def _parse_numeric(where: str, name: str, kind: str, entry: Dict[str, Any]) -> Param:
    if "values" in entry:
        raise SpaceError(f"{where}: field 'values' is only for 'type: choice'; fix: remove it or change the type")
    for field in ("init_value", "greater_than", "lower_than"):
        if field not in entry:
            raise SpaceError(f"{where}: missing field '{field}'; fix: add '{field}: <number>'")
        if not _is_number(entry[field]):
            raise SpaceError(f"{where}: field '{field}' must be a finite number, got {_describe(entry[field])}")
        if kind == "int" and float(entry[field]) != int(entry[field]):
            raise SpaceError(f"{where}: field '{field}' must be a whole number for 'type: int', got {entry[field]!r}")
    low, high, init = entry["greater_than"], entry["lower_than"], entry["init_value"]
    if not low < high:
        raise SpaceError(f"{where}: field 'greater_than' ({low}) must be below 'lower_than' ({high}); fix: greater_than is the LOWER bound, lower_than the UPPER bound")
    if not low <= init <= high:
        raise SpaceError(f"{where}: field 'init_value' ({init}) is outside [greater_than, lower_than] = [{low}, {high}]; fix: choose a value inside the bounds")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: field 'log' must be true or false, got {_describe(log)}")
    if log and low <= 0:
        raise SpaceError(f"{where}: field 'greater_than' ({low}) must be > 0 with 'log: true'; fix: use a positive lower bound or drop 'log'")
    if kind == "int":
        return IntParam(name, int(init), int(low), int(high), log=log)
    return FloatParam(name, float(init), float(low), float(high), log=log)


def _parse_choice(where: str, name: str, entry: Dict[str, Any]) -> Param:
    for field in ("greater_than", "lower_than", "log"):
        if field in entry:
            raise SpaceError(f"{where}: field '{field}' does not apply to 'type: choice'; fix: remove it (list the options under 'values')")
    values = entry.get("values")
    if "values" not in entry:
        raise SpaceError(f"{where}: missing field 'values'; fix: add 'values: [a, b, c]' for 'type: choice'")
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{where}: field 'values' must be a non-empty list, got {_describe(values)}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            raise SpaceError(f"{where}: field 'values' holds {_describe(value)}; fix: use strings or finite numbers")
    if len(set(map(repr, values))) != len(values):
        raise SpaceError(f"{where}: field 'values' has duplicates; fix: list each option once")
    if "init_value" not in entry:
        raise SpaceError(f"{where}: missing field 'init_value'; fix: add 'init_value: <one of values>'")
    init = entry["init_value"]
    if not any(init == v and type(init) is type(v) for v in values):
        raise SpaceError(f"{where}: field 'init_value' {init!r} is not one of values {values!r}; fix: pick one of them")
    return ChoiceParam(name, init, values)


def load_space(source: Union[str, "os.PathLike[str]", "SearchSpace", Sequence[Mapping[str, Any]]]) -> SearchSpace:
    """Accept what the API accepts: a path, a ready space, or a param_list."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, (str, os.PathLike)):
        return SearchSpace.from_yaml(source)
    return SearchSpace.from_list(list(source), source="<param_list>")


__all__ = ["Param", "FloatParam", "IntParam", "ChoiceParam", "SearchSpace", "load_space", "Value"]
