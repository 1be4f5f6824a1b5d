"""The launcher's protocol, driven through runner.Launcher / TrialProcess without a search around it."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autofinetune._launcher import _clone3_available
from autofinetune.runner import Launcher, TrialProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fence tested here needs Linux")


def _cgroups_writable() -> bool:
    probe = Launcher()
    try:
        return probe.wait_ready().startswith("cgroup v2")
    finally:
        probe.close()


@pytest.fixture(autouse=True, params=["cgroup", "cgroup-park", "cookie"])
def fence(request, monkeypatch) -> str:
    """Every test three times: with the cgroup fence (where the cgroup v2 hierarchy is writable,
    as for root on this CI), trials started in the cgroup the launcher parked in or by clone3
    into a new one; the same fence where clone3 is refused (a kernel before 5.7, a seccomp
    filter: AUTOFINETUNE_NO_CLONE3), a start waiting for the launcher's move when it comes too
    soon; and the cookie fence that every other Linux system gets."""
    if request.param == "cookie":
        monkeypatch.setenv("AUTOFINETUNE_NO_CGROUP", "1")
    else:
        monkeypatch.delenv("AUTOFINETUNE_NO_CGROUP", raising=False)
        if request.param == "cgroup-park":
            monkeypatch.setenv("AUTOFINETUNE_NO_CLONE3", "1")
        else:
            monkeypatch.delenv("AUTOFINETUNE_NO_CLONE3", raising=False)
            if not _clone3_available():
                pytest.skip("clone3 with CLONE_INTO_CGROUP is refused here (the cgroup-park run covers this fence)")
        if not _cgroups_writable():
            pytest.skip("the cgroup v2 hierarchy is not writable here")
    return request.param


@pytest.fixture
def launcher(fence):
    started = Launcher()
    try:
        yield started
    finally:
        started.close()


def _log(tmp_path: Path) -> int:
    return os.open(tmp_path / "log.info", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def _start(launcher: Launcher, tmp_path: Path, code: str, timeout=None, grace: float = 0.5) -> TrialProcess:
    fd = _log(tmp_path)
    try:
        return TrialProcess.start(launcher, [sys.executable, "-c", textwrap.dedent(code), str(tmp_path)], dict(os.environ),
                                  str(tmp_path), fd, timeout, grace)
    finally:
        os.close(fd)


def _wait(trial: TrialProcess, seconds: float = 30.0) -> int:
    """Drive the trial as a backend does: enforce deadlines, block on the launcher until the next one."""
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        now = time.monotonic()
        trial.enforce(now)
        due = trial.wakeup()
        wait = 0.5 if due is None else max(0.0, min(0.5, due - now))
        for ident, status in trial.launcher.exits(wait):
            if ident == trial.ident:
                return trial.finish(status)
    raise AssertionError("the trial did not end in time")


def _alive_and_ours(pid: int, marker: str) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _gone(pid: int, marker: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive_and_ours(pid, marker):
            return True
        time.sleep(0.05)
    return False


def test_the_launcher_names_its_fence(launcher: Launcher, fence: str):
    assert launcher.wait_ready() == ("cgroup v2 (one per trial) + subreaper" if fence != "cookie" else "subreaper + environment cookie")


def test_start_runs_the_trial_in_its_own_group_with_output_in_the_log(launcher: Launcher, tmp_path: Path):
    trial = _start(launcher, tmp_path, """
        import os, sys
        print("pgid", os.getpgid(0) == os.getpid(), "cookie" , len(os.environ["AUTOFINETUNE_TRIAL_COOKIE"]), flush=True)
        print("to stderr", file=sys.stderr, flush=True)
    """)
    assert trial.pid > 0
    assert _wait(trial) == 0
    text = (tmp_path / "log.info").read_text()
    assert "pgid True cookie 32" in text and "to stderr" in text


def test_a_trial_starts_in_its_cgroup_with_default_signals_its_folder_and_the_launchers_path(
        tmp_path: Path, fence: str, monkeypatch):
    """What posix_spawn's attributes gave the trial, clone3's child gives too: its own group,
    SIGINT at its default (the launcher ignores it; a Python started with SIGINT ignored keeps
    ignoring it), the requested folder, a bare program name found on the launcher's PATH (not
    the trial's, as posix_spawnp); and, with the cgroup fence, its own cgroup from its first
    instruction on."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    (tmp_path / "work").mkdir()
    code = textwrap.dedent("""
        import os, signal
        print("group", os.getpgid(0) == os.getpid())
        print("int", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        print("cwd", os.getcwd())
        print("cgroup", open("/proc/self/cgroup").read().split("0::", 1)[-1].strip())
    """)
    launcher = Launcher()
    fd = _log(tmp_path)
    try:
        trial = TrialProcess.start(launcher, [Path(sys.executable).name, "-c", code], dict(os.environ, PATH="/nonexistent"),
                                   str(tmp_path / "work"), fd, None, 0.5)
        assert _wait(trial) == 0
    finally:
        os.close(fd)
        launcher.close()
    text = (tmp_path / "log.info").read_text()
    assert "group True" in text and "int True" in text, text
    assert f"cwd {tmp_path / 'work'}" in text, text
    cgroup = text.split("cgroup ", 1)[1].splitlines()[0]
    if fence == "cookie":
        assert "autofinetune-" not in cgroup, text
    else:
        assert trial.cgroup is not None and cgroup.split("/")[-1] == Path(trial.cgroup).name, text
        assert "autofinetune-" in cgroup, text


