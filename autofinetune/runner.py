"""One trial's life, written once for every backend: environment, supervised start, stop, judgement.

The local backend runs it on the tuner's machine and a Dask worker runs it on its own
(backends/local.py, backends/dask_task.py); both must stop and judge a trial the same way, so
nothing here knows about queues, slots or Dask. This module is imported on Dask workers and
must keep to the standard library (see docs/dask.md).

Each trial is a child of one long-lived `_launcher.py` per tuner (or Dask task), a subreaper that
finds and stops every descendant of the trial, whatever process group it moved to; its output
goes straight to the log file (never held in memory), and its outcome is judged from the exit
status and the trial's own result file.
"""
from __future__ import annotations

import enum
import errno
import hashlib
import functools
import json
import math
import os
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ._launcher import cookie_holders
from .devices import Slot
from .reporting import INTERMEDIATE_FILE_ENV, RESULT_FILE_ENV, STOP_FILE_ENV, TRIAL_TOKEN_ENV


class Status(str, enum.Enum):
    """A trial's status: the one vocabulary of the journal, the views and the backends.

    A `str` so that JSON, CSV and comparisons with the journal's plain strings keep working.
    """

    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INVALID = "invalid"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    #: Stopped early by the pruner (docs/pruning.md): a deliberate stop, not a failure.
    PRUNED = "pruned"

    __str__ = str.__str__  # f"{status}" and str(status) say "ok", not "Status.OK"
    __format__ = str.__format__


OK, FAILED, INVALID, TIMEOUT, INTERRUPTED, PRUNED = (Status.OK, Status.FAILED, Status.INVALID, Status.TIMEOUT, Status.INTERRUPTED,
                                                     Status.PRUNED)

LAUNCHER = str(Path(__file__).with_name("_launcher.py"))
#: A trial that exits 130 was interrupted (Ctrl-C's conventional status), not failed.
INTERRUPTED_EXIT_CODES = frozenset({130, -signal.SIGINT})
NO_REPORT = "no result reported (report_final_result was never called)"
#: A result file larger than this is not a report (they are a few dozen bytes); reading no
#: more keeps a lying trial from filling the tuner's memory.
RESULT_LIMIT = 1 << 20
#: Deeper nesting than this is no report: json.loads recurses once per level (docs/security.md).
RESULT_MAX_DEPTH = 64
#: Digits beyond which a reported integer is read as a float (inf when too big): int() of a long
#: digit string costs quadratic time, and float() of a too-big int raises.
RESULT_MAX_INT_DIGITS = 300
#: How much of a reported value a message quotes: the message lands in the journal and the views.
QUOTE_LIMIT = 80

#: What `read_report` gives `judge_trial`: the raw reported score, or None with the reason.
Report = Tuple[Optional[Any], str]


@dataclass
class TrialSpec:
    """What to run: a backend's whole view of a trial.

    The token is the trial's proof of authorship for its result file; the search chooses it
    (and journals it) so that a result written while the tuner was down can still be trusted.
    """

    key: str
    argv: List[str]
    log_path: Path
    result_path: Path
    cwd: Optional[str] = None
    timeout: Optional[float] = None
    env: Dict[str, str] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    #: Where the trial appends its intermediate results, and where the tuner's request to stop
    #: appears (docs/pruning.md, "The file protocol"); None: the trial is given neither.
    intermediate_path: Optional[Path] = None
    stop_path: Optional[Path] = None
    #: Seconds between the request to stop (the stop file) and SIGTERM.
    prune_grace: float = 30.0


@dataclass
class TrialOutcome:
    spec: TrialSpec
    status: Status
    score: Optional[float]
    exit_code: Optional[int]
    slot: Slot
    started: float
    finished: float
    message: str = ""

    @property
    def duration(self) -> float:
        return self.finished - self.started


# -- finding a trial's process group again ------------------------------------------------------

