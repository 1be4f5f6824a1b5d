"""Hostile and unlucky trials never hurt the tuner: timeouts, retries, floods, orphans, liars."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import run_cli

ONE_PARAM = "param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n"

PROLOGUE = textwrap.dedent("""
    import argparse, json, os, signal, subprocess, sys, time
    import autofinetune
    p = argparse.ArgumentParser()
    p.add_argument("--x", type=float); p.add_argument("--saved_params_dir"); p.add_argument("--model_path"); p.add_argument("--epochs")
    a = p.parse_args()
""")


def _search(tmp_path: Path, body: str, *extra: str, popsize: int = 2, rounds: int = 1, timeout: float = 120):
    (tmp_path / "train.py").write_text(PROLOGUE + textwrap.dedent(body))
    (tmp_path / "hparam.yaml").write_text(ONE_PARAM)
    return _run_again(tmp_path, *extra, popsize=popsize, rounds=rounds, timeout=timeout)


def _run_again(tmp_path: Path, *extra: str, popsize: int = 2, rounds: int = 1, timeout: float = 120):
    """The same search command as `_search` (with --resume among `extra` to continue it)."""
    out = tmp_path / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", f"--popsize={popsize}", f"--round={rounds}", f"--output_dir={out}",
                      "--workers=2", "--seed=1", *extra], cwd=tmp_path, timeout=timeout)
    rows = json.loads((out / "trials.json").read_text()) if (out / "trials.json").exists() else []
    return result, rows, out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_timeout_kills_a_trial_that_ignores_sigterm_and_its_grandchild(tmp_path: Path):
    result, rows, out = _search(tmp_path, """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(os.path.join(a.saved_params_dir, "pids"), "w") as f: f.write(f"{os.getpid()} {child.pid}")
        time.sleep(600)
    """, "--timeout=1", "--kill_grace=0.5", "--evaluator=fulltrail", timeout=60)
    assert result.returncode == 1  # every trial timed out: no success
    assert [r["status"] for r in rows] == ["timeout", "timeout"]
    assert all("timeout" in r["message"] for r in rows)
    for index in range(2):
        pids = [int(p) for p in (out / "round0" / f"model-{index}" / "pids").read_text().split()]
        assert not any(_alive(pid) for pid in pids)


def test_retries_rerun_the_same_candidate_and_keep_every_log(tmp_path: Path):
    result, rows, out = _search(tmp_path, """
        marker = os.path.join(os.path.dirname(a.saved_params_dir), f"attempts-{os.path.basename(a.saved_params_dir)}")
        count = int(open(marker).read()) if os.path.exists(marker) else 0
        open(marker, "w").write(str(count + 1))
        print(f"attempt {count} with x={a.x}")
        if count < 2:
            raise SystemExit(f"flaky failure {count}")
        autofinetune.report_final_result(0.5)
    """, "--max_retries=2", "--evaluator=fulltrail")
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in rows] == ["ok", "ok"] and [r["attempt"] for r in rows] == [2, 2]
    for index in range(2):
        logs = [out / "round0" / name for name in (f"log-{index}.info", f"log-{index}.retry1.info", f"log-{index}.retry2.info")]
        texts = [log.read_text() for log in logs]
        assert "attempt 0" in texts[0] and "flaky failure 0" in texts[0]
        assert "attempt 1" in texts[1] and "attempt 2" in texts[2]
        xs = {t.split("x=")[1].split()[0] for t in texts}
        assert len(xs) == 1  # the retry reuses the same candidate
    assert "retry 1 of 2" in result.stdout


def test_retries_are_bounded(tmp_path: Path):
    result, rows, _ = _search(tmp_path, "raise SystemExit(4)\n", "--max_retries=1", "--evaluator=fulltrail")
    assert result.returncode == 1
    assert [r["status"] for r in rows] == ["failed", "failed"] and [r["attempt"] for r in rows] == [1, 1]


def _peak_rss_kib(tmp_path: Path, body: str) -> int:
    (tmp_path / "train.py").write_text(PROLOGUE + textwrap.dedent(body))
    (tmp_path / "hparam.yaml").write_text(ONE_PARAM)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    process = subprocess.Popen([sys.executable, "-m", "autofinetune", "train.py", "--param_file=hparam.yaml", "--popsize=1",
                                "--round=1", f"--output_dir={out}", "--workers=1", "--evaluator=fulltrail"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    process.communicate()
    assert process.returncode == 0
    return peak


def test_200_mb_of_output_goes_to_the_log_not_the_tuners_memory(tmp_path: Path):
    quiet = _peak_rss_kib(tmp_path, "time.sleep(0.5); autofinetune.report_final_result(0.1)\n")
    loud = _peak_rss_kib(tmp_path, """
        line = ("x" * 1023 + "\\n").encode()
        for _ in range(200 * 1024):
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
        autofinetune.report_final_result(0.1)
    """)
    print(f"tuner peak RSS: quiet trial {quiet / 1024:.1f} MiB, 200 MB-output trial {loud / 1024:.1f} MiB")
    assert loud - quiet < 20 * 1024, (quiet, loud)
    logs = sorted(tmp_path.glob("out*/round0/log-0.info"), key=lambda p: p.stat().st_size)
    assert logs[-1].stat().st_size == 200 * 1024 * 1024


@pytest.mark.parametrize("body, status, score, words", [
    ("autofinetune.report_final_result(0.2); autofinetune.report_final_result(0.3)\n", "ok", 0.3, []),
    ("autofinetune.report_final_result('high')\n", "invalid", None, ["not a number"]),
    ("autofinetune.report_final_result(0.4); raise SystemExit(2)\n", "failed", None, ["exit code 2"]),
    ("autofinetune.report_final_result(float('inf'))\n", "invalid", None, ["not finite"]),
    ("os.kill(os.getpid(), signal.SIGKILL)\n", "failed", None, ["SIGKILL"]),
    ("raise SystemExit(130)\n", "interrupted", None, ["130"]),
    ("open(os.environ['AUTOFINETUNE_RESULT_FILE'], 'w').write('{\"score\": 0.5, \"pad\": \"' + 'x' * (2 << 20) + '\"}')\n",
     "failed", None, ["larger than"]),
])
def test_lying_and_dying_trials_get_honest_statuses(tmp_path: Path, body, status, score, words):
    result, rows, _ = _search(tmp_path, body, "--evaluator=fulltrail", popsize=1)
    assert "Traceback" not in result.stderr.split("autofinetune: error:")[-1]
    assert rows[0]["status"] == status and rows[0]["score"] == score
    for word in words:
        assert word in rows[0]["message"]


def test_a_trial_deleting_its_model_dir_is_never_a_parent(tmp_path: Path):
    result, rows, out = _search(tmp_path, """
        import shutil
        if a.x > 0.5:
            shutil.rmtree(a.saved_params_dir)
            autofinetune.report_final_result(0.9)
        else:
            open(os.path.join(a.saved_params_dir, "w"), "w").write("ok")
            autofinetune.report_final_result(0.1 + a.x / 10)
    """, popsize=4, rounds=2)
    assert result.returncode == 0, result.stderr
    vanished = {r["model_dir"] for r in rows if r["round"] == 0 and r["x"] > 0.5}
    parents = {r["parent"] for r in rows if r["round"] == 1}
    assert vanished and not (vanished & parents)
    assert (out / "best_model").is_dir()


def test_unwritable_output_dir_is_refused_before_anything_runs(tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    (tmp_path / "hparam.yaml").write_text(ONE_PARAM)
    result = run_cli(["train.py", "--param_file=hparam.yaml", f"--output_dir={tmp_path / 'file' / 'out'}"], cwd=tmp_path)
    assert result.returncode == 2 and "cannot write there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_disk_full_mid_search_stops_clearly_with_the_journal_intact(tmp_path: Path):
    """RLIMIT_FSIZE makes writes past a size fail with EFBIG, as a full disk fails with ENOSPC."""
    (tmp_path / "train.py").write_text(PROLOGUE + "autofinetune.report_final_result(a.x / 2)\n")
    (tmp_path / "hparam.yaml").write_text(ONE_PARAM)
    out = tmp_path / "out"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    args = [sys.executable, "-m", "autofinetune", "train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=12",
            f"--output_dir={out}", "--workers=2", "--seed=3", "--evaluator=fulltrail"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert last.startswith("autofinetune: error: cannot write to") and "--resume" in last
    finished = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines() if '"finish"' in l]
    assert finished, "trials finished before the disk filled"
    assert 0 < len(finished) < 48
    # with room again, --resume finishes the search and keeps every finished trial
    resumed = subprocess.run(args + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = json.loads((out / "trials.json").read_text())
    assert len(rows) == 48
    by_key = {(r["round"], r["index"]): r for r in rows}
    for event in finished:
        trial = event["trial"]
        assert by_key[(trial["round"], trial["index"])]["score"] == trial["score"]


def test_a_trial_that_saves_nothing_is_never_a_parent(tmp_path: Path):
    result, rows, _ = _search(tmp_path, """
        if a.x < 0.5:  # the better trials save nothing: resuming from them would be resuming from nothing
            autofinetune.report_final_result(0.9 - a.x)
        else:
            open(os.path.join(a.saved_params_dir, "w"), "w").write("ok")
            autofinetune.report_final_result(0.5 - a.x / 10)
    """, popsize=4, rounds=2)
    assert result.returncode == 0, result.stderr
    empty = {r["model_dir"] for r in rows if r["round"] == 0 and r["x"] < 0.5}
    saved = {r["model_dir"] for r in rows if r["round"] == 0 and r["x"] >= 0.5}
    parents = {r["parent"] for r in rows if r["round"] == 1}
    assert empty and saved, "the seed should give both kinds of trial"
    assert parents <= saved


# -- what a trial leaves behind is data, never a weapon (docs/security.md) ----------------------------

def _body(*parts: str) -> str:
    """A trial script's body from parts indented each its own way."""
    return "".join(textwrap.dedent(part) for part in parts)


