"""The Dask backend (`--backend=dask`) against a real Dask scheduler and real workers on 127.0.0.1.

The cluster is started here as `dask scheduler` / `dask worker` subprocesses (fake GPU ids in the
workers' CUDA_VISIBLE_DEVICES, `--resources GPU=n`) and stopped by their handles; searches run
through the real CLI. The machine is the same, so the tests can check remote pids directly.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List

import pytest

distributed = pytest.importorskip("distributed")

from autofinetune.backends import dask_task  # noqa: E402
from autofinetune.backends.messages import ReportState, TrialPayload, TrialReport  # noqa: E402
from autofinetune.runner import NO_REPORT  # noqa: E402
from conftest import HPARAM_3, LEDGER_TRAIN, read_ledger, run_cli  # noqa: E402

#: LEDGER_TRAIN with the ledger path as an option: trials run in the workers' environment, not the tuner's.
CLUSTER_TRAIN = LEDGER_TRAIN.replace('parser.add_argument("--extra", default=None)',
                                     'parser.add_argument("--extra", default=None)\nparser.add_argument("--ledger", required=True)'
                                     ).replace('os.environ["LEDGER"]', "args.ledger")
assert "args.ledger" in CLUSTER_TRAIN and "--ledger" in CLUSTER_TRAIN

#: A trial that leaves a grandchild, writes its pids and GPU, and holds until the release file exists.
HOLD_TRAIN = textwrap.dedent("""
    import argparse, os, subprocess, sys, time
    import autofinetune
    p = argparse.ArgumentParser()
    p.add_argument("--x", type=float); p.add_argument("--saved_params_dir"); p.add_argument("--model_path"); p.add_argument("--epochs")
    p.add_argument("--release"); p.add_argument("--ignore_term", default="no")
    a = p.parse_args()
    if a.ignore_term == "yes":
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(os.path.join(a.saved_params_dir, "pids.tmp"), "w") as f:
        f.write(f"{os.getpid()} {child.pid} {os.environ.get('CUDA_VISIBLE_DEVICES')}")
    os.replace(os.path.join(a.saved_params_dir, "pids.tmp"), os.path.join(a.saved_params_dir, "pids"))
    print(f"holding on CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    deadline = time.time() + 60
    while not os.path.exists(a.release) and time.time() < deadline:
        time.sleep(0.05)
    child.kill()
    autofinetune.report_final_result(a.x)
""")

ONE_PARAM = "param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n"


class Cluster:
    """A scheduler and workers as subprocesses; `stop()` ends exactly those processes."""

    def __init__(self, folder: Path, workers: Dict[str, dict]) -> None:
        self.folder = folder
        self.procs: Dict[str, subprocess.Popen] = {}
        env = dict(os.environ, DASK_LOGGING__DISTRIBUTED="warning")
        scheduler_file = folder / "scheduler.json"
        dask = [sys.executable, "-m", "dask"]
        self._spawn("scheduler", dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                         "--scheduler-file", str(scheduler_file)], env)
        for name, spec in workers.items():
            worker_env = dict(env, CUDA_VISIBLE_DEVICES=spec["cuda"], **spec.get("env", {}))
            self._spawn(name, dask + ["worker", "--scheduler-file", str(scheduler_file), "--name", name, "--host", "127.0.0.1",
                                      "--nthreads", str(spec["gpus"]), "--resources", f"GPU={spec['gpus']}", "--no-nanny",
                                      "--no-dashboard", "--memory-limit", "0"], worker_env)
        try:
            deadline = time.monotonic() + 30
            while not scheduler_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.address = json.loads(scheduler_file.read_text())["address"]
            with distributed.Client(self.address, timeout=20, set_as_default=False) as client:
                client.wait_for_workers(len(workers), timeout=30)
                self.workers = {info["name"]: address for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, argv: List[str], env: dict) -> None:
        with open(self.folder / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three fake GPUs on two workers: A holds GPU=2 and sees 5,6; B holds GPU=1 and sees 7."""
    started = Cluster(tmp_path_factory.mktemp("dask-cluster"), {"A": {"cuda": "5,6", "gpus": 2}, "B": {"cuda": "7", "gpus": 1}})
    yield started
    started.stop()


@pytest.fixture
def project(tmp_path: Path):
    (tmp_path / "train.py").write_text(CLUSTER_TRAIN)
    (tmp_path / "hold.py").write_text(HOLD_TRAIN)
    (tmp_path / "hparam.yaml").write_text(HPARAM_3)
    (tmp_path / "one.yaml").write_text(ONE_PARAM)
    return tmp_path


def _max_overlap(records) -> int:
    events = sorted(itertools.chain.from_iterable(((r["start"], 1), (r["end"], -1)) for r in records), key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _hold_pids(out: Path, count: int, timeout: float = 30) -> List[List[str]]:
    files = lambda: sorted(out.glob("round0/model-*/pids"))  # noqa: E731
    assert _wait_for(lambda: len(files()) >= count, timeout), f"only {len(files())} of {count} trials started"
    return [f.read_text().split() for f in files()]


def _rows(out: Path) -> List[dict]:
    return json.loads((out / "trials.json").read_text())


def _tuner(args: List[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autofinetune", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cluster_search_one_gpu_per_trial_never_over_capacity(cluster: Cluster, project: Path):
    ledger, out = project / "ledger.jsonl", project / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=6", "--round=2", f"--output_dir={out}", "--backend=dask",
                      f"--scheduler_address={cluster.address}", "--seed=5", "sleep", "0.4", "ledger", str(ledger)], cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"on Dask cluster {cluster.address} (2 worker(s) with GPU=3 in all; each trial takes GPU=1)" in result.stdout
    rows = _rows(out)
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    records = read_ledger(ledger)
    assert len(records) == 12
    assert {r["cuda"] for r in records} <= {"5", "6", "7"}  # exactly one of the workers' ids each
    assert _max_overlap(records) <= 3  # never more trials than GPU units in the cluster
    for gpu in ("5", "6", "7"):
        assert _max_overlap([r for r in records if r["cuda"] == gpu]) <= 1  # and never two on one GPU
    for row in rows:
        worker = cluster.workers["A" if row["gpu"] in ("5", "6") else "B"]
        assert row["slot"] == f"gpu:{row['gpu']}@{worker.split('://')[1]}"
    started = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines() if '"started"' in line]
    assert len(started) == 12 and all(e["worker"] in cluster.workers.values() for e in started)


def test_crashing_trials_fail_and_the_search_goes_on(cluster: Cluster, project: Path):
    ledger, out = project / "ledger.jsonl", project / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=1", f"--output_dir={out}", "--backend=dask",
                      f"--scheduler_address={cluster.address}", "--seed=1", "mode", "crash", "ledger", str(ledger)], cwd=project)
    rows = _rows(out)
    crashed = [r for r in rows if r["batch_size"] % 2 == 0]
    assert crashed and len(crashed) < len(rows) and result.returncode == 0, result.stderr
    for row in rows:
        assert row["status"] == ("failed" if row in crashed else "ok")
    assert all(r["message"] == "exit code 1" for r in crashed)
    assert result.stderr.count("was crashed!") == len(crashed)
    assert "simulated crash" in (out / "round0" / f"log-{crashed[0]['index']}.info").read_text()