@functools.lru_cache(maxsize=1)
def boot_id() -> Optional[str]:
    """This kernel's boot id: a pid and start time mean nothing across a reboot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def process_start_ticks(pid: int) -> Optional[int]:
    """Field 22 of /proc/PID/stat: tells a live process from a later one that reused its pid."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)  # read once per trial start: no buffered file
        try:
            text = os.read(fd, 4096).decode(errors="replace")
        finally:
            os.close(fd)
        return int(text[text.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class ProcessIdentity:
    """A process group as it can be found again after the tuner died.

    pid + kernel start time tell the group's leader from a newcomer with the same pid; host and
    boot id tell this machine (and this boot of it) from any other, so a journal written
    elsewhere or before a reboot can never name a process group here.
    """

    pid: int
    start_ticks: Optional[int]
    host: Optional[str] = None
    boot_id: Optional[str] = None
    #: The Dask worker whose machine runs the group; None: the tuner's machine (see docs/dask.md).
    worker: Optional[str] = None
    #: The launcher's cookie in the environment of the trial and its descendants.
    cookie: Optional[str] = None
    #: The trial's cgroup v2 folder (the cgroup fence), holding every descendant.
    cgroup: Optional[str] = None

    @classmethod
    def of(cls, pid: int, cookie: Optional[str] = None, cgroup: Optional[str] = None) -> "ProcessIdentity":
        return cls(pid, process_start_ticks(pid), socket.gethostname(), boot_id(), cookie=cookie, cgroup=cgroup)

    def to_json(self) -> Dict[str, Any]:
        """pid and start_ticks always; the other keys only when known, as old journals had them."""
        data: Dict[str, Any] = {"pid": self.pid, "start_ticks": self.start_ticks}
        data.update({k: v for k, v in (("host", self.host), ("boot_id", self.boot_id), ("worker", self.worker),
                                       ("cookie", self.cookie), ("cgroup", self.cgroup)) if v is not None})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ProcessIdentity":
        cookie, cgroup = data.get("cookie"), data.get("cgroup")
        return cls(int(data["pid"]), data.get("start_ticks"), data.get("host"), data.get("boot_id"), data.get("worker"),
                   cookie if isinstance(cookie, str) else None, cgroup if isinstance(cgroup, str) else None)

    def is_elsewhere(self) -> bool:
        """True when the identity provably belongs to another machine or an earlier boot."""
        if self.host is not None and self.host != socket.gethostname():
            return True
        return self.boot_id is not None and self.boot_id != boot_id()


def stop_stale_group(identity: ProcessIdentity, grace: float = 2.0) -> bool:
    """Stop what is left of a trial group from a killed tuner run; True if something was found.

    The group is only signalled when it is of this machine and boot (identities from journals
    that predate host and boot id are taken as this machine's), and its leader is gone
    (orphans only) or provably the same process (same start time): never a newcomer that
    happens to have the same pid. Then every process still carrying the trial's cookie is
    stopped too: the descendants that left the group, found even when the old launcher that
    would have stopped them is dead as well.
    """
    if identity.is_elsewhere():
        return False
    found_group = _stop_group(identity, grace)
    holders = list(cookie_holders({0: identity.cookie})) if identity.cookie else []
    members = _stop_cgroup(identity.cgroup, grace) if identity.cgroup else False
    if holders:
        _term_then_kill(holders, grace)
    return found_group or bool(holders) or members


def _stop_cgroup(path: str, grace: float) -> bool:
    """Stop everything in a trial's cgroup left by a dead launcher, and remove the cgroup (and
    the launcher's folder of them, once empty); True if a process was found in it.

    Only a folder named as the launcher names them (`.../autofinetune-PID-HEX/trial-N`) inside
    a cgroup2 mount is touched: the path comes from the journal, which is data.
    """
    folder = Path(path)
    if not (folder.name.startswith("trial-") and folder.parent.name.startswith("autofinetune-")):
        return False
    procs = folder / "cgroup.procs"
    try:
        if not procs.is_file() or not (folder / "cgroup.events").is_file():  # only a cgroup folder has both
            return False
        members = [int(pid) for pid in procs.read_text().split()]
    except (OSError, ValueError):
        return False
    if members:
        _term_then_kill(members, grace)
        try:
            (folder / "cgroup.kill").write_text("1")
        except OSError:
            pass
    for _ in range(100):
        try:
            folder.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.02)
    # The dead launcher's folder, once no other trial of it is left: first its empty cgroups (the
    # one it had parked in for its next start, those of trials already gone); rmdir removes
    # only an empty cgroup, so a running trial's stays.
    for sibling in folder.parent.glob("trial-*"):
        try:
            sibling.rmdir()
        except OSError:
            pass
    try:
        folder.parent.rmdir()
    except OSError:
        pass
    return bool(members)


def _stop_group(identity: ProcessIdentity, grace: float) -> bool:
    pid = identity.pid
    leader_ticks = process_start_ticks(pid)
    if leader_ticks is not None and identity.start_ticks is not None and leader_ticks != identity.start_ticks:
        return False  # the pid now belongs to someone else
    # The old launcher, told to stop, may kill the group before the check below: it was found all the same.
    told_launcher = _stop_old_launcher(pid)
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return told_launcher
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            time.sleep(0.05)
            os.killpg(pid, 0)
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return True


def _term_then_kill(pids: List[int], grace: float) -> None:
    """SIGTERM, then SIGKILL to whichever of `pids` is still alive after `grace` seconds."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _running(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie of someone else's cannot be reaped here)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
        return text[text.rindex(")") + 2:].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def _stop_old_launcher(trial_pid: int) -> bool:
    """SIGTERM the killed run's launcher if it still parents the trial: it then kills every
    descendant it attributes to its trials (see _launcher.py), which the trial's group alone
    misses. True when it was found and told."""
    try:
        with open(f"/proc/{trial_pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
        parent = int(text[text.rindex(")") + 2:].split()[1])
        with open(f"/proc/{parent}/cmdline", "rb") as handle:
            command = handle.read().split(b"\0")
        if os.stat(f"/proc/{parent}").st_uid == os.getuid() and LAUNCHER.encode() in command:
            os.kill(parent, signal.SIGTERM)
            return True
    except (OSError, ValueError, IndexError):
        pass
    return False


# -- starting and stopping one trial ------------------------------------------------------------

def build_env(spec: TrialSpec, cuda_visible_devices: str, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The trial's environment: `base` (this process's by default) + the spec's + the tuner's contract."""
    env = dict(os.environ if base is None else base)
    env.update(spec.env)
    env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    env[RESULT_FILE_ENV] = str(spec.result_path)
    env[TRIAL_TOKEN_ENV] = spec.token
    if spec.intermediate_path is not None:
        env[INTERMEDIATE_FILE_ENV] = str(spec.intermediate_path)
    if spec.stop_path is not None:  # only under a pruner: nothing else ever asks a trial to stop
        env[STOP_FILE_ENV] = str(spec.stop_path)
    env.setdefault("PYTHONUNBUFFERED", "1")  # logs a user can tail while the trial runs
    return env


# -- files a trial can plant things at (docs/security.md: what a trial leaves behind is data) ------

#: Never follow a symlink, never wait for a FIFO's other end, never leak into the trial.
_SAFE_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def file_kind(mode: int) -> str:
    """A file type as a message says it."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISLNK, "symbolic link"),
                       (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def open_regular(path: Any, flags: int = os.O_RDONLY) -> int:
    """A blocking descriptor on the regular file at `path`; OSError for anything else.

    Trials can write next to every file the tuner opens, so a symlink (ELOOP under O_NOFOLLOW)
    or a FIFO, socket or device there is refused instead of followed or waited on.
    """
    try:
        fd = os.open(path, flags | _SAFE_OPEN)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(error.errno, "a symbolic link, not a regular file", str(path)) from None
        if error.errno == errno.ENXIO:  # O_NONBLOCK write-open of a FIFO without reader, or a socket
            raise OSError(error.errno, "a named pipe or socket, not a regular file", str(path)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"a {file_kind(mode)}, not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def log_tail(path: Any, limit: int = 4096) -> str:
    """The last non-empty line of a trial's log (at most 300 characters), read from its end
    (logs can be huge) and only from a regular file; "" when there is none."""
    try:
        fd = open_regular(path)
    except (OSError, ValueError):
        return ""
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        data = os.pread(fd, limit, max(0, size - limit)).decode("utf-8", errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)
    lines = [line.strip() for line in data.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def clear_path(path: Any) -> None:
    """Remove whatever sits at a name the tuner owns (a trial may have planted anything there).

    Never follows a symlink (unlink removes the link; rmtree refuses links and does not follow
    those inside). A folder that cannot be emptied (a trial made it unreadable) is renamed aside.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(path)
        return
    try:
        shutil.rmtree(path)
    except OSError:
        aside = Path(path)
        os.replace(aside, aside.with_name(f".{aside.name}.removed-{secrets.token_hex(4)}"))


def create_log(path: Any) -> int:
    """A new, empty log at `path`, open for writing; whatever sat there before is removed first.

    O_EXCL after the removal: the log is a file this call made, never a link (symbolic or hard)
    to a file elsewhere, nor a FIFO the tuner would block on (docs/security.md).
    """
    clear_path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC | _SAFE_OPEN, 0o666)
    os.set_blocking(fd, True)
    return fd


