"""A tiny parent for each trial that takes the trial's whole process group down with it.

Why: if the tuner is killed with SIGKILL it cannot clean up, and PR_SET_PDEATHSIG reaches only
a direct child, never the DataLoader workers and other grandchildren that hold GPU memory.
This supervisor leads the trial's process group and shares a socket pair with the tuner:

* when it reads end-of-file there — which the kernel delivers however the tuner died — it
  SIGKILLs the whole group, itself included;
* when the trial ends, it writes the trial's exit status to the socket and SIGKILLs the group,
  so grandchildren the trial left behind die in the same instant; no window exists in which
  the trial is over but its leftovers wait for a tuner that may itself be dying.

It runs as a script with the standard library only (started with `python -I -S`), so it costs
a bare interpreter start per trial. Usage: `_supervisor.py FD -- ARGV...`. The status line is
`exit N` or `signal N`.
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
    if os.WIFSIGNALED(status):
        report = f"signal {os.WTERMSIG(status)}\n"
    else:
        report = f"exit {os.WEXITSTATUS(status)}\n"
    try:
        os.write(fd, report.encode())
    except OSError:  # the tuner is gone; the watcher is killing the group already
        pass
    os.killpg(0, signal.SIGKILL)  # the trial's leftovers, and this supervisor with them
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
