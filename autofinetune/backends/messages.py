"""What the tuner and a Dask worker tell each other about a trial (see docs/dask.md).

They cross the wire as plain dicts (`to_dict`/`from_dict`), not pickled classes: a worker with
another autofinetune version still decodes what it understands, and the tuner can tell a
report it cannot read from a broken trial. Standard library only: imported on Dask workers.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from ..runner import ProcessIdentity, Status

GPU, TRIAL = "GPU", "trial"  # the worker resources a trial takes one unit of

T = TypeVar("T")


def _known(cls: Type[T], data: Mapping[str, Any]) -> Dict[str, Any]:
    """The keys `cls` has; unknown ones (a newer peer's) are ignored, missing ones take defaults."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return {k: v for k, v in data.items() if k in names}


class ReportState(str, enum.Enum):
    """How far a trial's task got on its worker."""

    EXITED = "exited"  # the trial ran and ended: exit_code, stop_reason and the result are set
    NOT_STARTED = "not_started"  # the search was stopping already: --resume runs it
    NO_SHARED_FS = "no_shared_fs"  # the worker cannot see the tuner's files: the search must stop
    START_FAILED = "start_failed"  # the trial (or its launcher) could not be started

    __str__ = str.__str__
    __format__ = str.__format__


@dataclass(frozen=True)
class StopNames:
    """The names of one search's Dask stop signals: Events "stop" and "kill", the grace Variable."""

    stop: str
    kill: str
    grace: str

    @classmethod
    def for_run(cls, run_id: str) -> "StopNames":
        return cls(*(f"autofinetune-{run_id}-{name}" for name in ("stop", "kill", "grace")))


@dataclass
class TrialPayload:
    """Everything a worker needs to run one trial; paths are the tuner's, on the shared filesystem."""

    key: str
    argv: List[str]
    log_path: str
    result_path: str
    token: str
    resource: str = TRIAL
    python: Optional[str] = None  # the tuner's interpreter: argv[0] equal to it means "this worker's Python"
    cwd: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None
    kill_grace: float = 5.0
    topic: Optional[str] = None  # where the worker announces the start (Worker.log_event)
    stop_names: Optional[StopNames] = None
    #: The tuner's own in-process cluster: worker name -> (slot index, GPU id) it is pinned to.
    local_slots: Dict[str, Tuple[int, Optional[str]]] = field(default_factory=dict)
    #: The trial's intermediate-results file and stop file (docs/pruning.md); the worker
    #: enforces a stop request it finds there, after `prune_grace` seconds.
    intermediate_path: Optional[str] = None
    stop_path: Optional[str] = None
    prune_grace: float = 30.0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialPayload":
        known = _known(cls, data)
        if known.get("stop_names") is not None:
            known["stop_names"] = StopNames(**known["stop_names"])
        known["local_slots"] = {name: (int(pin[0]), pin[1]) for name, pin in (known.get("local_slots") or {}).items()}
        return cls(**known)


@dataclass
class TrialStarted:
    """The worker's word that a trial's process started, and where: the tuner journals it."""

    key: str
    identity: ProcessIdentity
    position: int = 0  # the device position on the worker
    gpu: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "identity": self.identity.to_json(), "position": self.position, "gpu": self.gpu}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialStarted":
        known = _known(cls, data)
        known["identity"] = ProcessIdentity.from_json(known["identity"])
        return cls(**known)


@dataclass
class TrialReport:
    """What a worker returns when a trial's task ends; it never raises for what the trial did."""

    state: ReportState
    worker: str
    host: str
    version: str
    message: str = ""
    exit_code: Optional[int] = None
    stop_reason: Optional[Status] = None
    duration: float = 0.0
    result: Optional[str] = None  # the result file's text, read by the worker right after the trial ended
    result_error: str = ""  # why there is no text (runner.NO_REPORT when the trial wrote none)
    started: Optional[TrialStarted] = None

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        data["stop_reason"] = None if self.stop_reason is None else self.stop_reason.value
        data["started"] = None if self.started is None else self.started.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialReport":
        known = _known(cls, data)
        known["state"] = ReportState(known["state"])
        if known.get("stop_reason") is not None:
            known["stop_reason"] = Status(known["stop_reason"])
        if known.get("started") is not None:
            known["started"] = TrialStarted.from_dict(known["started"])
        return cls(**known)