#: Lines for a trial script: where its round folder and output dir are, and which trial it is.
WHERE = """
    model_dir = os.path.abspath(a.saved_params_dir)
    round_dir = os.path.dirname(model_dir)
    index = int(os.path.basename(model_dir).split("-")[1])
    result_file = os.environ["AUTOFINETUNE_RESULT_FILE"]
    token = os.environ["AUTOFINETUNE_TRIAL_TOKEN"]
"""

#: Kills the tuner (the supervisor's parent) once per test, so the tuner dies with the planted
#: result file unjudged and --resume must read it (resume._recover_reported).
KILL_TUNER_ONCE = """
    def kill_tuner_once(marker):
        if os.path.exists(marker):
            return
        open(marker, "w").close()
        with open(f"/proc/{os.getppid()}/stat") as handle:
            tuner = int(handle.read().rsplit(")", 1)[1].split()[1])
        os.kill(tuner, signal.SIGKILL)
        time.sleep(30)  # the supervisor sees the lifeline close and kills this group
"""

_UNFLOATABLE = {
    "int too big for a float": "'{\"score\": 1' + '0' * 400 + ', \"token\": \"' + token + '\"}'",
    "inf": "'{\"score\": 1e999, \"token\": \"' + token + '\"}'",
    "nested 200000 deep": "'{\"score\": ' + '[' * 200000 + ']' * 200000 + ', \"token\": \"' + token + '\"}'",
    # 100000: 6 bytes a level stays under the 1 MiB result limit, so the parser must meet it
    "nested 100000 deep in the score": "'{\"token\": \"' + token + '\", \"score\": ' + '{\"a\": ' * 100000 + '1' + '}' * 100000 + '}'",
}


