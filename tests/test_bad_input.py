"""Bad input is one line, exit 2, within seconds, and leaves nothing behind (docs/security.md).

Each case is made here: numbers past what a search can hold, paths that loop, run through a
file or are too long, Dask addresses of the wrong kind, damaged or planted journals, and the
files a search must not write outside its output dir.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli

QUICK = 30  # seconds: a refusal answers long before this


def _refused(result, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert len(lines[0]) < 500, lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _search(project: Path, *extra: str, out: str = "out"):
    return run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=1", "--workers=2", "--evaluator=fulltrail",
                    f"--output_dir={project / out}", "--no_progress", *extra], cwd=project, env={"LEDGER": str(project / "ledger")},
                   timeout=QUICK)


# -- numbers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, words", [
    ("--timeout=inf", ["--timeout=inf", "at most"]),
    ("--timeout=1e300", ["--timeout", "at most"]),
    ("--timeout=nan", ["--timeout=nan"]),
    ("--kill_grace=inf", ["--kill_grace=inf"]),
    ("--kill_grace=-1", ["--kill_grace=-1.0", "0 or more"]),
    ("--popsize=1000000000", ["--popsize=1000000000", "at most 10000"]),
    ("--round=10000000000", ["--round", "at most"]),
    ("--workers=1000000000", ["--workers", "at most 4096"]),
    ("--max_retries=100000", ["--max_retries", "at most 1000"]),
    ("--seed=-1", ["--seed=-1", "at least 0"]),
    ("--seed=" + "9" * 400, ["--seed", "at most"]),
    ("--gpu=" + ",".join(["0"] * 5000), ["--gpu", "at most 4096"]),
    ("--gpu=0,\x01", ["--gpu"]),
])
def test_numbers_past_what_a_search_holds_are_one_line(project: Path, option: str, words):
    _refused(_search(project, option), *words)
    assert not (project / "out").exists()


# -- paths ---------------------------------------------------------------------------------------------
def _bad_paths(root: Path) -> dict:
    (root / "a_file").write_text("x")
    (root / "loop").symlink_to(root / "loop")
    return {"through a file": root / "a_file" / "sub", "a 300-character name": root / ("n" * 300),
            "a symlink loop": root / "loop" / "sub"}


@pytest.mark.parametrize("case", ["through a file", "a 300-character name", "a symlink loop"])
def test_a_bad_output_dir_is_one_line(project: Path, case: str):
    path = _bad_paths(project)[case]
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=1", "--round=1", "--workers=1", f"--output_dir={path}"],
                     cwd=project, timeout=QUICK)
    _refused(result, "--output_dir")
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=1", "--round=1", "--workers=1", f"--output_dir={path}",
                      "--resume"], cwd=project, timeout=QUICK)
    _refused(result, "--output_dir")
    for command in ("summary", "plot"):
        _refused(run_cli([command, str(path)], cwd=project, timeout=QUICK))


@pytest.mark.parametrize("case", ["through a file", "a 300-character name", "a symlink loop"])
def test_a_bad_script_path_is_one_line(project: Path, case: str):
    path = _bad_paths(project)[case]
    result = run_cli([str(path), "--param_file=hparam.yaml", "--popsize=1", "--round=1", "--workers=1",
                      f"--output_dir={project / 'out'}"], cwd=project, timeout=QUICK)
    _refused(result)
    assert not (project / "out").exists()


# -- Dask addresses ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["bogus", "http://127.0.0.1:8786", "ucx://127.0.0.1:8786", "tcp://127.0.0.1", "tcp://:99999"])
def test_a_scheduler_address_of_the_wrong_kind_is_refused_at_once(project: Path, address: str):
    started = time.monotonic()
    _refused(_search(project, "--backend=dask", f"--scheduler_address={address}"), "--scheduler_address", "tcp://")
    assert time.monotonic() - started < 10
    assert not (project / "out").exists()


def test_an_unreachable_scheduler_answers_within_seconds(project: Path):
    pytest.importorskip("distributed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    _refused(_search(project, "--backend=dask", f"--scheduler_address=tcp://127.0.0.1:{port}"), "cannot reach the Dask scheduler")
    assert time.monotonic() - started < 20
    assert not (project / "out").exists()


# -- nothing written outside the output dir --------------------------------------------------------------
def test_a_search_writes_nothing_in_home_or_the_temp_dir(project: Path, tmp_path: Path):
    pytest.importorskip("distributed")
    home, temp = tmp_path / "home", tmp_path / "temp"
    home.mkdir()
    temp.mkdir()
    env = {"LEDGER": str(project / "ledger"), "HOME": str(home), "TMPDIR": str(temp)}
    for backend in ("local", "dask"):
        result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=1", "--workers=2", "--evaluator=fulltrail",
                          f"--backend={backend}", f"--output_dir={project / backend}", "--no_progress"], cwd=project, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert (project / backend / "visualization").is_dir()
    assert sorted(p.name for p in home.iterdir()) == []  # VisualDL's config folder went under the output dir
    assert sorted(p.name for p in temp.iterdir()) == []  # so did nothing of Dask's scratch space


# -- the journal -------------------------------------------------------------------------------------------
def test_a_fifo_or_symlink_planted_as_the_journal_is_refused(project: Path, tmp_path: Path):
    assert _search(project).returncode == 0
    journal = project / "out" / "journal.jsonl"
    kept = journal.read_text()
    journal.unlink()
    os.mkfifo(journal)
    for command in (["summary", str(project / "out")], ["plot", str(project / "out")]):
        _refused(run_cli(command, cwd=project, timeout=QUICK), "journal.jsonl")
    _refused(run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", "--workers=2", "--evaluator=fulltrail",
                      f"--output_dir={project / 'out'}", "--resume"], cwd=project, timeout=QUICK), "journal.jsonl")
    journal.unlink()
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text(kept)
    journal.symlink_to(elsewhere)
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", "--workers=2", "--evaluator=fulltrail",
                      f"--output_dir={project / 'out'}", "--resume"], cwd=project, timeout=QUICK)
    _refused(result, "journal.jsonl")
    assert elsewhere.read_text() == kept  # never written through


def test_the_journal_holds_no_trial_token(project: Path):
    """A trial can read the output dir; the journal must not hand it another trial's token."""
    assert _search(project).returncode == 0
    text = (project / "out" / "journal.jsonl").read_text()
    tokens = [json.loads(p.read_text())["token"] for p in (project / "out" / "round0").glob("result-*.json")]
    assert len(tokens) == 2 and all(len(t) == 32 for t in tokens)
    assert not any(token in text for token in tokens)
    mode = (project / "out" / "trials.csv").stat().st_mode & 0o777
    for name in ("journal.jsonl", "log_file.txt", "trials.json", "round0/result-0.json", "round0/log-0.info"):
        assert (project / "out" / name).stat().st_mode & 0o777 == mode, name  # one policy for the output files: the umask


def test_a_failing_start_record_never_hangs_the_shutdown(tmp_path: Path):
    """The disk filled while a trial's start was journaled: the trial was already running, and
    the shutdown that follows must still stop and reap it (it once waited forever)."""
    import sys

    from autofinetune.backends.local import LocalBackend
    from autofinetune.devices import Slot
    from autofinetune.runner import Status, TrialSpec

    def fail(*_args) -> None:
        raise OSError(28, "No space left on device")

    backend = LocalBackend([Slot(0)], kill_grace=1.0, on_start=fail)
    spec = TrialSpec(key="t", argv=[sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "log",
                     result_path=tmp_path / "result.json")
    backend.submit(spec)
    with pytest.raises(OSError):
        backend.wait_any(timeout=5)
    outcomes = []
    worker = threading.Thread(target=lambda: outcomes.extend(backend.shutdown(grace=1.0)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "shutdown hung"
    assert [o.status for o in outcomes] == [Status.INTERRUPTED]
