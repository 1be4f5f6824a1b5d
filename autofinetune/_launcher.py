"""One long-lived parent for every trial of a tuner (or of a Dask task): it stops what a trial leaves.

Why: a per-trial process group misses whatever leaves it — a grandchild started with a new
session, a double-forked daemon, a trial that calls setpgid itself — and those outlived the
trial and the tuner. This launcher is made a child subreaper, so every orphaned descendant of a
trial comes back to it whatever session or group it moved to, and each trial carries a random
cookie in its environment (AUTOFINETUNE_TRIAL_COOKIE) by which the launcher finds its
descendants in /proc, as Jenkins' ProcessTreeKiller does. Where the cgroup v2 hierarchy is
writable, each trial also gets a cgroup of its own, the tightest fence Linux has: every
descendant is in it whatever it does to its session, group or environment, and the launcher
reads the members from `cgroup.procs` instead of scanning /proc (docs/dask.md, "Process fence").

The tuner holds the other end of a socket pair (the lifeline). On end-of-file there — which the
kernel delivers however the tuner died, SIGKILL included — or on PR_SET_PDEATHSIG's SIGTERM,
every trial and every descendant carrying a cookie is SIGKILLed at once: nobody is left to
wait for a grace. When a trial ends on its own, its status is written at once and its leftovers
get SIGTERM, then SIGKILL after the trial's kill grace.

Standard library only; run as `python -I -S _launcher.py FD PARENT_PID`. Protocol, one line
each way: in, JSON `{"op": "start", "id", "argv", "env", "cwd", "grace"}` with the trial's log
descriptor attached (SCM_RIGHTS), or `{"op": "signal", "id", "sig"}`; out, `ready FENCE`,
`started ID PID COOKIE JSON-CGROUP-PATH-OR-null`, `failed ID JSON-MESSAGE`, `exit ID STATUS` (STATUS negative for a signal).
"""
import errno
import gc
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Optional

COOKIE_ENV = "AUTOFINETUNE_TRIAL_COOKIE"
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
#: How often the final SIGKILL pass re-scans /proc: a descendant forking while it is being
#: killed is found by the next pass.
KILL_PASSES = 3


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError, ImportError):
        return False


def _proc_readable() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/environ")