def test_timeout_kills_the_remote_trial_group(cluster: Cluster, project: Path):
    out = project / "out"
    result = run_cli(["hold.py", "--param_file=one.yaml", "--popsize=2", "--round=1", f"--output_dir={out}", "--backend=dask",
                      f"--scheduler_address={cluster.address}", "--seed=1", "--timeout=1.5", "--kill_grace=0.5", "--evaluator=fulltrail",
                      "release", str(project / "never"), "ignore_term", "yes"], cwd=project, timeout=60)
    assert result.returncode == 1  # nothing succeeded
    assert [r["status"] for r in _rows(out)] == ["timeout", "timeout"]
    pids = [int(p) for row in _hold_pids(out, 2, timeout=0) for p in row[:2]]
    assert _wait_for(lambda: not any(_alive(p) for p in pids), 3), "the trial or its grandchild survived the timeout"


@pytest.mark.parametrize("where", ["remote", "in-process"])
def test_ctrl_c_stops_the_trials(where: str, request: pytest.FixtureRequest, project: Path):
    out = project / "out"
    on = [f"--scheduler_address={request.getfixturevalue('cluster').address}"] if where == "remote" else ["--gpu=3,4,4"]
    tuner = _tuner(["hold.py", "--param_file=one.yaml", "--popsize=3", "--round=1", f"--output_dir={out}", "--backend=dask",
                    *on, "--seed=1", "--kill_grace=1", "release", str(project / "never")], project)
    try:
        pids = [int(p) for row in _hold_pids(out, 3) for p in row[:2]]
        assert all(_alive(p) for p in pids)
        tuner.send_signal(signal.SIGINT)
        _, stderr = tuner.communicate(timeout=30)
    finally:
        if tuner.poll() is None:
            tuner.kill()
            tuner.wait()
    assert tuner.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert not any(_alive(p) for p in pids)  # stopped before the tuner exited
    events = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert sorted(e["index"] for e in events if e["event"] == "interrupted") == [0, 1, 2]