def prepare_files(spec: TrialSpec) -> int:
    """Before a trial starts: a fresh empty log, and nothing at its result path; returns the
    log open for writing (the caller closes it), so the trial gets the very file made here.

    No earlier attempt's result can be read as this one's, and nothing an earlier attempt
    planted at either name (a FIFO, a symlink, a folder) survives to be opened by the tuner.
    """
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    clear_path(spec.result_path)
    if spec.stop_path is not None:
        clear_path(spec.stop_path)  # an earlier attempt's stop request is not this one's
    if spec.intermediate_path is not None:
        os.close(create_log(spec.intermediate_path))
    return create_log(spec.log_path)


def _say_lost(output: int, argv: List[str], error: Exception) -> None:
    """A trial that could not even be handed to the launcher says so in its own log."""
    try:
        os.write(output, f"autofinetune: could not start {argv[0] if argv else '(nothing)'}: {error}\n".encode())
    except OSError:
        pass


class LauncherLost(OSError):
    """The launcher died (or never started): no trial can start, and running ones are gone."""


class Launcher:
    """The tuner's end of `_launcher.py`: one long-lived parent for all this process's trials.

    Why one launcher and not a supervisor per trial: see _launcher.py (a subreaper sees the
    descendants that leave a trial's process group). Our end of the socket pair is close-on-exec
    and held only here, so the kernel closes it however this process dies, and the launcher then
    kills every trial. Used from one thread (the search's, or one Dask task's).
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self._sock = ours
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                start_new_session=True)  # a terminal's Ctrl-C reaches the tuner only, which stops the trials itself
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._buffer = b""
        self._exits: List[Tuple[int, int]] = []
        #: Answers to start requests not yet taken: id -> (pid, cookie, cgroup) or the failure.
        self._started: Dict[int, Tuple[int, Optional[str], Optional[str]]] = {}
        self._failed: Dict[int, str] = {}
        self._next_id = 0
        self.lost = False
        self._fence: Optional[str] = None

    def wait_ready(self) -> str:
        """What fences the trials' descendants, as the launcher's first line says; LauncherLost
        if it never says it. Waited for only here, so the launcher's start-up (~40 ms: an
        interpreter, cgroup probes) runs while the tuner goes on with its own."""
        if self._fence is None:
            line = self._line(30.0)
            if line is None or not line.startswith("ready "):
                self.close()
                raise LauncherLost("the trial launcher did not start")
            self._fence = line[len("ready "):]
        return self._fence

    def fileno(self) -> int:
        return self._sock.fileno()

    def start(self, argv: List[str], env: Mapping[str, str], cwd: Optional[str], output: int,
              kill_grace: float) -> Tuple[int, int, Optional[str], Optional[str]]:
        """(id, pid, cookie, cgroup) of a trial started with its output to `output`, once the
        launcher says it runs; OSError if it cannot start."""
        ident = self.request_start(argv, env, cwd, output, kill_grace)
        while ident not in self._started and ident not in self._failed:
            line = self._line(None)
            if line is None:
                raise LauncherLost("the trial launcher is gone")
            self._note(line)
        if ident in self._failed:
            raise OSError(self._failed.pop(ident))
        return (ident, *self._started.pop(ident))

    def request_start(self, argv: List[str], env: Mapping[str, str], cwd: Optional[str], output: int, kill_grace: float) -> int:
        """Ask for a trial to be started and return its id at once; the launcher's answer comes
        with the exits (`take_started`, `take_failed`), so the tuner does its bookkeeping while
        the launcher spawns. LauncherLost if the launcher is gone."""
        self._next_id += 1
        ident = self._next_id
        request = json.dumps({"op": "start", "id": ident, "argv": list(argv), "env": dict(env), "cwd": cwd,
                              "grace": kill_grace}) + "\n"
        try:
            data = request.encode()
            sent = socket.send_fds(self._sock, [data], [output])
            if sent < len(data):  # a stream socket may take a large request in parts
                self._sock.sendall(data[sent:])
        except OSError as error:
            self.lost = True
            raise LauncherLost(f"the trial launcher is gone ({error})") from None
        return ident

    def take_started(self) -> Dict[int, Tuple[int, Optional[str], Optional[str]]]:
        """id -> (pid, cookie, cgroup) of the trials the launcher started since the last call."""
        started, self._started = self._started, {}
        return started

    def take_failed(self) -> Dict[int, str]:
        """id -> why, for the start requests the launcher could not carry out."""
        failed, self._failed = self._failed, {}
        return failed

    def signal(self, ident: int, sig: int) -> None:
        try:
            self._sock.sendall((json.dumps({"op": "signal", "id": ident, "sig": int(sig)}) + "\n").encode())
        except OSError:
            self.lost = True

    def exits(self, wait: Optional[float]) -> List[Tuple[int, int]]:
        """(id, status) of trials that ended, waiting up to `wait` seconds (None: forever) for one
        (or for the answer to a start request)."""
        if not self._exits and not self._started and not self._failed and not self.lost:
            line = self._line(wait)
            if line is not None:
                self._note(line)
            while not self.lost:
                line = self._line(0.0)
                if line is None:
                    break
                self._note(line)
        exits, self._exits = self._exits, []
        return exits

    def close(self) -> None:
        """End-of-file for the launcher: it kills whatever is left and exits."""
        self.lost = True  # nothing more comes from it, and nothing more can be asked of it
        try:
            self._sock.close()
        finally:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _note(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        head, _, tail = rest.partition(" ")
        try:
            if word == "ready":  # the first line, if something else read it before `wait_ready` did
                self._fence = rest
            elif word == "exit":
                self._exits.append((int(head), int(tail)))
            elif word == "started":
                pid, cookie, cgroup = (tail.split(" ", 2) + ["", ""])[:3]
                try:
                    path = json.loads(cgroup) if cgroup else None
                except ValueError:
                    path = None
                self._started[int(head)] = (int(pid), cookie or None, path if isinstance(path, str) else None)
            elif word == "failed":
                try:
                    message = str(json.loads(tail))
                except ValueError:
                    message = tail
                self._failed[int(head)] = message
        except ValueError:
            pass  # not a line of ours: the launcher writes nothing else

    def _line(self, wait: Optional[float]) -> Optional[str]:
        """The next line from the launcher, waiting up to `wait` seconds; None on timeout or its end."""
        give_up = None if wait is None else time.monotonic() + wait
        while b"\n" not in self._buffer:
            if self.lost:
                return None
            left = None if give_up is None else max(0.0, give_up - time.monotonic())
            ready, _, _ = select.select([self._sock], [], [], left)
            if not ready:
                return None
            try:
                data = self._sock.recv(1 << 16)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                self.lost = True
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")


class TrialProcess:
    """A started trial: its launcher and id, and the one state machine that stops it.

    Stopping is TERM to the trial and every descendant the launcher attributes to it, then KILL
    once the grace is over; a timeout, the tuner's shutdown and a pruning are the same stop
    with different reasons. A pruning starts with a request instead of a signal: the tuner
    creates the trial's stop file, which `report_intermediate_result` reads, and TERM follows
    `prune_grace` seconds later if the trial has not ended by then (docs/pruning.md). The stop
    file is looked for here, where the trial runs, so a Dask worker enforces it as the tuner's
    machine does. The owner waits for the launcher's exit reports, calls `enforce` at
    `wakeup()` and `finish` once the trial has exited.
    """

    #: Seconds between looks for the stop file (one stat each).
    STOP_FILE_POLL = 0.2

    def __init__(self, launcher: Launcher, ident: int, pid: Optional[int], started: float, timeout: Optional[float],
                 kill_grace: float, stop_path: Optional[Path] = None, prune_grace: float = 30.0) -> None:
        self.launcher = launcher
        self.ident = ident
        self.pid = pid
        self.started = started
        self.deadline = started + timeout if timeout else None
        self.kill_grace = kill_grace
        self.stop_path = stop_path
        self.prune_grace = prune_grace
        #: The random mark in the environment of the trial and its descendants (_launcher.py),
        #: journaled so a resume can find them even if this launcher is gone.
        self.cookie: Optional[str] = None
        #: The trial's own cgroup v2 folder, where the launcher has the cgroup fence; journaled too.
        self.cgroup: Optional[str] = None
        self.stop_reason: Optional[Status] = None  # TIMEOUT, INTERRUPTED or PRUNED once asked to stop
        self.term_at: Optional[float] = None  # a pruning's TERM, once its grace is over
        self.kill_at: Optional[float] = None
        self._next_stop_look = started
        self._termed = False
        self._killed = False

    @classmethod
    def start(cls, launcher: Launcher, argv: List[str], env: Mapping[str, str], cwd: Optional[str], output: int,
              timeout: Optional[float], kill_grace: float, stop_path: Optional[Path] = None,
              prune_grace: float = 30.0) -> "TrialProcess":
        """Start the trial through `launcher`, its output to the file descriptor `output`; OSError if it cannot start."""
        started = time.monotonic()
        try:
            ident, pid, cookie, cgroup = launcher.start(argv, env, cwd, output, kill_grace)
        except LauncherLost as error:
            _say_lost(output, argv, error)
            raise
        trial = cls(launcher, ident, pid, started, timeout, kill_grace, stop_path, prune_grace)
        trial.started_as(pid, cookie, cgroup)
        return trial

    @classmethod
    def begin(cls, launcher: Launcher, argv: List[str], env: Mapping[str, str], cwd: Optional[str], output: int,
              timeout: Optional[float], kill_grace: float, stop_path: Optional[Path] = None,
              prune_grace: float = 30.0) -> "TrialProcess":
        """Like `start`, without waiting for the launcher's answer: `pid` is None until the owner
        hands it over (`started_as`), from `Launcher.take_started`. Signals work meanwhile: the
        launcher handles requests in order, so a stop sent now reaches the trial once it runs."""
        started = time.monotonic()
        try:
            ident = launcher.request_start(argv, env, cwd, output, kill_grace)
        except LauncherLost as error:
            _say_lost(output, argv, error)
            raise
        return cls(launcher, ident, None, started, timeout, kill_grace, stop_path, prune_grace)

    def started_as(self, pid: int, cookie: Optional[str], cgroup: Optional[str]) -> None:
        self.pid, self.cookie, self.cgroup = pid, cookie, cgroup

    def request_stop(self, reason: Status, grace: float, now: float) -> None:
        """TERM the trial now and KILL it `grace` seconds later; a later request can only shorten the grace."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if not self._termed:
            self._term(now, grace)
        elif self.kill_at is not None:
            self.kill_at = min(self.kill_at, now + grace)

    def request_prune(self, now: float) -> None:
        """The pruner's stop: the trial was asked (its stop file exists); TERM after `prune_grace`."""
        if self.stop_reason is None:
            self.stop_reason = PRUNED
            self.term_at = now + self.prune_grace

    def enforce(self, now: float) -> None:
        """Act on whatever is due: a stop file starts a pruning, the timeout starts a stop, the
        end of a pruning's grace TERMs, the end of the kill grace KILLs."""
        if self.stop_reason is None and self.stop_path is not None and now >= self._next_stop_look:
            self._next_stop_look = now + self.STOP_FILE_POLL
            if os.path.lexists(self.stop_path):
                self.request_prune(now)
        if self.stop_reason is None and self.deadline is not None and now >= self.deadline:
            self.request_stop(TIMEOUT, self.kill_grace, now)
        if self.term_at is not None and now >= self.term_at:
            self._term(now, self.kill_grace)
        if self.kill_at is not None and now >= self.kill_at:
            self._kill()

    def wakeup(self) -> Optional[float]:
        """When `enforce` next has something to do; None: only the trial's own end."""
        if self.stop_reason is not None:
            return self.term_at if self.term_at is not None else self.kill_at
        if self.stop_path is not None:
            return self._next_stop_look if self.deadline is None else min(self._next_stop_look, self.deadline)
        return self.deadline

    def kill_now(self) -> None:
        """KILL the trial and its descendants at once, no grace (the second Ctrl-C)."""
        if self.stop_reason is None:
            self.stop_reason = INTERRUPTED
        self._kill()

    def _term(self, now: float, grace: float) -> None:
        self.term_at = None
        self._termed = True
        self.kill_at = now + grace
        self.launcher.signal(self.ident, signal.SIGTERM)

    def _kill(self) -> None:
        self.term_at = None
        self.kill_at = None
        if not self._killed:
            self._killed = True
            self.launcher.signal(self.ident, signal.SIGKILL)

    def finish(self, status: int) -> int:
        """The trial's own exit status, as the launcher reported it (it stops the leftovers itself)."""
        return status