def test_the_exit_status_and_the_killing_signal_are_reported_exactly(launcher: Launcher, tmp_path: Path):
    assert _wait(_start(launcher, tmp_path, "raise SystemExit(7)")) == 7
    assert _wait(_start(launcher, tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)")) == -signal.SIGUSR1


def test_a_trial_that_cannot_start_is_an_oserror_with_a_message(launcher: Launcher, tmp_path: Path):
    fd = _log(tmp_path)
    try:
        with pytest.raises(OSError, match="No such file"):
            TrialProcess.start(launcher, [str(tmp_path / "missing")], dict(os.environ), None, fd, None, 0.5)
    finally:
        os.close(fd)
    assert "could not start" in (tmp_path / "log.info").read_text()
    assert _wait(_start(launcher, tmp_path, "pass")) == 0  # the launcher goes on


def test_timeout_terms_then_kills_a_trial_that_ignores_sigterm(launcher: Launcher, tmp_path: Path):
    trial = _start(launcher, tmp_path, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)",
                   timeout=0.5, grace=0.3)
    began = time.monotonic()
    assert _wait(trial) == -signal.SIGKILL
    assert trial.stop_reason == "timeout"
    assert time.monotonic() - began < 5


def test_kill_now_kills_at_once(launcher: Launcher, tmp_path: Path):
    trial = _start(launcher, tmp_path, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)")
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / "log.info").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)  # SIGTERM before the handler is set would end it: not what is tested
    trial.request_stop("interrupted", 60.0, time.monotonic())
    trial.kill_now()
    began = time.monotonic()
    assert _wait(trial) == -signal.SIGKILL
    assert time.monotonic() - began < 5 and trial.stop_reason == "interrupted"


def _cgroup_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text().split("0::", 1)[-1].strip()
    except OSError:
        return ""


def test_a_burst_of_starts_gives_each_trial_its_own_cgroup_and_the_launcher_none(launcher: Launcher, tmp_path: Path,
                                                                                 fence: str):
    """Five starts back to back: the first takes the cgroup the launcher parked in, the others
    come before its move is done (clone3 into a new cgroup, or a wait for the move). Each trial
    is alone in its own cgroup, the launcher is never counted as a trial's process, and once
    the moves are done it sits in none of them."""
    if fence == "cookie":
        pytest.skip("cgroups only")
    trials = []
    for n in range(5):
        folder = tmp_path / f"t{n}"
        folder.mkdir()
        trials.append(_start(launcher, folder, "import time; print('up', flush=True); time.sleep(60)"))
    try:
        deadline = time.monotonic() + 10
        while any("up" not in (tmp_path / f"t{n}" / "log.info").read_text() for n in range(5)):
            assert time.monotonic() < deadline, "the trials did not all start"
            time.sleep(0.02)
        groups = [_cgroup_of(trial.pid) for trial in trials]
        assert len(set(groups)) == 5 and all(g.endswith(Path(t.cgroup).name) for g, t in zip(groups, trials)), groups
        for trial in trials:
            members = [int(pid) for pid in (Path(trial.cgroup) / "cgroup.procs").read_text().split()]
            assert trial.pid in members and len(set(members) - {launcher.process.pid}) == 1, members
        time.sleep(0.5)  # the mover's last move (a grace period, ~10 ms) is long done
        assert _cgroup_of(launcher.process.pid) not in groups
    finally:
        for trial in trials:
            trial.kill_now()
        ended: dict = {}
        deadline = time.monotonic() + 30
        while len(ended) < len(trials) and time.monotonic() < deadline:
            ended.update(launcher.exits(0.5))
        assert ended == {trial.ident: -signal.SIGKILL for trial in trials}
    assert _wait(_start(launcher, tmp_path, "pass")) == 0  # the launcher lives on