def test_killed_tuner_cancels_remote_trials_and_resume_never_kills_local_pids(cluster: Cluster, project: Path):
    out, release = project / "out", project / "release"
    args = ["hold.py", "--param_file=one.yaml", "--popsize=3", "--round=1", f"--output_dir={out}", "--backend=dask",
            f"--scheduler_address={cluster.address}", "--seed=1", "--kill_grace=0.5", "release", str(release)]
    tuner = _tuner(args, project)
    try:
        pids = [int(p) for row in _hold_pids(out, 3) for p in row[:2]]
    finally:
        tuner.kill()  # SIGKILL: no cleanup at all in the tuner
        tuner.communicate()
    # Its client is gone, so the scheduler cancels its tasks and each worker stops its trial group.
    assert _wait_for(lambda: not any(_alive(p) for p in pids), 10), "remote trials outlived the killed tuner"

    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)  # a local pid
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)  # "on worker A"
    try:
        journal = out / "journal.jsonl"
        events = [json.loads(line) for line in journal.read_text().splitlines()]
        assert {e["worker"] for e in events if e["event"] == "started"} <= set(cluster.workers.values())
        events += [
            {"event": "started", "round": 0, "index": 0, "attempt": 0, "pid": decoy.pid, "start_ticks": _ticks(decoy.pid),
             "slot": "gpu:5@gone", "worker": "tcp://127.0.0.1:9"},  # a worker that no longer exists
            {"event": "started", "round": 0, "index": 1, "attempt": 0, "pid": leftover.pid, "start_ticks": _ticks(leftover.pid),
             "slot": "gpu:5@A", "worker": cluster.workers["A"]},
        ]
        journal.write_text("".join(json.dumps(e) + "\n" for e in events))
        release.write_text("go")
        result = run_cli(args + ["--resume"], cwd=project, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"trial 1 from the interrupted run (pid {leftover.pid} on {cluster.workers['A']})" in result.stdout
        assert leftover.wait(timeout=5) is not None  # stopped by worker A, where the journal says it ran
        assert decoy.poll() is None  # never signalled: its pid is this machine's, the trial's was not
        assert "trial 0 from the interrupted run" not in result.stdout
    finally:
        for proc in (decoy, leftover):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]


def test_same_seed_same_candidates_as_the_local_backend(cluster: Cluster, project: Path):
    def candidates(name: str, *backend: str):
        out = project / name
        result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=2", f"--output_dir={out}", "--seed=42",
                          *backend, "ledger", str(project / f"{name}.jsonl")], cwd=project)
        assert result.returncode == 0, result.stderr
        return [(r["round"], r["index"], r["learning_rate"], r["batch_size"], r["dropout"], r["parent"], r["score"]) for r in sorted(_rows(out), key=lambda r: (r["round"], r["index"]))]

    local = candidates("local", "--workers=2")
    assert candidates("dask", "--backend=dask", f"--scheduler_address={cluster.address}") == local