# -- intermediate results ------------------------------------------------------------------------

#: Reports kept per trial attempt: beyond this a trial's further reports are ignored (said once),
#: so a trial reporting every batch cannot grow the journal and the tuner's memory without end.
MAX_REPORTS = 10_000
#: Bytes of a trial's intermediate file read per look, and the longest line taken as a report.
INTERMEDIATE_READ_LIMIT = 1 << 18
INTERMEDIATE_LINE_LIMIT = 1024
#: The largest step taken (a step is a count of epochs or batches, not an arbitrary number).
MAX_STEP = 10**12


class IntermediateReader:
    """Reads what a trial appended to its intermediate file since the last look (docs/pruning.md).

    Only whole lines count (a line still being written is read next time), only from a regular
    file, at most INTERMEDIATE_READ_LIMIT bytes per look, and only lines carrying the trial's
    token: the file lies in the output dir, where any trial can write.
    """

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self.token = token
        self.offset = 0
        self.count = 0
        self.rejected = 0
        self.first_problem = ""
        #: What the search has said about this reader (each said once per attempt).
        self.said_rejected = False
        self.said_full = False
        self._partial = b""

    def read(self) -> List[Tuple[int, float]]:
        """The (step, score) pairs appended since the last call, in the order written."""
        if self.count >= MAX_REPORTS:
            return []
        try:
            if os.stat(self.path).st_size <= self.offset:
                return []  # nothing new: one stat, not an open (most looks, and every trial that never reports)
            fd = open_regular(self.path)
        except OSError:
            return []
        try:
            data = os.pread(fd, INTERMEDIATE_READ_LIMIT, self.offset)
        except OSError:
            data = b""
        finally:
            os.close(fd)
        if not data:
            return []
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > INTERMEDIATE_LINE_LIMIT:
            self._partial = b""
            self._reject("a line longer than %d bytes" % INTERMEDIATE_LINE_LIMIT)
        found: List[Tuple[int, float]] = []
        for line in lines:
            if not line.strip():
                continue
            report = self._parse(line)
            if report is not None and self.count < MAX_REPORTS:
                self.count += 1
                found.append(report)
        return found

    def _parse(self, line: bytes) -> Optional[Tuple[int, float]]:
        if len(line) > INTERMEDIATE_LINE_LIMIT:
            return self._reject("a line longer than %d bytes" % INTERMEDIATE_LINE_LIMIT)
        try:
            data = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._reject("a line that is not JSON")
        if not isinstance(data, dict):
            return self._reject("a line that is not a JSON object")
        if data.get("token") != self.token:
            return self._reject("a line without this trial's token")
        step, score = data.get("step"), data.get("score")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
            return self._reject(f"step {_quote(step)} (a whole number from 0 to {MAX_STEP} is expected)")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            return self._reject(f"score {_quote(score)} (a number is expected)")
        try:
            return step, float(score)
        except OverflowError:
            return step, math.inf if score > 0 else -math.inf

    def _reject(self, what: str) -> None:
        self.rejected += 1
        if not self.first_problem:
            self.first_problem = what
        return None


