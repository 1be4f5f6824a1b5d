"""A tiny parent for each trial that takes the trial's whole process group down with the tuner.

Why: if the tuner is killed with SIGKILL it cannot clean up, and PR_SET_PDEATHSIG reaches only
a direct child, never the DataLoader workers and other grandchildren that hold GPU memory.
The tuner keeps the write end of a pipe; this supervisor (the leader of the trial's process
group) waits on the read end, and when it reads end-of-file — which the kernel delivers
however the tuner died — it SIGKILLs the whole group, itself included.

It runs as a script with the standard library only (started with `python -I -S`), so it costs a
bare interpreter start per trial. Usage: `_supervisor.py FD -- ARGV...`. Its exit status is
the trial's: the same code, or death by the same signal.
"""
import _signal as signal  # the C modules: `signal` and `threading` import enum & co, which
import _thread  # would double the cost of this per-trial process
import os
import sys


def _watch_tuner(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:  # the tuner is gone: nobody will ever reap or stop this trial
            os.killpg(0, signal.SIGKILL)
            return


def _ignore(signum, frame) -> None:
    """Stay alive on TERM/INT so the trial's own exit status reaches the tuner.

    A handler (not SIG_IGN) is used because handlers reset to the default on exec, so the
    trial itself still receives and handles the signals normally.
    """


def main(argv: list) -> int:
    fd = int(argv[0])
    command = argv[2:] if len(argv) > 1 and argv[1] == "--" else argv[1:]
    os.set_inheritable(fd, False)  # the trial must not hold the lifeline itself
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    _thread.start_new_thread(_watch_tuner, (fd,))
    try:
        # posix_spawn, not subprocess: this runs once per trial and subprocess's imports
        # would cost more than the whole supervisor otherwise does.
        pid = os.posix_spawnp(command[0], command, os.environ, setsigdef=(signal.SIGTERM, signal.SIGINT))
    except OSError as error:
        print(f"autofinetune: could not start {command[0]}: {error}", file=sys.stderr, flush=True)
        return 127
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):  # die the way the trial died, so the tuner sees the same signal
        signum = os.WTERMSIG(status)
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            pass
        os.kill(os.getpid(), signum)
        return 128 + signum  # only reached for a signal that does not end a process
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