def cookie_holders(cookies) -> dict:
    """pid -> id of every process carrying one of `cookies` (id -> cookie) in its environment.

    The one /proc scan for cookies: the launcher's at each trial's end, and runner's when
    --resume stops what a dead launcher left. No owner check: a cookie is 128 random bits that
    only a trial's descendants inherit, and /proc/PID/environ of another user's process cannot
    be read anyway. One open and read per process (docs/overhead.md).
    """
    found = {}
    if not cookies:
        return found
    needles = {(COOKIE_ENV + "=" + cookie + "\0").encode(): ident for ident, cookie in cookies.items()}
    me = str(os.getpid())
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or name == me:
            continue
        try:
            fd = os.open(f"/proc/{name}/environ", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            chunks = [b"\0"]
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError:
            continue
        finally:
            os.close(fd)
        data = b"".join(chunks)
        for needle, ident in needles.items():
            if b"\0" + needle in data:
                found[int(name)] = ident
                break
    return found


class Cgroups:
    """One cgroup v2 per trial, under one folder of this launcher's, where the hierarchy lets us.

    A trial is started *inside* its cgroup, so not even a child the trial forks at once is
    missed (moving the trial after the spawn would race with that fork). Moving a process
    (a write to `cgroup.procs`) waits for an RCU grace period, ~10 ms here against ~0.1 ms for
    a posix_spawn (docs/overhead.md), so no move is ever on a start's path:

    * the launcher *parks* in a fresh, empty cgroup ahead of time, a thread of its own making
      the move while the loop goes on; a start then posix_spawns the trial right there (the
      trial is born in that cgroup, which becomes its own), and the thread moves the launcher
      on into the next fresh one;
    * a start that comes while the launcher is still moving (a burst of starts) uses clone3's
      CLONE_INTO_CGROUP (Linux 5.7+) to create the trial directly in a new cgroup, or, where
      the kernel or a seccomp filter refuses clone3, waits for the move.

    Until the thread has moved it out, the launcher shares the newest trial's cgroup: it is
    left out of `members`, and a kill of that cgroup waits for the move. No controller is
    enabled, so the cgroups cost nothing but a folder. Anything failing at the probe (no cgroup2
    mount, no write permission, a systemd slice that is not delegated) leaves the fence to the
    cookie.
    """

    def __init__(self) -> None:
        self.home = ""  # the cgroup this launcher was started in (and returns to at the end)
        self.root = ""  # our folder of trial cgroups; "" when cgroups are not used
        self.can_kill = False
        self.clone_into = _clone3_available()  # False once the kernel has refused it
        self._made = 0
        self._cond = threading.Condition()
        self._parked: Optional[str] = None  # an empty cgroup this launcher is in, ready for a start
        self._inside: Optional[str] = None  # a trial's cgroup this launcher is still in (moving out)
        self._park_wanted = False
        self._park_failed = False
        self._closing = False
        self._mover: Optional[threading.Thread] = None
        if os.environ.get("AUTOFINETUNE_NO_CGROUP"):
            return  # the cookie fence alone (tests, or a system where cgroups must not be touched)
        try:
            home = _own_cgroup2()
            root = os.path.join(home, f"autofinetune-{os.getpid()}-{os.urandom(4).hex()}")
            os.mkdir(root)
        except OSError:
            return
        self.home, self.root = home, root
        try:
            probe = self.make()
        except OSError:
            self.close()
            return
        try:
            self._join(probe)
        except OSError:
            self.remove(probe)
            self.close()
            return
        # In the probe: it is the first parked cgroup (no move back, no wait)
        self._parked = probe
        self.can_kill = os.path.exists(os.path.join(root, "cgroup.kill"))
        self._mover = threading.Thread(target=self._move_on, name="autofinetune-cgroup-mover", daemon=True)
        self._mover.start()

    @property
    def active(self) -> bool:
        return bool(self.root)

    def make(self) -> str:
        """A new, empty trial cgroup (named by this launcher's count: the tuner learns the path)."""
        with self._cond:
            self._made += 1
            name = f"trial-{self._made}"
        path = os.path.join(self.root, name)
        os.mkdir(path)
        return path

    def _join(self, path: str) -> None:
        fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, b"0")  # 0: the writing process itself
        finally:
            os.close(fd)

    def _move_on(self) -> None:
        """The mover thread: on request, make a fresh cgroup and move this process into it."""
        while True:
            with self._cond:
                while not self._park_wanted and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                self._park_wanted = False
            try:
                path = self.make()
                self._join(path)
            except OSError:
                with self._cond:
                    self._park_failed = True  # starts use clone3 (or none: see spawn)
                    self._cond.notify_all()
                return
            with self._cond:
                self._inside = None  # out of the last trial's cgroup
                self._parked = path
                self._cond.notify_all()

    def spawn(self, argv, env, cwd, log_fd: int) -> "tuple[int, str]":
        """Start a trial in a cgroup of its own; (its pid, that cgroup)."""
        with self._cond:
            if self._parked is None and not self.clone_into and not self._park_failed:
                while self._parked is None and not self._park_failed:
                    self._cond.wait()  # no clone3 here: wait for the move (a burst of starts)
            parked, self._parked = self._parked, None
            if parked is not None:
                self._inside = parked
        if parked is not None:
            try:
                pid = _spawn(argv, env, cwd, log_fd)
            except OSError:
                with self._cond:  # nothing started: still an empty cgroup, still parked
                    self._inside, self._parked = None, parked
                raise
            with self._cond:
                self._park_wanted = True
                self._cond.notify_all()
            return pid, parked
        if not self.clone_into:
            raise OSError("the trial's cgroup could not be joined")
        path = self.make()
        try:
            return _clone_into(path, argv, env, cwd, log_fd), path
        except _CloneRefused:
            self.remove(path)
            with self._cond:
                self.clone_into = False  # an older kernel or a seccomp filter: parking alone from now on
            return self.spawn(argv, env, cwd, log_fd)

    def members(self, path: str) -> list:
        """The processes in `path`, this launcher left out (it may still be moving out of it)."""
        me = os.getpid()
        try:
            with open(os.path.join(path, "cgroup.procs")) as handle:
                return [pid for pid in (int(word) for word in handle.read().split()) if pid != me]
        except (OSError, ValueError):
            return []

    def _wait_until_out_of(self, path: str) -> None:
        with self._cond:
            while self._inside == path and not self._park_failed and not self._closing:
                self._cond.wait(0.5)

    def kill(self, path: str) -> None:
        """SIGKILL everything in `path`, at once where the kernel has cgroup.kill (5.14+)."""
        self._wait_until_out_of(path)  # cgroup.kill would kill this launcher too
        if self.can_kill and self._inside != path:
            try:
                fd = os.open(os.path.join(path, "cgroup.kill"), os.O_WRONLY)
                try:
                    os.write(fd, b"1")
                finally:
                    os.close(fd)
                return
            except OSError:
                pass
        for pid in self.members(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def remove(self, path: str) -> bool:
        """Remove an empty trial cgroup; False while processes (or zombies, or this launcher) remain in it."""
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def close(self, reap=lambda: None) -> None:
        """Back to the home cgroup; kill what is left in every trial cgroup and remove them all
        (`reap`: the launcher's, since a killed child stays in its cgroup as a zombie until it
        is reaped)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._mover is not None:
            self._mover.join()
            self._mover = None
        if self.home:
            try:
                self._join(self.home)
            except OSError:
                pass
        with self._cond:
            self._inside = self._parked = None
        if self.root:
            for name in os.listdir(self.root) if os.path.isdir(self.root) else []:
                path = os.path.join(self.root, name)
                if os.path.isdir(path):
                    self.kill(path)
                    for _ in range(100):
                        reap()
                        if self.remove(path):
                            break
                        time.sleep(0.02)
            self.remove(self.root)
            self.root = ""


def _own_cgroup2() -> str:
    """The folder of this process's cgroup in the cgroup v2 hierarchy; OSError when there is none."""
    with open("/proc/self/cgroup") as handle:
        relative = next((line.strip()[3:] for line in handle if line.startswith("0::")), None)
    if relative is None:
        raise OSError("no cgroup v2 membership")
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                mount_root, mount_point = left.split()[3], left.split()[4]
                if relative == mount_root or relative.startswith(mount_root.rstrip("/") + "/"):
                    inside = relative[len(mount_root.rstrip("/")):].lstrip("/")
                    path = os.path.join(mount_point, inside)
                    if os.path.isdir(path):
                        return path
    raise OSError("the cgroup v2 hierarchy is not mounted here")


class Launcher:
    def __init__(self, sock: socket.socket, parent: int) -> None:
        self.sock = sock
        self.parent = parent
        self.trials = {}  # pid -> (id, cookie, grace): running trials
        self.cookies = {}  # id -> cookie, for running trials and those whose leftovers are being stopped
        self.groups = {}  # id -> the trial's own process group (its pid)
        self.cgroup_of = {}  # id -> the trial's cgroup folder (cgroup fence only)
        self.empty_later = {}  # id -> a killed trial's cgroup, removed once its processes are gone
        self.cleanups = {}  # id -> when its leftovers get SIGKILL
        self.buffer = b""
        self.fds = []
        self.tuner_gone = False
        subreaper = _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        self.proc = _proc_readable()
        self.cgroups = Cgroups()
        if self.cgroups.active:
            self.fence = "cgroup v2 (one per trial)" + (" + subreaper" if subreaper else "")
        elif subreaper and self.proc:
            self.fence = "subreaper + environment cookie"
        elif self.proc:
            self.fence = "environment cookie (no subreaper: a descendant that drops the cookie is not stopped)"
        else:
            self.fence = "process groups only (no prctl or /proc: a descendant that leaves the trial's group is not stopped)"

    # -- finding a trial's descendants ------------------------------------------------------------
    def holders(self, cookies) -> dict:
        """pid -> id of every process carrying one of `cookies` (id -> cookie) in its environment."""
        return cookie_holders(cookies) if self.proc else {}

    def children(self) -> list:
        """Every live child of this launcher: trials, and orphaned descendants reparented to it."""
        if not self.proc:
            return []
        me, found = os.getpid(), []
        try:
            with open(f"/proc/{me}/task/{me}/children") as handle:
                return [int(pid) for pid in handle.read().split()]
        except OSError:
            pass
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat", "rb") as handle:
                        text = handle.read().decode(errors="replace")
                    if int(text[text.rindex(")") + 2:].split()[1]) == me:
                        found.append(int(name))
                except (OSError, ValueError, IndexError):
                    continue
        return found

    def signal_trials(self, idents, sig: int) -> bool:
        """`sig` to each trial's own group and every process carrying its cookie; True when
        some process got it (False: nothing of these trials is left)."""
        passes = KILL_PASSES if sig == signal.SIGKILL else 1
        signalled = False
        for _ in range(passes):
            found_group = False
            for ident in idents:
                group = self.groups.get(ident)
                if group is not None:
                    for target in (lambda: os.killpg(group, sig), lambda: os.kill(group, sig)):
                        try:
                            target()
                            found_group = True
                        except OSError:
                            pass
            if self.cgroups.active:
                found = {}
                for ident in idents:
                    path = self.cgroup_of.get(ident)
                    if path is None:
                        continue
                    if sig == signal.SIGKILL and self.cgroups.members(path):
                        self.cgroups.kill(path)
                        found_group = True
                    else:
                        found.update(dict.fromkeys(self.cgroups.members(path), ident))
            else:
                found = self.holders({i: self.cookies[i] for i in idents if i in self.cookies})
            if not self.cgroups.active and set(idents) >= set(self.cookies):
                # Orphans that came back to this subreaper without the cookie (a descendant that
                # cleared its environment) belong to these trials when no other trial is known.
                found.update(dict.fromkeys(self.children()))
            for pid in found:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            signalled = signalled or found_group or bool(found)
            self.reap()
            if not found and not found_group and sig == signal.SIGKILL:
                break
        return signalled

    # -- the tuner's requests -----------------------------------------------------------------------
    def send(self, line: str) -> None:
        try:
            self.sock.sendall((line + "\n").encode())
        except OSError:
            self.tuner_gone = True

    def start(self, request: dict, fd) -> None:
        ident = int(request["id"])
        cookie = os.urandom(16).hex()
        env = dict(request.get("env") or {})
        env[COOKIE_ENV] = cookie
        argv = list(request["argv"])
        if fd is None:
            self.send(f"failed {ident} {json.dumps('no log descriptor came with the request')}")
            return
        try:
            if not argv:
                raise OSError("empty command line")
            cwd = request.get("cwd")
            if cwd:
                os.stat(cwd)  # a missing cwd is a start failure, as with subprocess
            cgroup = None
            if self.cgroups.active:
                pid, cgroup = self.cgroups.spawn(argv, env, cwd, fd)
            else:
                pid = _spawn(argv, env, cwd, fd)
        except OSError as error:
            message = f"could not start {argv[0] if argv else '(nothing)'}: {error}"
            try:
                os.write(fd, f"autofinetune: {message}\n".encode())
            except OSError:
                pass
            self.send(f"failed {ident} {json.dumps(str(error))}")
            return
        finally:
            os.close(fd)
        self.trials[pid] = (ident, float(request.get("grace", 5.0)))
        self.cookies[ident] = cookie
        self.groups[ident] = pid
        if cgroup is not None:
            self.cgroup_of[ident] = cgroup
        self.send(f"started {ident} {pid} {cookie} {json.dumps(cgroup)}")

    def handle(self, request: dict, fd) -> None:
        if request.get("op") == "start":
            self.start(request, fd)
        elif request.get("op") == "signal":
            ident = int(request["id"])
            if ident in self.cookies:
                self.signal_trials([ident], int(request["sig"]))

    def read(self) -> None:
        try:
            # close-on-exec at once: a log queued for a later start must not leak into this one's trial
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, 64, getattr(socket, "MSG_CMSG_CLOEXEC", 0))
        except InterruptedError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self.tuner_gone = True
            return
        self.fds.extend(fds)
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            try:
                request = json.loads(line)
            except ValueError:
                continue
            fd = self.fds.pop(0) if request.get("op") == "start" and self.fds else None
            self.handle(request, fd)

    # -- children -----------------------------------------------------------------------------------
    def reap(self) -> None:
        """Wait for every child that ended: trials, and orphans that came back to this subreaper."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            trial = self.trials.pop(pid, None)
            if trial is None:
                continue
            ident, grace = trial
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            self.send(f"exit {ident} {code}")
            if self.signal_trials([ident], signal.SIGTERM):
                self.cleanups[ident] = time.monotonic() + grace  # SIGKILL for what is left after the grace
            else:
                # Nothing of the trial is left: every descendant is in its cgroup, carries the
                # cookie, is in its group, or came back to this subreaper; none can appear now.
                self.forget(ident)

    def due_cleanups(self) -> None:
        now = time.monotonic()
        due = [ident for ident, at in self.cleanups.items() if at <= now]
        if due:
            self.signal_trials(due, signal.SIGKILL)
            for ident in due:
                del self.cleanups[ident]
                self.forget(ident)
        for ident, path in list(self.empty_later.items()):
            if self.cgroups.remove(path):
                del self.empty_later[ident]

    def forget(self, ident) -> None:
        """The trial and all of its processes are gone: drop what the launcher kept of it."""
        self.cookies.pop(ident, None)
        self.groups.pop(ident, None)
        path = self.cgroup_of.pop(ident, None)
        if path is not None and not self.cgroups.remove(path):
            self.empty_later[ident] = path  # killed processes leave the cgroup a moment later

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)
        signal.signal(signal.SIGTERM, self._on_term)
        # A terminal's Ctrl-C is the tuner's to handle; SIGPIPE and SIGXFSZ must not kill the
        # launcher (Python ignores them). Caught by a handler that does nothing rather than
        # ignored: an exec resets a caught signal to its default and keeps an ignored one
        # ignored, so a trial starts with all three at their defaults without a reset in between.
        for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, _ignore)
        gc.freeze()  # the clone3 child then writes fewer shared pages before its exec (docs/overhead.md)
        if os.getppid() != self.parent:
            self.tuner_gone = True  # the tuner died before PR_SET_PDEATHSIG was set
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "sock")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        self.send(f"ready {self.fence}")
        while not self.tuner_gone:
            timeout = max(0.0, min(self.cleanups.values()) - time.monotonic()) if self.cleanups else None
            if self.empty_later:  # a killed trial's cgroup empties as its processes are reaped
                timeout = 0.05 if timeout is None else min(timeout, 0.05)
            for key, _ in selector.select(timeout):
                if key.data == "wake":
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except OSError:
                        pass
                else:
                    self.read()
            self.reap()
            self.due_cleanups()
        # The tuner is gone: nobody will wait for a grace or read a status.
        self.signal_trials(list(self.cookies), signal.SIGKILL)
        self.cgroups.close(self.reap)
        return 0

    def _on_term(self, signum, frame) -> None:
        self.tuner_gone = True


def _ignore(signum, frame) -> None:
    """A handler that does nothing: the signal still wakes the loop (set_wakeup_fd)."""


#: Signals a trial starts with at their default action, as subprocess's restore_signals does
#: (this launcher catches all five; see Launcher.run).
RESETS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ)
SYS_CLONE3 = 435  # the same number on every architecture (the unified syscall table, Linux 5.3+)
CLONE_INTO_CGROUP = 0x200000000


class _CloneRefused(Exception):
    """clone3 with CLONE_INTO_CGROUP is not available here; the caller starts the trial another way."""


class _Clone3:
    """clone3 through ctypes, set up once: the library handle and the argument structure."""

    def __init__(self) -> None:
        import ctypes

        class CloneArgs(ctypes.Structure):
            _fields_ = [(name, ctypes.c_uint64) for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal",
                                                              "stack", "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]

        self.libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across the call
        self.libc.syscall.restype = ctypes.c_long
        self.args = CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD)
        self.size = ctypes.sizeof(CloneArgs)
        self.pointer = ctypes.byref(self.args)
        self.get_errno = ctypes.get_errno

    def call(self, cgroup_fd: int) -> "tuple[int, int]":
        """clone3 into the cgroup open at `cgroup_fd`: (the child's pid, 0 in the child, or -1; errno)."""
        self.args.cgroup = cgroup_fd
        pid = self.libc.syscall(SYS_CLONE3, self.pointer, self.size)
        return pid, (self.get_errno() if pid < 0 else 0)


_clone3: Optional[_Clone3] = None


def _get_clone3() -> _Clone3:
    global _clone3
    if _clone3 is None:
        try:
            _clone3 = _Clone3()
        except (OSError, AttributeError, ImportError) as error:
            raise _CloneRefused(str(error))
    return _clone3


def _clone3_available() -> bool:
    """Whether clone3 takes CLONE_INTO_CGROUP here, asked without creating a process: with a
    descriptor that is not open, a kernel that knows the flag answers EBADF; one before 5.7
    (E2BIG, EINVAL), before 5.3 or behind a seccomp filter (ENOSYS, EPERM) answers otherwise.
    AUTOFINETUNE_NO_CLONE3 turns it off (the tests use it to drive the other way)."""
    if not sys.platform.startswith("linux") or os.environ.get("AUTOFINETUNE_NO_CLONE3"):
        return False
    try:
        pid, error = _get_clone3().call((1 << 31) - 1)
    except _CloneRefused:
        return False
    if pid == 0:
        os._exit(127)  # cannot happen (the descriptor is not open), but a child must never run on
    return pid < 0 and error == errno.EBADF


def _clone_into(path: str, argv, env, cwd, log_fd: int) -> int:
    """fork + exec with the child created inside the cgroup `path` (clone3, CLONE_INTO_CGROUP).

    The child runs a few lines of Python between the clone and the exec, as after os.fork().
    Its only other thread (the cgroup mover) holds no lock the child needs: the clone runs with
    the GIL held (PyDLL), so the mover is waiting for the GIL or inside a plain syscall; and the
    child only sets its group, signals, descriptors and folder, then execs or `_exit`s -- it
    never returns into the launcher's loop. The exec's outcome comes back on a close-on-exec
    pipe: empty means the trial is running. Raises _CloneRefused when the kernel (before 5.7)
    or a seccomp filter refuses clone3, OSError when the trial itself cannot start.
    """
    clone3 = _get_clone3()
    group = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    reader, writer = os.pipe()  # both close-on-exec
    try:
        pid, error = clone3.call(group)
        if pid == 0:
            _exec_child(argv, env, cwd, log_fd, writer)  # never returns
    finally:
        os.close(group)
        os.close(writer)
    try:
        if pid < 0:
            raise _CloneRefused(os.strerror(error))
        report = b""
        while True:
            chunk = os.read(reader, 256)  # EOF: the exec closed the pipe, or the child died
            if not chunk:
                break
            report += chunk
    finally:
        os.close(reader)
    if report:
        os.waitpid(pid, 0)
        number, _, name = report.decode(errors="replace").partition(" ")
        raise OSError(int(number), os.strerror(int(number)), name)
    return pid


def _exec_child(argv, env, cwd, log_fd: int, report: int) -> None:
    """In the clone3 child: what posix_spawn's attributes do, then exec; errno on `report` if it fails."""
    code = errno.ENOEXEC  # for a failure that carries no errno
    try:
        os.setpgid(0, 0)
        for sig in RESETS:
            if signal.getsignal(sig) == signal.SIG_IGN:  # caught ones are reset by the exec itself
                signal.signal(sig, signal.SIG_DFL)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        if cwd:
            os.chdir(cwd)
        program = argv[0]
        # posix_spawnp's search, as os.execvp's: this process's PATH, not the trial's environment
        places = [program] if "/" in program else [
            os.path.join(folder or ".", program) for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)]
        first_other = None
        for place in places:
            try:
                os.execve(place, argv, env)
            except OSError as error:
                code = error.errno or code
                if first_other is None and error.errno not in (errno.ENOENT, errno.ENOTDIR):  # the telling error
                    first_other = code
        code = first_other or code
    except BaseException as error:
        code = getattr(error, "errno", None) or code
    finally:
        try:
            os.write(report, f"{code} {argv[0] if argv else ''}".encode(errors="replace"))
        finally:
            os._exit(127)


def _spawn(argv, env, cwd, log_fd: int) -> int:
    """posix_spawn as the leader of its own process group; a cwd needs a chdir around it, as posix_spawn has none.

    Its own group (not session): the launcher's session has no terminal already, and a trial
    that calls setpgid(0, 0) keeps working (a session leader would get EPERM there).
    """
    resets = RESETS
    actions = [(os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2)]
    if not cwd:
        return os.posix_spawnp(argv[0], argv, env, file_actions=actions, setpgroup=0, setsigdef=resets)
    here = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(cwd)  # only this loop uses relative paths (the cgroup mover's are absolute): a chdir around the spawn is safe
        return os.posix_spawnp(argv[0], argv, env, file_actions=actions, setpgroup=0, setsigdef=resets)
    finally:
        os.fchdir(here)
        os.close(here)


def main(argv: list) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    os.set_inheritable(sock.fileno(), False)
    return Launcher(sock, int(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