def test_without_an_address_a_killed_tuner_takes_its_in_process_cluster_trials_down(project: Path):
    out = project / "out"
    tuner = _tuner(["hold.py", "--param_file=one.yaml", "--popsize=2", "--round=1", f"--output_dir={out}", "--backend=dask",
                    "--gpu=3,4", "--seed=1", "release", str(project / "never")], project)
    try:
        pids = [int(p) for row in _hold_pids(out, 2) for p in row[:2]]
    finally:
        tuner.kill()
        tuner.communicate()
    assert _wait_for(lambda: not any(_alive(p) for p in pids), 3), "trials outlived the tuner that held their lifelines"


def test_without_an_address_a_local_cluster_pins_one_worker_per_gpu_id(project: Path):
    ledger, out = project / "ledger.jsonl", project / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=5", "--round=2", f"--output_dir={out}", "--backend=dask",
                      "--gpu=3,3,4", "--seed=2", "sleep", "0.3", "ledger", str(ledger)], cwd=project)
    assert result.returncode == 0, result.stderr
    assert "on Dask cluster tcp://127.0.0.1:" in result.stdout and "(3 worker(s) with GPU=3 in all" in result.stdout
    assert "distributed." not in result.stderr  # the in-process cluster keeps quiet
    records = read_ledger(ledger)
    assert len(records) == 10 and {r["cuda"] for r in records} <= {"3", "4"}
    assert _max_overlap([r for r in records if r["cuda"] == "3"]) <= 2
    assert _max_overlap([r for r in records if r["cuda"] == "4"]) <= 1
    rows = _rows(out)
    assert all(r["status"] == "ok" and r["slot"] == f"gpu:{r['gpu']}" for r in rows)
    started = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines() if '"started"' in line]
    assert started and not any("worker" in e for e in started)  # same machine: resume may stop them locally


def test_a_lost_worker_takes_its_trial_group_down_and_dask_reruns_the_trial(tmp_path: Path, project: Path):
    small = Cluster(tmp_path, {"W5": {"cuda": "5", "gpus": 1}, "W7": {"cuda": "7", "gpus": 1}})
    out, release = project / "out", project / "release"
    tuner = _tuner(["hold.py", "--param_file=one.yaml", "--popsize=2", "--round=1", f"--output_dir={out}", "--backend=dask",
                    f"--scheduler_address={small.address}", "--seed=1", "--evaluator=fulltrail", "release", str(release)], project)
    try:
        running = {row[2]: (int(row[0]), int(row[1])) for row in _hold_pids(out, 2)}
        assert set(running) == {"5", "7"}
        small.kill("W7")  # the worker process dies: the kernel closes its end of the lifeline
        assert _wait_for(lambda: not any(_alive(p) for p in running["7"]), 3), "the lost worker's trial group survived"
        assert all(_alive(p) for p in running["5"])
        release.write_text("go")
        stdout, stderr = tuner.communicate(timeout=60)
    finally:
        if tuner.poll() is None:
            tuner.kill()
            tuner.wait()
        small.stop()
    assert tuner.returncode == 0, stderr
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok"] and {r["gpu"] for r in rows} == {"5"}  # re-run on the survivor
    logs = "".join((out / "round0" / f"log-{i}.info").read_text() for i in range(2))
    assert "holding on CUDA_VISIBLE_DEVICES=7\n\nautofinetune: the worker running this trial was lost; running it again on" in logs
    assert "was lost; Dask runs it again on" in stderr


