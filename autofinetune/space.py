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
import stat
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np

from .errors import SpaceError, shown

Value = Union[int, float, str]

#: argparse option names a trial must accept; a hyperparameter may not take them over.
RESERVED_NAMES = frozenset({"saved_params_dir", "model_path"})
#: argparse's own help option: `--help=...` or `--h=...` would make every trial print its help and exit.
ARGPARSE_NAMES = frozenset({"help", "h"})
#: Option-name characters only, so a name can never open a new option or carry a value. '-' and
#: '.' stay allowed: argparse scripts use `--batch-size` (read as batch_size) and dotted config
#: options (`--model.lr`, as in jsonargparse); a name may not start with either.
_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
NAME_RULE = "letters, digits, '_', '-' and '.', starting with a letter or '_', at most 100 characters"
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
        # A space built from Param objects skips from_list: keep the map itself from collapsing
        # every candidate onto a bound (high - low = inf) or producing NaN.
        if not (self.low < self.high and math.isfinite(self.high - self.low) and self.low <= self.init_value <= self.high) \
                or (self.log and self.low <= 0):
            raise SpaceError(f"{name}: float bounds [{self.low!r}, {self.high!r}] (init {self.init_value!r}, log {self.log}) do not map "
                             f"onto the unit box; fix: finite bounds low < high within ±1.0e+300, init between them, low > 0 with log")

    def from_unit(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if u in (0.0, 1.0):  # exp(log(high)) and low + (high - low) can miss the bound by an ulp
            return self.high if u else self.low
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
        if not (-MAX_INT_BOUND <= self.low <= self.init_value <= self.high <= MAX_INT_BOUND and self.low < self.high) \
                or (self.log and self.low <= 0):
            raise SpaceError(f"{name}: int bounds [{_short(self.low, 25)}, {_short(self.high, 25)}] (init {_short(self.init_value, 25)}, "
                             f"log {self.log}) do not map onto the unit box; fix: low < high within ±2**53, init between them, low > 0 with log")

    def from_unit(self, u: float) -> int:
        u = min(max(float(u), 0.0), 1.0)
        if u == 1.0:  # exp(log(high + 1)) is a few integers short near 2**53
            return self.high
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
        """Read an hparam.yaml; every malformed file gets one line naming file, entry, field.

        The file is untrusted input that reaches argv: it is read with a size cap and without
        blocking (a FIFO or /dev/zero as --param_file must not hang the CLI), and parsed with a
        YAML loader that refuses what PyYAML would otherwise accept silently or slowly
        (duplicate keys, aliases), before any folder is created (docs/security.md).
        """
        path = os.fsdecode(os.fspath(path))
        where = shown(path)
        text = _read_param_file(path, where)
        document = _load_yaml(text, where)
        if not isinstance(document, dict) or "param_list" not in document:
            raise SpaceError(f"{where}: missing top-level key 'param_list'; fix: start the file with 'param_list:' followed by a list of hyperparameters")
        return cls.from_list(document["param_list"], source=path)

    @classmethod
    def from_list(cls, entries: Any, source: str = "<search space>") -> "SearchSpace":
        """Build a space from the `param_list` entries (dicts as in hparam.yaml).

        The Python API lands here directly, so every check that keeps a value off a broken
        argv is made here rather than in the YAML reader.
        """
        where = shown(source)
        if not isinstance(entries, list):
            raise SpaceError(f"{where}: 'param_list' must be a list of hyperparameters (entries starting with '- name:'), got {_describe(entries)}")
        if not entries:
            raise SpaceError(f"{where}: 'param_list' is empty; fix: add at least one hyperparameter")
        params: List[Param] = []
        seen: Dict[str, int] = {}
        argv_bytes = 0
        for index, entry in enumerate(entries):
            param = _parse_entry(where, index, entry)
            option = _option_key(param.name)
            if option in seen:
                first = params[seen[option]].name
                same = "" if first == param.name else f" ({first!r}: argparse reads '-' as '_', so both are one option)"
                raise SpaceError(f"{where}: param_list[{index}] ({param.name}): field 'name' duplicates param_list[{seen[option]}]{same}; "
                                 f"fix: give every hyperparameter a unique name")
            seen[option] = index
            params.append(param)
            argv_bytes += _argv_bytes(param)
            if argv_bytes > MAX_ARGV_BYTES:
                raise SpaceError(f"{where}: param_list[{index}] ({param.name}): the trial's options would take up to {argv_bytes} bytes of "
                                 f"command line, over {MAX_ARGV_BYTES}; fix: use fewer hyperparameters or shorter choice values")
        space = cls(params, source=source)
        if not np.all(np.isfinite(space.init_unit())):  # the bound checks make this unreachable
            raise SpaceError(f"{where}: the initial point does not map into the unit box; fix: narrow the bounds")
        return space


#: A hparam.yaml is a few KiB; the cap keeps a wrong --param_file (a dataset, /dev/zero) from
#: being read for minutes.
MAX_FILE_BYTES = 1 << 20
#: YAML nodes in one file: a real space has tens; this bounds parsing time within the size cap.
MAX_YAML_NODES = 50_000
MAX_YAML_DEPTH = 20
#: Longest value one choice may pass (argv and log_file.txt stay readable).
MAX_VALUE_CHARS = 1000
#: Worst-case bytes of a trial's hyperparameter options; well under Linux's ARG_MAX (2 MiB, shared
#: with the environment and the trailing pairs) and a single argument's 128 KiB.
MAX_ARGV_BYTES = 64 * 1024
MAX_NAME_CHARS = 100
#: Beyond 2**53 not every integer is a float: the unit-box map would skip or repeat integers.
MAX_INT_BOUND = 2 ** 53
#: Beyond this `high - low` can overflow to inf and every candidate would be a bound (or NaN).
MAX_FLOAT_BOUND = 1e300
#: Characters a value may not carry onto argv: NUL cannot be passed at all, lone surrogates cannot
#: be encoded, and control characters and line separators break log_file.txt into extra lines.
_BAD_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORT = 60


def _read_param_file(path: str, where: str) -> str:
    """The file's text, refused in one line unless it is a readable regular file under the cap.

    O_NONBLOCK makes opening a FIFO return at once, and fstat on the opened descriptor (not the
    path, which may change in between) refuses anything but a regular file before any read.
    """
    fix = "fix: pass a readable hparam.yaml (a regular file) as --param_file"
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SpaceError(f"{where}: no such file; fix: pass an existing hparam.yaml as --param_file") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        reason = error.strerror if isinstance(error, OSError) and error.strerror else (
            "a NUL byte in the path" if isinstance(error, ValueError) else error.__class__.__name__)
        raise SpaceError(f"{where}: cannot be opened ({_clip(str(reason))}); {fix}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SpaceError(f"{where}: is {_file_kind(mode)}, not a regular file; {fix}")
        chunks: List[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise SpaceError(f"{where}: cannot be read ({_clip(str(error.strerror or error.__class__.__name__))}); {fix}") from None
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise SpaceError(f"{where}: larger than {MAX_FILE_BYTES // 1024} KiB, too big for a param file; {fix}")
    data = b"".join(chunks)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise SpaceError(f"{where}: not UTF-8 text (byte 0x{data[error.start]:02x} at line {line}); fix: save the file as UTF-8") from None


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


class _Refused(Exception):
    """A YAML construct the loader will not build; the message already names its line."""


def _loader_base() -> type:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_events(text: str) -> None:
    """Refuse aliases, deep nesting and too many nodes before any node is built.

    An alias makes a few hundred bytes stand for billions of values ("billion laughs"): the
    cost is paid by whatever walks the result (an error message's repr took a minute and 2 GB),
    so aliases are refused outright rather than bounded. The event stream is flat, so this pass
    itself cannot recurse or expand anything.
    """
    import yaml

    loader = _loader_base()(text)
    depth = nodes = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1 if event.start_mark is not None else "?"
            if isinstance(event, yaml.AliasEvent):
                raise _Refused(f"alias *{_clip(str(event.anchor), 30)} at line {line}: aliases are not accepted; "
                               f"fix: write the value out in full where it is used")
            if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
                nodes += 1
                if nodes > MAX_YAML_NODES:
                    raise _Refused(f"more than {MAX_YAML_NODES} YAML values (at line {line}); fix: a param file lists a few hyperparameters")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise _Refused(f"nested more than {MAX_YAML_DEPTH} levels deep at line {line}; fix: param_list entries are flat mappings")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _strict_loader() -> type:
    """A safe loader that refuses duplicate keys (PyYAML keeps the last one silently, so a
    doubled `lower_than` would change the bounds unseen) and over-long integers."""
    import yaml

    base = _loader_base()

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: Dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise _Refused(f"duplicate key {_short(key)} at line {line} (first at line {seen[key]}); "
                                           f"fix: keep one (YAML would silently use the last)")
                        seen[key] = line
                    except TypeError:  # unhashable: the base class refuses it with its line
                        continue
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            # Python will not convert more than 4300 digits, and PyYAML's base-60 ints (1:30:00)
            # take quadratic time: no use for either is longer than a choice value.
            if len(node.value) > MAX_VALUE_CHARS:
                raise _Refused(f"integer of {len(node.value)} characters at line {node.start_mark.line + 1}; "
                               f"fix: int values must lie within ±{MAX_INT_BOUND} (quote a choice value to pass it as text)")
            return super().construct_yaml_int(node)

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return StrictLoader


def _load_yaml(text: str, where: str) -> Any:
    import yaml

    try:
        _check_events(text)
        loader = _strict_loader()(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as error:
        raise SpaceError(f"{where}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or (str(error).splitlines() or [error.__class__.__name__])[0]
        raise SpaceError(f"{where}: YAML syntax error{at}: {_clip(str(problem), 160)}; fix the YAML syntax there") from None


def _clip(text: str, limit: int = _SHORT) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value: Any, limit: int = _SHORT) -> str:
    """A repr of at most `limit` characters, built without walking (or printing) more than that.

    Values come from the user's file or list and can be huge, nested or self-referential; a
    plain repr of them cost minutes (and an int of over 4300 digits cannot be printed at all).
    """
    out: List[str] = []
    budget = [limit + 1]

    class Full(Exception):
        pass

    def emit(text: str) -> None:
        out.append(text[:budget[0]])
        budget[0] -= len(text)
        if budget[0] <= 0:
            raise Full

    def walk(item: Any, depth: int) -> None:
        if depth > 3:
            emit("...")
        elif isinstance(item, (list, tuple)):
            emit("[" if isinstance(item, list) else "(")
            for i, element in enumerate(item):
                emit(", " if i else "")
                walk(element, depth + 1)
            emit("]" if isinstance(item, list) else ")")
        elif isinstance(item, dict):
            emit("{")
            for i, (key, element) in enumerate(item.items()):
                emit(", " if i else "")
                walk(key, depth + 1)
                emit(": ")
                walk(element, depth + 1)
            emit("}")
        elif isinstance(item, str):
            emit(repr(item[:limit + 1]))
        elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 200:
            emit(f"<integer of about {int(item.bit_length() * 0.30103) + 1} digits>")
        elif item is None or isinstance(item, (bool, int, float)):
            emit(repr(item))
        else:
            emit(f"<{type(item).__name__}>")

    try:
        walk(value, 0)
    except Full:
        pass
    text = "".join(out)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if not isinstance(value, (str, int, float, list, tuple, dict)):
        return f"a {type(value).__name__}"
    return f"{type(value).__name__} {_short(value)}"


def _plain(value: Any) -> Any:
    """Subclasses of str/int/float (enums, numpy scalars) as the plain type, so what is checked
    is what `format` will print on argv."""
    if isinstance(value, bool):
        return value
    for base in (str, int, float):
        if isinstance(value, base) and type(value) is not base:
            return base(value) if base is not str else str.__str__(value)
    return value


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True  # no float(): an int of 400 digits overflows it
    return isinstance(value, float) and math.isfinite(value)


def _yaml_number_text(number: float, whole: bool) -> str:
    """`number` written so that YAML 1.1 reads it as a number (1e30 and 1.0e30 are text to it)."""
    if whole and number.is_integer() and abs(number) <= MAX_INT_BOUND:
        return str(int(number))
    text = repr(number)
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
    return text


def _string_number_hint(value: Any, whole: bool) -> str:
    if isinstance(value, str) and len(value) <= 100:
        try:
            number = float(value)
        except ValueError:
            return ""
        if math.isfinite(number):
            return f"; fix: write it as {_yaml_number_text(number, whole)} (YAML reads {_clip(value.strip(), 30)} as text)"
    return ""


def _option_key(name: str) -> str:
    """Two names argparse would store as one option: it maps '-' to '_' in the destination."""
    return name.replace("-", "_")


def _argv_bytes(param: Param) -> int:
    """The longest `--name=value` (plus its NUL) this parameter can put on a trial's argv."""
    if isinstance(param, ChoiceParam):
        longest = max(len(param.format(v).encode("utf-8")) for v in param.values)
    elif isinstance(param, IntParam):
        longest = max(len(str(param.low)), len(str(param.high)))
    else:
        longest = 24  # the longest repr of a float, e.g. -2.2250738585072014e-308
    return len(param.name) + 4 + longest


def _parse_entry(source: str, index: int, entry: Any) -> Param:
    where = f"{source}: param_list[{index}]"
    if not isinstance(entry, Mapping):
        raise SpaceError(f"{where}: must be a mapping with name, type, init_value, greater_than, lower_than; got {_describe(entry)}")
    entry = dict(entry)
    name = _plain(entry.get("name"))
    if "name" not in entry:
        raise SpaceError(f"{where}: missing field 'name'; fix: add 'name: <option name>'")
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _NAME_PATTERN.fullmatch(name):
        raise SpaceError(f"{where}: field 'name' is {_describe(name)}, not a valid option name; fix: use {NAME_RULE} "
                         f"(e.g. learning_rate)")
    where = f"{where} ({name})"
    if _option_key(name) in RESERVED_NAMES:
        raise SpaceError(f"{where}: field 'name' {name!r} is reserved for the tuner (it passes --{_option_key(name)} itself); fix: rename the hyperparameter")
    if name in ARGPARSE_NAMES:
        raise SpaceError(f"{where}: field 'name' {name!r} is argparse's help option: every trial would print its help and exit; "
                         f"fix: rename the hyperparameter")
    if "type" not in entry:
        raise SpaceError(f"{where}: missing field 'type'; fix: add 'type: float' (or int, choice)")
    kind = _plain(entry["type"])
    if not isinstance(kind, str) or kind not in _KNOWN_TYPES:
        raise SpaceError(f"{where}: field 'type' is {_describe(kind)}; fix: use one of {', '.join(_KNOWN_TYPES)}")
    known_fields = {"name", "type", "init_value", "greater_than", "lower_than", "log", "values"}
    unknown = [key for key in entry if not (isinstance(key, str) and key in known_fields)]
    if unknown:
        raise SpaceError(f"{where}: unknown field {_short(unknown[0])}; fix: use only {', '.join(sorted(known_fields))}")
    if kind == "choice":
        return _parse_choice(where, name, entry)
    return _parse_numeric(where, name, kind, entry)


def _parse_numeric(where: str, name: str, kind: str, entry: Dict[str, Any]) -> Param:
    if "values" in entry:
        raise SpaceError(f"{where}: field 'values' is only for 'type: choice'; fix: remove it or change the type")
    whole = kind == "int"
    numbers: Dict[str, Union[int, float]] = {}
    for field in ("init_value", "greater_than", "lower_than"):
        if field not in entry:
            raise SpaceError(f"{where}: missing field '{field}'; fix: add '{field}: <number>'")
        value = _plain(entry[field])
        if not _is_number(value):
            hint = _string_number_hint(value, whole) or (
                "; fix: use a finite bound (.inf and .nan are not numbers here)" if isinstance(value, float) else "; fix: use a number such as 0.5 or 1.0e-3")
            raise SpaceError(f"{where}: field '{field}' must be a finite number, got {_describe(value)}{hint}")
        if whole and isinstance(value, float) and not value.is_integer():
            raise SpaceError(f"{where}: field '{field}' must be a whole number for 'type: int', got {_short(value)}")
        if whole and abs(value) > MAX_INT_BOUND:
            raise SpaceError(f"{where}: field '{field}' is {_short(value)}, beyond ±2**53 = {MAX_INT_BOUND} where floats skip integers; "
                             f"fix: keep int values within ±{MAX_INT_BOUND} (or use type: float)")
        if not whole and abs(value) > MAX_FLOAT_BOUND:
            raise SpaceError(f"{where}: field '{field}' is {_short(value)}, beyond ±1.0e+300 where high - low overflows; "
                             f"fix: keep float values within ±1.0e+300 (log: true covers wide positive ranges)")
        numbers[field] = int(value) if whole else float(value)
    low, high, init = numbers["greater_than"], numbers["lower_than"], numbers["init_value"]
    if not low < high:
        raise SpaceError(f"{where}: field 'greater_than' ({_short(low)}) must be below 'lower_than' ({_short(high)}); fix: greater_than is the LOWER bound, lower_than the UPPER bound")
    if not low <= init <= high:
        raise SpaceError(f"{where}: field 'init_value' ({_short(init)}) is outside [greater_than, lower_than] = [{_short(low)}, {_short(high)}]; fix: choose a value inside the bounds")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: field 'log' must be true or false, got {_describe(log)}")
    if log and low <= 0:
        raise SpaceError(f"{where}: field 'greater_than' ({_short(low)}) must be > 0 with 'log: true'; fix: use a positive lower bound or drop 'log'")
    if kind == "int":
        return IntParam(name, int(init), int(low), int(high), log=log)
    return FloatParam(name, float(init), float(low), float(high), log=log)


def _check_choice_value(where: str, position: int, value: Any) -> str:
    """The text `value` puts on argv, or one line saying why it cannot get there."""
    label = f"{where}: values[{position}]"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpaceError(f"{label} is {_describe(value)}; fix: use strings or finite numbers (quote dates and other YAML specials)")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpaceError(f"{label} is {_short(value)}; fix: use finite numbers, or quote it to pass the text")
    if isinstance(value, int) and value.bit_length() > 3 * MAX_VALUE_CHARS:
        raise SpaceError(f"{label} is {_short(value)}, longer than {MAX_VALUE_CHARS} characters; fix: use a shorter value")
    text = repr(value) if isinstance(value, float) else str(value)
    if len(text) > MAX_VALUE_CHARS:
        raise SpaceError(f"{label} is {len(text)} characters long ({_short(text, 30)}), over {MAX_VALUE_CHARS}; "
                         f"fix: use a shorter value (e.g. a file name the script reads)")
    bad = _BAD_CHAR.search(text)
    if bad:
        raise SpaceError(f"{label} holds U+{ord(bad.group()):04X} at position {bad.start()} ({_short(text, 30)}); "
                         f"fix: remove control characters, line breaks and lone surrogates: they cannot reach a trial's command line intact")
    return text


def _parse_choice(where: str, name: str, entry: Dict[str, Any]) -> Param:
    for field in ("greater_than", "lower_than", "log"):
        if field in entry:
            raise SpaceError(f"{where}: field '{field}' does not apply to 'type: choice'; fix: remove it (list the options under 'values')")
    values = entry.get("values")
    if "values" not in entry:
        raise SpaceError(f"{where}: missing field 'values'; fix: add 'values: [a, b, c]' for 'type: choice'")
    if not isinstance(values, (list, tuple)) or not values:
        raise SpaceError(f"{where}: field 'values' must be a non-empty list, got {_describe(values)}")
    values = [_plain(v) for v in values]
    by_value: Dict[Any, int] = {}
    by_text: Dict[str, int] = {}
    for position, value in enumerate(values):
        text = _check_choice_value(where, position, value)
        # 1 and 1.0 are one value to `==` (and to .index); 1 and '1' are one text on argv
        first = by_value.setdefault(value, position)
        first = min(first, by_text.setdefault(text, position))
        if first != position:
            raise SpaceError(f"{where}: field 'values' lists {_short(values[first], 25)} (values[{first}]) and {_short(value, 25)} "
                             f"(values[{position}]), the same option to a trial; fix: list each option once")
    if "init_value" not in entry:
        raise SpaceError(f"{where}: missing field 'init_value'; fix: add 'init_value: <one of values>'")
    init = _plain(entry["init_value"])
    if not any(init == v and type(init) is type(v) for v in values):
        raise SpaceError(f"{where}: field 'init_value' {_short(init, 30)} is not one of values {_short(values)}; fix: pick one of them")
    return ChoiceParam(name, init, values)


def load_space(source: Union[str, "os.PathLike[str]", "SearchSpace", Sequence[Mapping[str, Any]]]) -> SearchSpace:
    """Accept what the API accepts: a path, a ready space, or a param_list."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, (str, os.PathLike)):
        return SearchSpace.from_yaml(source)
    if isinstance(source, Mapping):  # one entry instead of a list of them: from_list says so
        return SearchSpace.from_list(source, source="<param_list>")
    try:
        entries = list(source)
    except TypeError:
        entries = source  # not iterable: from_list refuses it in one line
    return SearchSpace.from_list(entries, source="<param_list>")


__all__ = ["Param", "FloatParam", "IntParam", "ChoiceParam", "SearchSpace", "load_space", "Value"]