# -- judging ------------------------------------------------------------------------------------

def read_result_text(result_path: Any) -> Tuple[Optional[str], str]:
    """The result file's text, or None with the reason (NO_REPORT when there is no file).

    The raw-reading half of `read_result`, split off so a Dask worker reads the file where it
    was written and the tuner parses the text with the trial's token. Only a regular file is
    read, and at most RESULT_LIMIT + 1 bytes of it: the trial controls what sits at this path.
    """
    try:
        fd = open_regular(result_path)
    except FileNotFoundError:
        return None, NO_REPORT
    except OSError as error:
        return None, f"unreadable result file {result_path}: {error.strerror or error}"
    try:
        chunks: List[bytes] = []
        left = RESULT_LIMIT + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as error:
        return None, f"unreadable result file {result_path}: {error.strerror or error}"
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > RESULT_LIMIT:
        return None, f"result file {result_path} is larger than {RESULT_LIMIT} bytes"
    return data.decode("utf-8", errors="replace"), ""


def token_digest(token: str) -> str:
    """What the journal keeps of a trial's token: enough to recognise its result file on
    --resume, not enough to sign one (the journal is readable by trials; docs/security.md)."""
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).hexdigest()


def read_result(result_path: Any, token: Optional[str], token_sha256: Optional[str] = None) -> Report:
    """The reported score, or None with the reason; a foreign token counts as no report.

    `token_sha256` stands in for the token when only its digest is known (a resume)."""
    text, why = read_result_text(result_path)
    if text is None:
        return None, why
    return parse_result(text, result_path, token, token_sha256)


