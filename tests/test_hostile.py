"""Hostile and unlucky trials never hurt the tuner: timeouts, retries, floods, orphans, liars."""
from __future__ import annotations

import json
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