def test_a_trial_killed_at_once_after_its_start_leaves_the_launcher_alive(launcher: Launcher, tmp_path: Path):
    """A kill right after a start may come while the launcher still shares the trial's cgroup
    (it moves out ~10 ms later): cgroup.kill then waits for the move, and the launcher lives."""
    for _ in range(5):
        trial = _start(launcher, tmp_path, "import time; time.sleep(60)")
        trial.kill_now()
        assert _wait(trial) == -signal.SIGKILL
        assert launcher.process.poll() is None, "the launcher was killed with the trial"
    assert _wait(_start(launcher, tmp_path, "print('still here')")) == 0
    assert "still here" in (tmp_path / "log.info").read_text()


ESCAPER = """
    import os, subprocess, sys, time
    tmp = sys.argv[1]
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)", tmp],
                             start_new_session=True)
    open(os.path.join(tmp, "escaped.pid"), "w").write(str(child.pid))
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


def _escaped(tmp_path: Path) -> int:
    deadline = time.monotonic() + 10
    while not (tmp_path / "escaped.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int((tmp_path / "escaped.pid").read_text())


def _kill_if_ours(tmp_path: Path) -> None:
    path = tmp_path / "escaped.pid"
    if path.exists() and path.read_text().strip():
        pid = int(path.read_text())
        if _alive_and_ours(pid, str(tmp_path)):
            os.kill(pid, signal.SIGKILL)


def test_a_trials_end_stops_its_escaped_descendants_term_then_kill(launcher: Launcher, tmp_path: Path):
    try:
        trial = _start(launcher, tmp_path, ESCAPER, grace=0.3)
        assert _wait(trial) == 0
        assert _gone(_escaped(tmp_path), str(tmp_path))
    finally:
        _kill_if_ours(tmp_path)


def test_end_of_file_on_the_lifeline_kills_every_trial_and_descendant(tmp_path: Path):
    """A tuner SIGKILLed with a trial running: the launcher reads end-of-file and kills all."""
    tuner_code = textwrap.dedent(f"""
        import os, signal, sys, time
        from autofinetune.runner import Launcher, TrialProcess
        launcher = Launcher()
        fd = os.open({str(tmp_path / 'log.info')!r}, os.O_WRONLY | os.O_CREAT, 0o644)
        trial = TrialProcess.start(launcher, [sys.executable, "-c", {textwrap.dedent(ESCAPER)!r}, {str(tmp_path)!r}, "60"],
                                   dict(os.environ), None, fd, None, 30.0)
        print(trial.pid, launcher.process.pid, flush=True)
        time.sleep(60)
    """)
    tuner = subprocess.Popen([sys.executable, "-c", tuner_code], stdout=subprocess.PIPE, text=True)
    try:
        trial_pid, launcher_pid = (int(word) for word in tuner.stdout.readline().split())
        escaped = _escaped(tmp_path)
        tuner.kill()
        tuner.wait(timeout=10)
        assert _gone(escaped, str(tmp_path)), "the escaped descendant outlived the tuner"
        assert _gone(trial_pid, str(tmp_path)), "the trial outlived the tuner"
        assert _gone(launcher_pid, "_launcher.py"), "the launcher outlived the tuner"
    finally:
        if tuner.poll() is None:
            tuner.kill()
            tuner.wait()
        _kill_if_ours(tmp_path)


def test_an_orphan_that_clears_its_environment_is_stopped_with_the_only_trial(launcher: Launcher, tmp_path: Path):
    """No cookie left to find it by: the subreaper took it in, and one trial is all it can belong to."""
    try:
        trial = _start(launcher, tmp_path, """
            import os, sys, time
            tmp = sys.argv[1]
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    open(os.path.join(tmp, "escaped.pid"), "w").write(str(os.getpid()))
                    os.execve(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", tmp], {})
                os._exit(0)
            time.sleep(0.5)
        """, grace=0.3)
        escaped = _escaped(tmp_path)
        assert _wait(trial) == 0
        assert _gone(escaped, str(tmp_path))
    finally:
        _kill_if_ours(tmp_path)


def test_resume_stops_a_leftover_trial_through_its_old_launcher(tmp_path: Path):
    """runner.stop_stale_group with the journaled trial identity: it tells the launcher still
    parenting that trial to stop everything, which also takes the escaped descendant down."""
    from autofinetune.runner import ProcessIdentity, stop_stale_group

    old = Launcher()
    try:
        trial = _start(old, tmp_path, ESCAPER.replace('sys.argv[2]) if len(sys.argv) > 2 else 0', '60)'), grace=30.0)
        escaped = _escaped(tmp_path)
        assert stop_stale_group(ProcessIdentity.of(trial.pid), grace=0.5)
        assert _gone(escaped, str(tmp_path)), "the escaped descendant of the leftover trial lived on"
        assert old.process.wait(timeout=10) == 0
    finally:
        old.close()
        _kill_if_ours(tmp_path)


def test_resume_stops_the_escaped_descendants_of_a_trial_whose_launcher_died_too(tmp_path: Path, fence: str):
    """The launcher SIGKILLed (the OOM killer, a kill of the wrong pid): nobody fences the trial
    any more. The journaled identity carries the trial's cookie, so a resume still finds the
    descendant that left the trial's process group, and stops it with the group."""
    from autofinetune.runner import ProcessIdentity, stop_stale_group

    old = Launcher()
    try:
        trial = _start(old, tmp_path, ESCAPER.replace('sys.argv[2]) if len(sys.argv) > 2 else 0', '60)'), grace=30.0)
        escaped = _escaped(tmp_path)
        assert trial.cookie and len(trial.cookie) == 32
        identity = ProcessIdentity.from_json(ProcessIdentity.of(trial.pid, trial.cookie, trial.cgroup).to_json())  # as journaled
        assert identity.cookie == trial.cookie and identity.cgroup == trial.cgroup
        old.process.kill()
        old.process.wait(timeout=10)
        time.sleep(0.3)
        assert _alive_and_ours(escaped, str(tmp_path)), "the escaped descendant should outlive a dead launcher"
        if fence != "cookie":  # the trial's cgroup alone holds all of it
            assert stop_stale_group(dataclasses.replace(identity, cookie=None), grace=0.5)
            assert _gone(trial.pid, str(tmp_path)) and _gone(escaped, str(tmp_path))
            assert not Path(trial.cgroup).exists() and not Path(trial.cgroup).parent.exists(), "the dead launcher's cgroups are removed"
            return
        identity = dataclasses.replace(identity, cgroup=None)
        # without the cookie (a journal from before it was kept), only the trial's group is found
        assert stop_stale_group(dataclasses.replace(identity, cookie=None), grace=0.5)
        assert _gone(trial.pid, str(tmp_path)), "the leftover trial lived on"
        assert _alive_and_ours(escaped, str(tmp_path))
        assert stop_stale_group(identity, grace=0.5)
        assert _gone(escaped, str(tmp_path)), "the escaped descendant of the leftover trial lived on"
    finally:
        old.close()
        _kill_if_ours(tmp_path)


def test_the_cgroup_fence_stops_a_descendant_with_no_cookie_while_other_trials_run(launcher: Launcher, fence: str,
                                                                                   tmp_path: Path):
    """A child that clears its environment and leaves the session, and whose own parent is still
    alive when the trial ends, is out of reach of the cookie (docs/dask.md); its cgroup holds it."""
    if fence == "cookie":
        pytest.skip("the gap the cgroup fence closes: the cookie fence cannot find this descendant")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = _start(launcher, other_dir, "import time; time.sleep(60)", grace=0.3)  # another trial is known
    try:
        trial = _start(launcher, tmp_path, """
            import os, sys, time
            tmp = sys.argv[1]
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    open(os.path.join(tmp, "escaped.pid"), "w").write(str(os.getpid()))
                    os.execve(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", tmp], {})
                time.sleep(60)  # the parent stays: nothing is orphaned when the trial ends
            time.sleep(0.5)
        """, grace=0.3)
        escaped = _escaped(tmp_path)
        cgroup = Path(trial.cgroup)
        assert str(escaped) in (cgroup / "cgroup.procs").read_text().split()
        assert _wait(trial) == 0
        assert _gone(escaped, str(tmp_path))
        deadline = time.monotonic() + 5
        while cgroup.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not cgroup.exists(), "the trial's cgroup is removed once it is empty"
    finally:
        other.kill_now()
        _kill_if_ours(tmp_path)