@pytest.mark.parametrize("text", list(_UNFLOATABLE.values()), ids=list(_UNFLOATABLE))
def test_a_result_no_float_can_hold_is_judged_and_resume_still_reads_it(tmp_path: Path, text: str):
    """The tuner dies right after the hostile report, so every --resume re-reads it too."""
    result, rows, out = _search(tmp_path, _body(WHERE, KILL_TUNER_ONCE, f"""
        if index == 0:
            with open(result_file, "w") as handle:
                handle.write({text})
            kill_tuner_once({str(tmp_path / "killed")!r})
            raise SystemExit(0)
        time.sleep(1)
        autofinetune.report_final_result(0.5)
    """), "--evaluator=fulltrail", timeout=90)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    resumed, rows, out = _run_again(tmp_path, "--evaluator=fulltrail", "--resume", timeout=90)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    by_index = {r["index"]: r for r in rows}
    assert by_index[0]["status"] in ("invalid", "failed") and by_index[0]["score"] is None and by_index[0]["message"]
    assert len(by_index[0]["message"]) < 500
    assert by_index[1]["status"] == "ok" and by_index[1]["score"] == 0.5
    again, rows, _ = _run_again(tmp_path, "--evaluator=fulltrail", "--resume", rounds=2, timeout=90)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(rows) == 4