def _nesting_depth(text: str) -> int:
    """How deep JSON text nests, strings aside; cheap when it is shallow (the usual report)."""
    if text.count("[") + text.count("{") <= RESULT_MAX_DEPTH:
        return 0  # cannot be deeper than the limit
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > RESULT_MAX_DEPTH:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


def _parse_int(digits: str) -> Any:
    return int(digits) if len(digits) <= RESULT_MAX_INT_DIGITS else float(digits)


def _cut(text: str) -> str:
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + "..."


def _quote(value: Any) -> str:
    """repr of a reported value, cut short: a trial chooses how long (or how deep) it is."""
    try:
        return _cut(repr(value))
    except (RecursionError, ValueError, OverflowError):  # ValueError: an int past Python's digit limit
        return f"<{type(value).__name__}>"


def parse_result(text: str, result_path: Any, token: Optional[str], token_sha256: Optional[str] = None) -> Report:
    """`read_result` for a result file's text read elsewhere (a Dask worker returns it).

    Never raises for anything in the text: a resume re-reads this file, so an exception here
    would stop every later `--resume` too.
    """
    if _nesting_depth(text) > RESULT_MAX_DEPTH:
        return None, f"unreadable result file {result_path}: JSON nested deeper than {RESULT_MAX_DEPTH} levels"
    try:
        record = json.loads(text, parse_int=_parse_int)
    except (ValueError, RecursionError, OverflowError) as error:
        return None, f"unreadable result file {result_path}: {_cut(str(error))}"
    if not isinstance(record, dict) or "score" not in record:
        return None, f"result file {result_path} has no 'score'"
    written = record.get("token")
    if token is not None and written != token:
        return None, f"result file {result_path} was not written by this trial"
    if token_sha256 is not None and not (isinstance(written, str) and token_digest(written) == token_sha256):
        return None, f"result file {result_path} was not written by this trial"
    return record["score"], ""