def test_a_worker_without_autofinetune_fails_the_search_with_the_fix_and_survives(tmp_path: Path, project: Path):
    fake = tmp_path / "fake"  # this worker's Python cannot import autofinetune
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class NoAutofinetune:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "autofinetune":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoAutofinetune())
    """))
    broken = Cluster(tmp_path, {"X": {"cuda": "5", "gpus": 1, "env": {"PYTHONPATH": str(fake)}}})
    try:
        result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=1", f"--output_dir={project / 'out'}",
                          "--backend=dask", f"--scheduler_address={broken.address}", "ledger", "x"], cwd=project)
        assert broken.procs["X"].poll() is None  # the worker lives on: the task failed, not its connection
    finally:
        broken.stop()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("autofinetune: error: a Dask worker cannot import autofinetune's trial task")
    assert "install autofinetune" in line


def test_dask_is_optional_and_named_in_the_error_when_missing(tmp_path: Path, project: Path):
    probe = "import sys, autofinetune, autofinetune.api, autofinetune.search, autofinetune.backends; " \
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    fake = tmp_path / "no_dask" / "distributed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'distributed'\", name='distributed')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=1", f"--output_dir={project / 'out'}",
                      "--backend=dask", "ledger", "x"], cwd=project, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("pip install 'autofinetune[dask]'")


def test_an_unreachable_scheduler_is_a_one_line_error(project: Path):
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=1", f"--output_dir={project / 'out'}",
                      "--backend=dask", "--scheduler_address=tcp://127.0.0.1:9", "ledger", "x"], cwd=project,
                     env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--scheduler_address=tcp://127.0.0.1:9: cannot reach the Dask scheduler" in result.stderr


# -- the worker side, without a cluster -----------------------------------------------------------

def test_gpu_choices_follow_the_workers_visible_devices_and_resource():
    assert dask_task.gpu_choices("5,6", 2, []) == ["5", "6"]
    assert dask_task.gpu_choices("2,3,0,1", 1, []) == ["2"]  # dask-cuda lists the worker's own GPU first
    assert dask_task.gpu_choices("0", 2, []) == ["0"]  # two trials share GPU 0
    assert dask_task.gpu_choices(None, 2, ["0", "1", "2"]) == ["0", "1"]
    assert dask_task.gpu_choices(None, 2, []) == ["0", "1"]
    assert dask_task.gpu_choices("", 1, ["0"]) == [""]  # told to see no GPU: neither does the trial
    key, devices = ("worker-x", "GPU"), dask_task.DeviceUse()
    taken = [devices.take(key, 2) for _ in range(3)]
    assert taken == [0, 1, 0]
    devices.release(key, 1)
    assert devices.take(key, 2) == 1


def test_run_trial_outside_dask_runs_the_supervised_trial_and_returns_its_report(tmp_path: Path):
    script = tmp_path / "t.py"
    script.write_text("import os, autofinetune; print('cuda', repr(os.environ['CUDA_VISIBLE_DEVICES'])); autofinetune.report_final_result(0.25)\n")
    log = tmp_path / "log.info"
    log.write_bytes(b"")
    payload = TrialPayload("k", ["PYTHON", str(script)], str(log), str(tmp_path / "result.json"), "tok", python="PYTHON",
                           cwd=str(tmp_path), kill_grace=1.0)
    report = TrialReport.from_dict(dask_task.run_trial(payload.to_dict()))
    assert report.state is ReportState.EXITED and report.exit_code == 0 and report.stop_reason is None
    assert json.loads(report.result)["score"] == 0.25 and json.loads(report.result)["token"] == "tok"
    assert report.started is not None and report.started.identity.host and report.started.identity.boot_id
    assert "cuda ''" in log.read_text()  # a CPU trial sees no GPU


def test_run_trial_outside_dask_enforces_the_timeout_on_a_trial_that_ignores_sigterm(tmp_path: Path):
    script = tmp_path / "t.py"
    script.write_text("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)\n")
    log = tmp_path / "log.info"
    log.write_bytes(b"")
    payload = TrialPayload("k", [sys.executable, str(script)], str(log), str(tmp_path / "result.json"), "tok", timeout=0.5,
                           kill_grace=0.3)
    started = time.monotonic()
    report = TrialReport.from_dict(dask_task.run_trial(payload.to_dict()))
    assert time.monotonic() - started < 5
    assert report.state is ReportState.EXITED and report.stop_reason == "timeout" and report.exit_code == -signal.SIGKILL
    assert report.result is None and report.result_error == NO_REPORT


def test_run_trial_refuses_a_log_the_tuner_did_not_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dask_task, "SHARED_FS_WAIT", 0.2)
    payload = {"key": "k", "argv": ["true"], "log_path": str(tmp_path / "not-shared" / "log-0.info"),
               "result_path": str(tmp_path / "r.json"), "token": "t", "resource": "trial"}  # a minimal payload, as a dict
    result = dask_task.run_trial(payload)
    assert result["state"] == "no_shared_fs"
    assert "not visible on this worker" in result["message"] and "shared by the tuner and every worker" in result["message"]