@pytest.mark.parametrize("plant", ["os.mkfifo(result_file)", "os.symlink(os.path.join(round_dir, 'elsewhere.json'), result_file)",
                                   "os.mkdir(result_file)"], ids=["fifo", "symlink", "folder"])
def test_a_result_file_that_is_not_a_regular_file_fails_the_trial_and_never_hangs(tmp_path: Path, plant: str):
    """The symlink's target holds a valid report: following it would accept what the rule refuses."""
    result, rows, out = _search(tmp_path, _body(WHERE, KILL_TUNER_ONCE, f"""
        if index == 0:
            with open(os.path.join(round_dir, "elsewhere.json"), "w") as handle:
                json.dump({{"score": 0.9, "token": token}}, handle)
            {plant}
            kill_tuner_once({str(tmp_path / "killed")!r})
            raise SystemExit(0)
        time.sleep(1)
        autofinetune.report_final_result(0.5)
    """), "--evaluator=fulltrail", timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    resumed, rows, _ = _run_again(tmp_path, "--evaluator=fulltrail", "--resume", timeout=60)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    by_index = {r["index"]: r for r in rows}
    assert by_index[0]["status"] == "failed" and by_index[0]["score"] is None
    assert "result file" in by_index[0]["message"]
    assert by_index[1]["status"] == "ok"


def test_fifos_symlinks_and_folders_planted_for_a_retry_never_hang_or_redirect_the_tuner(tmp_path: Path):
    """Attempt 0 plants a FIFO at its retry's log, a symlink to a file outside the output dir at
    the next retry's log and later at its result, a folder at its result and a FIFO in place of
    its model dir; the tuner owns those names and replaces them instead of opening them."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    result, rows, out = _search(tmp_path, _body(WHERE, f"""
        victim = {str(victim)!r}
        if index == 1:
            autofinetune.report_final_result(0.5)
            raise SystemExit(0)
        marker = {str(tmp_path / "attempts")!r}
        attempt = int(open(marker).read()) if os.path.exists(marker) else 0
        open(marker, "w").write(str(attempt + 1))
        print(f"attempt {{attempt}}", flush=True)
        if attempt == 0:
            os.mkfifo(os.path.join(round_dir, "log-0.retry1.info"))
            os.symlink(victim, os.path.join(round_dir, "log-0.retry2.info"))
            os.mkdir(result_file)
            open(os.path.join(result_file, "inside"), "w").write("x")
            os.rmdir(model_dir)
            os.mkfifo(model_dir)
            raise SystemExit(3)
        if attempt == 1:
            os.symlink(victim, result_file)
            raise SystemExit(4)
        assert os.path.isdir(model_dir) and not os.path.islink(model_dir)
        autofinetune.report_final_result(0.25)
    """), "--evaluator=fulltrail", "--max_retries=2", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    by_index = {r["index"]: r for r in rows}
    assert by_index[0]["status"] == "ok" and by_index[0]["attempt"] == 2 and by_index[0]["score"] == 0.25
    assert by_index[1]["status"] == "ok"
    assert victim.read_text() == "precious\n"
    for attempt, name in enumerate(["log-0.info", "log-0.retry1.info", "log-0.retry2.info"]):
        log = out / "round0" / name
        assert log.is_file() and not log.is_symlink()
        assert f"attempt {attempt}" in log.read_text()


def test_a_trial_that_swaps_its_log_for_a_fifo_never_hangs_the_log_tail_reader(tmp_path: Path):
    """A failed trial's log tail is read for the missing-option hint after the trial is gone."""
    result, rows, out = _search(tmp_path, _body(WHERE, """
        if index == 0:
            log = os.path.join(round_dir, "log-0.info")
            os.unlink(log)
            os.mkfifo(log)
            print("train.py: error: unrecognized arguments: --x=0.5", file=sys.stderr, flush=True)
            raise SystemExit(2)
        autofinetune.report_final_result(0.5)
    """), "--evaluator=fulltrail", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    by_index = {r["index"]: r for r in rows}
    assert by_index[0]["status"] == "failed" and "exit code 2" in by_index[0]["message"]
    assert by_index[1]["status"] == "ok"


def test_best_model_copies_only_regular_files_and_folders_and_lists_the_rest(tmp_path: Path):
    """FIFOs, sockets and symlinks (out of the output dir, or to a FIFO) in the best model dir."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the trial's\n")
    result, rows, out = _search(tmp_path, _body(WHERE, f"""
        import socket
        if index == 0:
            os.chdir(model_dir)  # a relative socket path: the absolute one may pass the 108-byte limit
            os.makedirs("sub/deeper")
            open("weights.bin", "wb").write(b"w" * 1000)
            open("sub/deeper/part.txt", "w").write("part")
            os.mkfifo("pipe")
            os.mkfifo("sub/pipe")
            server = socket.socket(socket.AF_UNIX)
            server.bind("sock")
            os.symlink({str(outside / "secret.txt")!r}, "secret_link")
            os.symlink({str(outside)!r}, "outside_dir")
            os.symlink("pipe", "link_to_pipe")
            autofinetune.report_final_result(0.9)
        else:
            autofinetune.report_final_result(0.1)
    """), "--evaluator=fulltrail", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    best = out / "best_model"
    copied = sorted(str(p.relative_to(best)) for p in best.rglob("*"))
    assert copied == [".autofinetune_best.json", "sub", "sub/deeper", "sub/deeper/part.txt", "weights.bin"]
    assert (best / "weights.bin").read_bytes() == b"w" * 1000
    record = json.loads((best / ".autofinetune_best.json").read_text())
    assert record["index"] == 0
    assert sorted(record["skipped"]) == ["link_to_pipe", "outside_dir", "pipe", "secret_link", "sock", "sub/pipe"]
    assert result.stderr.count("best_model/: skipped 6 entries") == 1
    resumed, rows, _ = _run_again(tmp_path, "--evaluator=fulltrail", "--resume", rounds=2, timeout=60)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(rows) == 4 and json.loads((best / ".autofinetune_best.json").read_text())["skipped"]


def test_a_best_model_dir_swapped_for_a_symlink_copies_nothing_from_its_target(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the trial's\n")
    result, rows, out = _search(tmp_path, _body(WHERE, f"""
        if index == 0:
            os.rmdir(model_dir)
            os.symlink({str(outside)!r}, model_dir)
            autofinetune.report_final_result(0.9)
        else:
            autofinetune.report_final_result(0.1)
    """), "--evaluator=fulltrail", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p.name for p in (out / "best_model").iterdir()] == [".autofinetune_best.json"]
    assert "symbolic link" in result.stderr


def test_the_dask_worker_refuses_a_fifo_log_and_a_fifo_result_without_blocking(tmp_path: Path):
    """dask_task opens the log the tuner created and reads the result where the trial ran.

    Run in a child with a timeout: a blocking open() would otherwise hang the test run.
    """
    fifo_log = tmp_path / "log-fifo.info"
    os.mkfifo(fifo_log)
    (tmp_path / "log.info").write_bytes(b"")
    (tmp_path / "t.py").write_text("import os; os.mkfifo(os.environ['AUTOFINETUNE_RESULT_FILE'])\n")
    code = textwrap.dedent(f"""
        import json, sys
        from autofinetune.backends import dask_task
        payload = {{"key": "k", "argv": ["true"], "log_path": {str(fifo_log)!r}, "result_path": {str(tmp_path / "r.json")!r},
                   "token": "t", "resource": "trial"}}
        first = dask_task.run_trial(payload)
        payload.update(argv=[sys.executable, {str(tmp_path / "t.py")!r}], log_path={str(tmp_path / "log.info")!r},
                       result_path={str(tmp_path / "fifo-result.json")!r})
        print(json.dumps([first, dask_task.run_trial(payload)]))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    fifo_log_report, fifo_result_report = json.loads(done.stdout.splitlines()[-1])
    assert fifo_log_report["state"] == "start_failed" and "not a regular file" in fifo_log_report["message"]
    assert fifo_result_report["state"] == "exited" and fifo_result_report["exit_code"] == 0
    assert fifo_result_report["result"] is None and "named pipe" in fifo_result_report["result_error"]


# -- §7: processes that leave the trial's process group: the launcher's fence (one launcher per tuner) --

def _is_ours(pid: int, marker: str) -> bool:
    """The pid still runs a command line of this test's (not a later process that reused it)."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") and _alive(pid)
    except OSError:
        return False


def _gone_within(pid: int, marker: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _is_ours(pid, marker):
            return True
        time.sleep(0.1)
    return False


def _escaped_pid(path: Path, process: "subprocess.Popen[str]", seconds: float = 20) -> int:
    """The pid the trial wrote; fails (with the process's stderr) when it ended without writing one."""
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    if not path.exists():
        time.sleep(0.5)  # written just before the process ended
    assert path.exists(), process.communicate(timeout=30)[1][-2000:]
    return int(path.read_text())


#: How a descendant leaves the trial's process group; it writes its pid to `pid_file` and runs
#: a command line holding `marker` (this test's tmp_path), so only it is ever killed by the test.
ESCAPE_KINDS = {
    "new session": "child = subprocess.Popen(SLEEPER, start_new_session=True); note(child.pid)",
    "double fork": """
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                note(os.getpid())
                os.execv(sys.executable, SLEEPER)
            os._exit(0)
    """,
    "setpgid": "os.setpgid(0, 0); child = subprocess.Popen(SLEEPER, process_group=0); note(child.pid)",
    "ignores SIGTERM": "child = subprocess.Popen(SLEEPER[:-1] + ['1'], start_new_session=True); note(child.pid)",
}

ESCAPE_PROLOGUE = """
    SLEEPER = [sys.executable, "-c", "import signal, sys, time\\nif sys.argv[2] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(120)", marker, "0"]
    def note(pid):
        open(pid_file + ".tmp", "w").write(str(pid))
        os.replace(pid_file + ".tmp", pid_file)
"""


def _escape_body(kind: str, ends: bool) -> str:
    end = "time.sleep(0.3)\nautofinetune.report_final_result(0.5)\n" if ends else "time.sleep(120)\n"
    return _body(ESCAPE_PROLOGUE, ESCAPE_KINDS[kind], "\n", end)


def _kill_escaped(pid_file: Path, marker: str) -> None:
    """Whatever the test's outcome, the escaped process never outlives it (only that pid, only if still ours)."""
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _is_ours(pid, marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("fence", ["best here", "cookie"])
@pytest.mark.parametrize("kind", list(ESCAPE_KINDS))
@pytest.mark.parametrize("how", ["trial ends", "timeout", "ctrl-c", "tuner sigkilled"])
def test_a_descendant_that_leaves_the_trials_group_does_not_outlive_it(tmp_path: Path, kind: str, how: str, fence: str):
    """With the fence the machine offers (a cgroup per trial where cgroup v2 is writable) and
    with the cookie fence every other Linux gets (AUTOFINETUNE_NO_CGROUP)."""
    marker = str(tmp_path)
    pid_file = tmp_path / "escaped.pid"
    (tmp_path / "train.py").write_text(PROLOGUE + _body(WHERE, f"pid_file, marker = {str(pid_file)!r}, {marker!r}\n",
                                                        _escape_body(kind, how == "trial ends")))
    (tmp_path / "hparam.yaml").write_text(ONE_PARAM)
    extra = ["--timeout=1"] if how == "timeout" else []
    args = [sys.executable, "-m", "autofinetune", "train.py", "--param_file=hparam.yaml", "--popsize=1", "--round=1",
            f"--output_dir={tmp_path / 'out'}", "--workers=1", "--seed=1", "--evaluator=fulltrail", "--kill_grace=0.5", *extra]
    env = dict(os.environ, AUTOFINETUNE_NO_CGROUP="1") if fence == "cookie" else dict(os.environ)
    tuner = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        pid = _escaped_pid(pid_file, tuner)
        if how == "ctrl-c":
            tuner.send_signal(signal.SIGINT)
        elif how == "tuner sigkilled":
            tuner.kill()
        _, stderr = tuner.communicate(timeout=60)
        expected = {"trial ends": 0, "timeout": 1, "ctrl-c": 130, "tuner sigkilled": -signal.SIGKILL}[how]
        assert tuner.returncode == expected, stderr[-2000:]
        assert _gone_within(pid, marker), f"pid {pid} ({kind}) outlived the trial ({how})"
    finally:
        if tuner.poll() is None:
            tuner.kill()
            tuner.wait()
        _kill_escaped(pid_file, marker)


def test_the_search_header_names_the_fence(tmp_path: Path):
    from autofinetune.runner import Launcher

    probe = Launcher()
    fence = probe.wait_ready()
    probe.close()
    result, rows, _ = _search(tmp_path, "autofinetune.report_final_result(0.5)\n", "--evaluator=fulltrail", popsize=1)
    assert result.returncode == 0, result.stderr[-2000:]
    assert fence in ("cgroup v2 (one per trial) + subreaper", "subreaper + environment cookie")
    assert f"fence: {fence}" in result.stdout


_DASK_TRIAL = """
import json, os, signal, subprocess, sys
from autofinetune.backends import dask_task
tmp, kind, how = sys.argv[1], sys.argv[2], sys.argv[3]
payload = {"key": "k", "argv": [sys.executable, os.path.join(tmp, "train.py"), "--x=0.5", "--saved_params_dir=" + os.path.join(tmp, "model-0")],
           "log_path": os.path.join(tmp, "log.info"), "result_path": os.path.join(tmp, "r.json"), "token": "t",
           "resource": "trial", "kill_grace": 0.5, "timeout": 1.0 if how == "timeout" else None}
print(json.dumps(dask_task.run_trial(payload)), flush=True)
"""


@pytest.mark.parametrize("kind", list(ESCAPE_KINDS))
@pytest.mark.parametrize("how", ["trial ends", "timeout", "worker sigkilled"])
def test_on_a_dask_worker_a_descendant_that_leaves_the_trials_group_does_not_outlive_it(tmp_path: Path, kind: str, how: str):
    """dask_task.run_trial in a child process standing for the worker; killing it is losing the worker."""
    marker = str(tmp_path)
    pid_file = tmp_path / "escaped.pid"
    (tmp_path / "model-0").mkdir()
    (tmp_path / "log.info").write_bytes(b"")
    (tmp_path / "train.py").write_text(PROLOGUE + _body(WHERE, f"pid_file, marker = {str(pid_file)!r}, {marker!r}\n",
                                                        _escape_body(kind, how == "trial ends")))
    worker = subprocess.Popen([sys.executable, "-c", _DASK_TRIAL, marker, kind, how], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = _escaped_pid(pid_file, worker)
        if how == "worker sigkilled":
            worker.kill()
        stdout, stderr = worker.communicate(timeout=60)
        if how != "worker sigkilled":
            assert worker.returncode == 0, stderr[-2000:]
            report = json.loads(stdout.splitlines()[-1])
            assert report["state"] == "exited"
            assert report["stop_reason"] == ("timeout" if how == "timeout" else None), report
        assert _gone_within(pid, marker), f"pid {pid} ({kind}) outlived the trial on the worker ({how})"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        _kill_escaped(pid_file, marker)