def judge_score(raw: Any) -> Tuple[Optional[float], str]:
    """A valid score is a finite number at most 1 (higher is better); anything else is invalid.

    Never raises: `raw` is whatever a trial reported (an int too big for a float included).
    """
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None, f"reported score {_quote(raw)} is not a number"
    try:
        value = float(raw)
    except OverflowError:
        return None, f"reported score {_quote(raw)} is not finite (too large for a float)"
    if math.isnan(value) or math.isinf(value):
        return None, f"reported score {value!r} is not finite"
    if value > 1.0:
        hint = f"; report a fraction, {value / 100:.3g}, not {value:g}" if value <= 100.0 else ""
        return None, f"reported score {value!r} is above 1 (scores must lie in (-inf, 1]){hint}"
    return value, ""


def _signal_name(number: int) -> str:
    """SIGKILL for 9; the number for signals without a name (real-time ones, SIGRTMIN+n)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def judge_trial(spec: TrialSpec, exit_code: int, stop_reason: Optional[Status],
                read_report: Callable[[], Report]) -> Tuple[Status, Optional[float], str]:
    """A finished trial's status, score and message from how it ended and what it reported.

    `stop_reason` is TIMEOUT, INTERRUPTED or PRUNED when the trial was stopped; `read_report` is
    only called for a trial that exited 0 on its own, so a stopped trial's report never counts
    (a pruned trial that saved and exited when asked is pruned, whatever it reported last).
    """
    if stop_reason == PRUNED:
        return PRUNED, None, "stopped early by the pruner"
    if stop_reason == TIMEOUT:
        return TIMEOUT, None, f"stopped after the {spec.timeout:g} s timeout"
    if stop_reason == INTERRUPTED:
        return INTERRUPTED, None, "stopped by the tuner's shutdown"
    if exit_code in INTERRUPTED_EXIT_CODES:
        return INTERRUPTED, None, f"the trial exited with status {exit_code} (interrupted)"
    if exit_code != 0:
        if exit_code < 0:
            return FAILED, None, f"killed by signal {_signal_name(-exit_code)}"
        return FAILED, None, f"exit code {exit_code}"
    raw, why = read_report()
    if why:
        return FAILED, None, why
    score, why = judge_score(raw)
    if why:
        return INVALID, None, why
    return OK, score, ""
