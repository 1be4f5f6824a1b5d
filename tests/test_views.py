"""VisualDL logs of real searches, read back with VisualDL's own reader and served by its server.

Each search here is a real `autofinetune.api.tune` run of a small train.py in subprocesses; the
logs are checked against the search's own trials.json, never against the code that wrote them.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from autofinetune.api import tune
from autofinetune.search import SearchObserver
from autofinetune.space import load_space
from autofinetune.views import ProgressView, VisualDLView
from autofinetune.views.visualdl import hparam_value, scalar_value
from conftest import run_cli

#: A train.py following the whole contract (also --model_path/--epochs for population-based);
#: with --fail_when_batch_over=N, a trial whose batch size is above N crashes.
TRAIN = textwrap.dedent(
    """
    import argparse, os, sys, time
    import autofinetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--optimizer", required=True)
    parser.add_argument("--saved_params_dir", required=True)
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fail_when_batch_over", type=int, default=1000)
    args = parser.parse_args()
    if args.model_path and os.environ.get("SLOW_RESUMED"):
        time.sleep(60)  # lets a test interrupt the search in round 1
    if args.batch_size > args.fail_when_batch_over:
        sys.exit("simulated crash: batch size %d" % args.batch_size)
    with open(os.path.join(args.saved_params_dir, "weights.txt"), "w") as handle:
        handle.write("trained\\n")
    bonus = {"adam": 0.1, "sgd": 0.0, "rmsprop": 0.05}[args.optimizer]
    autofinetune.report_final_result(0.8 - (args.learning_rate - 0.01) ** 2 * 100 - ((args.batch_size - 20) / 40.0) ** 2 + bonus)
    """
)

SPACE = [
    {"name": "learning_rate", "init_value": 0.01, "type": "float", "lower_than": 0.1, "greater_than": 0.0001, "log": True},
    {"name": "batch_size", "init_value": 16, "type": "int", "lower_than": 32, "greater_than": 8},
    {"name": "optimizer", "init_value": "adam", "type": "choice", "values": ["adam", "sgd", "rmsprop"]},
]
NAMES = [p["name"] for p in SPACE]
POPSIZE, ROUNDS = 3, 3


def _search(folder: Path, name: str, **options: Any) -> Path:
    (folder / "train.py").write_text(TRAIN)
    out = folder / name
    progress = io.StringIO()
    tune(folder / "train.py", SPACE, popsize=POPSIZE, rounds=ROUNDS, output_dir=out, workers=2, seed=5, echo=None,
         visualdl=False, observers=[VisualDLView(), ProgressView(stream=progress)], **options)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished population-based search, every trial successful."""
    return _search(tmp_path_factory.mktemp("vdl"), "out")


@pytest.fixture(scope="module")
def with_failures(tmp_path_factory) -> Path:
    """A finished search in which the trials with a batch size above 20 crash."""
    return _search(tmp_path_factory.mktemp("vdlfail"), "out", passthrough={"fail_when_batch_over": 20})


def _trials(out: Path) -> List[Dict[str, Any]]:
    return json.loads((out / "trials.json").read_text())


def _reader(logdir: Path):
    from visualdl import LogReader

    return LogReader(logdir=str(logdir))


def _scalars(reader, run: Path, tag: str) -> Dict[int, float]:
    """{step: value} of one scalar tag of one run (VisualDL's reader keys tags with '%' for '/')."""
    data = reader.get_log_data("scalar", str(run), tag.replace("/", "%"))
    steps = [item[0] for item in data]
    assert len(steps) == len(set(steps)), f"{run} {tag}: a step was written twice: {steps}"
    return {item[0]: item[3] for item in data}


def _as_scalar(name: str, value: Any) -> float:
    choices = next((p.get("values") for p in SPACE if p["name"] == name), None)
    return float(choices.index(value)) if choices and isinstance(value, str) else float(value)


def _hparam_runs(reader, logdir: Path) -> Dict[str, Any]:
    """{run: its single hparams record} for every run that holds one."""
    runs = {}
    for run in reader.runs():
        try:
            records = reader.get_log_data("hyper_parameters", run, "hparam")
        except KeyError:
            continue
        if records:
            assert len(records) == 1, f"{run}: VisualDL shows only one hparams record per run"
            runs[run] = records[0].hparam
    return runs


def test_original_tags_one_value_per_round_read_back_with_visualdl(finished: Path):
    logdir = finished / "visualization"
    reader = _reader(logdir)
    trials = _trials(finished)
    assert len(trials) == POPSIZE * ROUNDS and all(t["status"] == "ok" for t in trials)

    # visualization/: the best-so-far trial's hyperparameters and score, one value per round.
    best_so_far = {}
    best = None
    for round_index in range(ROUNDS):
        for trial in [t for t in trials if t["round"] == round_index]:
            if best is None or trial["score"] > best["score"]:
                best = trial
        best_so_far[round_index] = best
    for name in NAMES:
        values = _scalars(reader, logdir, f"hyperparameter_tuning/{name}")
        assert sorted(values) == list(range(ROUNDS)), name
        for step, value in values.items():
            assert value == pytest.approx(_as_scalar(name, best_so_far[step][name]), rel=1e-6), (name, step)
    best_values = _scalars(reader, logdir, "hyperparameter_tuning/best_eval_value")
    assert sorted(best_values) == list(range(ROUNDS))
    for step, value in best_values.items():
        assert value == pytest.approx(best_so_far[step]["score"], rel=1e-6, abs=1e-6)
    assert best_values[ROUNDS - 1] == pytest.approx(max(t["score"] for t in trials), rel=1e-6, abs=1e-6)

    # visualization/pop_<i>/: candidate i's trial of each round.
    for index in range(POPSIZE):
        run = logdir / f"pop_{index}"
        mine = {t["round"]: t for t in trials if t["index"] == index}
        for name in NAMES:
            values = _scalars(reader, run, f"population_transformation/{name}")
            assert sorted(values) == list(range(ROUNDS)), (index, name)
            for step, value in values.items():
                assert value == pytest.approx(_as_scalar(name, mine[step][name]), rel=1e-6), (index, name, step)
        scores = _scalars(reader, run, "population_transformation/eval_value")
        assert sorted(scores) == list(range(ROUNDS))
        for step, value in scores.items():
            assert value == pytest.approx(mine[step]["score"], rel=1e-6, abs=1e-6)


def test_one_hparams_record_per_trial_with_plain_types(finished: Path):
    logdir = finished / "visualization"
    reader = _reader(logdir)
    trials = _trials(finished)
    records = _hparam_runs(reader, logdir)
    assert len(records) == len(trials)
    by_key = {(t["round"], t["index"]): t for t in trials}
    seen = set()
    for run, record in records.items():
        name = Path(run).name  # round<r>-trial<i>
        r, i = (int(part) for part in name.replace("round", "").split("-trial"))
        trial = by_key[(r, i)]
        seen.add((r, i))
        values = {info.name: getattr(info, info.WhichOneof("type")) for info in record.hparamInfos}
        assert set(values) == set(NAMES) | {"status"}  # nothing dropped (numpy ints would be)
        assert values["learning_rate"] == pytest.approx(trial["learning_rate"])
        assert record.hparamInfos[[x.name for x in record.hparamInfos].index("batch_size")].WhichOneof("type") == "float_value"
        assert values["batch_size"] == float(trial["batch_size"])
        assert values["optimizer"] == trial["optimizer"] and values["status"] == "ok"
        assert [m.name for m in record.metricInfos] == ["hparams/eval_value"]
        metric = _scalars(reader, Path(run), "hparams/eval_value")
        assert list(metric.values()) == [pytest.approx(trial["score"], rel=1e-6, abs=1e-6)]
    assert seen == set(by_key)


def test_failed_trials_get_no_invented_score(with_failures: Path):
    logdir = with_failures / "visualization"
    reader = _reader(logdir)
    trials = _trials(with_failures)
    failed = [t for t in trials if t["status"] != "ok"]
    assert failed and len(failed) < len(trials), "the fixture should mix crashes and successes"
    for index in range(POPSIZE):
        mine = {t["round"]: t for t in trials if t["index"] == index}
        scores = _scalars(reader, logdir / f"pop_{index}", "population_transformation/eval_value")
        assert set(scores) == {r for r, t in mine.items() if t["status"] == "ok"}  # no 0.0 for a crash
        assert set(_scalars(reader, logdir / f"pop_{index}", "population_transformation/batch_size")) == set(range(ROUNDS))
    records = _hparam_runs(reader, logdir)
    assert len(records) == len(trials)  # failed trials are listed too, with their status
    for trial in failed:
        run = logdir / "trials" / f"round{trial['round']}-trial{trial['index']}"
        record = records[str(run)]
        assert {info.name: info.string_value for info in record.hparamInfos if info.name == "status"} == {"status": "failed"}
        assert _scalars(reader, run, "hparams/eval_value") == {}
    best = _scalars(reader, logdir, "hyperparameter_tuning/best_eval_value")
    assert max(best.values()) == pytest.approx(max(t["score"] for t in trials if t["status"] == "ok"), rel=1e-6, abs=1e-6)


DRIVER = textwrap.dedent(
    """
    import json, sys
    from autofinetune.api import tune

    out, mode = sys.argv[1], sys.argv[2]
    tune("train.py", json.loads(sys.argv[3]), popsize=%d, rounds=%d, output_dir=out, workers=%d, seed=5,
         echo=None, resume=mode == "resume")  # tune() attaches the VisualDL view itself
    """ % (POPSIZE, ROUNDS, POPSIZE)
)


def test_resumed_search_keeps_one_value_per_round(tmp_path: Path):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "driver.py").write_text(DRIVER)
    out = tmp_path / "out"
    command = [sys.executable, "driver.py", str(out)]
    process = subprocess.Popen(command + ["new", json.dumps(SPACE)], cwd=tmp_path, env=dict(os.environ, SLOW_RESUMED="1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        journal = out / "journal.jsonl"
        deadline = time.monotonic() + 60
        while not (journal.is_file() and journal.read_text().count('"event": "started"') >= 2 * POPSIZE):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "round 1 did not start"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)  # Ctrl-C in round 1: round 0 is logged, round 1 is not
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert len(_hparam_runs(_reader(out / "visualization"), out / "visualization")) == POPSIZE
    result = subprocess.run(command + ["resume", json.dumps(SPACE)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    logdir = out / "visualization"
    reader = _reader(logdir)  # VisualDL reads only the newest file of each folder
    trials = _trials(out)
    assert len(trials) == POPSIZE * ROUNDS
    for tag in [f"hyperparameter_tuning/{n}" for n in NAMES] + ["hyperparameter_tuning/best_eval_value"]:
        assert sorted(_scalars(reader, logdir, tag)) == list(range(ROUNDS)), tag
    for index in range(POPSIZE):
        scores = _scalars(reader, logdir / f"pop_{index}", "population_transformation/eval_value")
        assert scores == {t["round"]: pytest.approx(t["score"], rel=1e-6, abs=1e-6) for t in trials if t["index"] == index}
    assert len(_hparam_runs(reader, logdir)) == len(trials)


def test_value_casts_survive_visualdl_traps():
    space = load_space(SPACE + [{"name": "width", "init_value": 64, "type": "choice", "values": [32, 64]}])
    params = {p.name: p for p in space.params}
    cast = hparam_value(params["batch_size"], np.int64(12))
    assert type(cast) is float and cast == 12.0  # add_hparams silently drops numpy ints
    assert type(hparam_value(params["learning_rate"], np.float32(0.5))) is float
    assert hparam_value(params["width"], 64) == "64"
    assert scalar_value(params["optimizer"], "rmsprop") == 2.0
    assert scalar_value(params["width"], 64) == 64.0  # a numeric choice keeps its number


def test_importing_autofinetune_and_views_loads_no_heavy_library(finished: Path):
    heavy = "('visualdl', 'matplotlib', 'tqdm', 'cma', 'numpy')"
    code = ("import sys, autofinetune, autofinetune.views, autofinetune.views.summary, autofinetune.views.plot; "
            "from autofinetune.views.summary import format_text, summarize; "
            f"format_text(summarize(sys.argv[1])); print(sorted(m for m in {heavy} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(finished)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # `autofinetune summary` and `plot` start fast
    code = ("import sys, autofinetune.views.visualdl, autofinetune.views.progress; "
            "print(sorted(m for m in ('visualdl', 'tqdm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # visualdl and tqdm wait until a search starts


def test_views_facade_is_lazy_and_has_no_default_observers():
    import autofinetune.views as views

    assert issubclass(views.VisualDLView, SearchObserver) and issubclass(views.ProgressView, SearchObserver)
    assert not hasattr(views, "default_observers")  # tune() attaches the views; there is one place for it


def test_live_progress_line_keeps_search_lines_whole(tmp_path: Path):
    pytest.importorskip("tqdm")
    (tmp_path / "train.py").write_text(TRAIN)
    stream = io.StringIO()
    lines: List[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        stream.write(line + "\n")

    view = ProgressView(stream=stream, live=True, refresh_seconds=0.05)
    tune(tmp_path / "train.py", SPACE, popsize=2, rounds=2, output_dir=tmp_path / "out", workers=2, seed=1,
         echo=echo, observers=[view])
    text = stream.getvalue()
    assert "4/4 trials" in text and "best " in text and "round 2/2" in text
    assert "\r" in text  # a redrawn line, not one line per update
    for line in lines:  # each search line was written whole, at the start of a cleared line
        assert "\n" + line + "\n" in text or "\r" + line + "\n" in text or text.startswith(line + "\n"), line
    assert view._bar is None and view._ticker is None  # closed, thread stopped


#: Every trial scores 0.75, and a higher index finishes sooner (index 3 first, index 0 last).
TIE_TRAIN = textwrap.dedent(
    """
    import argparse, os, time
    import autofinetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--saved_params_dir", required=True)
    args = parser.parse_args()
    index = int(os.path.basename(os.path.normpath(args.saved_params_dir)).split("-")[-1])
    time.sleep(0.6 * (3 - index))
    with open(os.path.join(args.saved_params_dir, "weights.txt"), "w") as handle:
        handle.write("index %d\\n" % index)
    autofinetune.report_final_result(0.75)
    """
)

TIE_HPARAM = textwrap.dedent(
    """
    param_list:
    - name : learning_rate
      init_value : 0.01
      type : float
      lower_than : 0.1
      greater_than : 0.0001
    - name : batch_size
      init_value : 16
      type : int
      lower_than : 32
      greater_than : 8
    """
)


def test_a_tie_goes_to_the_earliest_trial_everywhere(tmp_path: Path):
    """best_model/, summary and VisualDL once disagreed on a tie (finish order vs (round, index))."""
    (tmp_path / "train.py").write_text(TIE_TRAIN)
    (tmp_path / "hparam.yaml").write_text(TIE_HPARAM)
    out = tmp_path / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=1", "--evaluator=fulltrail",
                      "--workers=4", "--seed=1", f"--output_dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    finishes = [json.loads(line)["trial"]["index"] for line in (out / "journal.jsonl").read_text().splitlines()
                if '"event": "finish"' in line]
    assert finishes[0] == 3 and finishes[-1] == 0, f"the test needs trial 3 to finish first, trial 0 last: {finishes}"
    trials = {t["index"]: t for t in _trials(out)}
    assert {t["score"] for t in trials.values()} == {0.75}
    assert len({t["learning_rate"] for t in trials.values()}) == 4, "the candidates should differ"

    assert json.loads((out / "best_model" / ".autofinetune_best.json").read_text())["index"] == 0
    assert (out / "best_model" / "weights.txt").read_text() == "index 0\n"
    summary = run_cli(["summary", str(out), "--format", "json"], cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    data = json.loads(summary.stdout)
    assert (data["best"]["round"], data["best"]["index"]) == (0, 0)
    assert [t["index"] for t in data["top"]] == [0, 1, 2, 3]
    assert data["rounds"][0]["best_index"] == 0

    logdir = out / "visualization"
    reader = _reader(logdir)
    assert _scalars(reader, logdir, "hyperparameter_tuning/best_eval_value") == {0: pytest.approx(0.75)}
    for name in ("learning_rate", "batch_size"):
        assert _scalars(reader, logdir, f"hyperparameter_tuning/{name}") == {0: pytest.approx(float(trials[0][name]), rel=1e-6)}


# -- the real VisualDL server -----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=20) as response:
        assert response.status == 200
        payload = json.loads(response.read().decode())
    assert payload["status"] == 0, payload
    return payload["data"]


@pytest.fixture(scope="module")
def server(finished: Path):
    """`visualdl --logdir visualization` on a free port of 127.0.0.1, stopped by its PID."""
    port = _free_port()
    log = (finished.parent / "visualdl-server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "visualdl.server.app", "--logdir", "visualization", "--host", "127.0.0.1",
                                "--port", str(port), "-L", "en", "--disable-telemetry"],
                               cwd=finished, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (finished.parent / "visualdl-server.log").read_text()
            try:
                with urllib.request.urlopen(base + "/alive", timeout=2) as response:
                    if response.status in (200, 204):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "visualdl did not come up in 60 s"
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_visualdl_server_serves_scalars_and_hparams(server: str, finished: Path):
    trials = _trials(finished)
    runs = _get(server + "/app/api/runs")
    assert "visualization" in runs and all(f"visualization/pop_{i}" in runs for i in range(POPSIZE))
    tags = _get(server + "/app/api/scalar/tags")
    main_tags = tags["tags"][tags["runs"].index("visualization")]
    assert set(main_tags) == {f"hyperparameter_tuning/{n}" for n in NAMES} | {"hyperparameter_tuning/best_eval_value"}
    query = urllib.parse.urlencode({"run": "visualization", "tag": "hyperparameter_tuning/best_eval_value"})
    points = _get(server + "/app/api/scalar/list?" + query)  # [[walltime ms, step, value], ...]
    assert [p[1] for p in points] == list(range(ROUNDS))
    assert points[-1][2] == pytest.approx(max(t["score"] for t in trials), rel=1e-6, abs=1e-6)
    query = urllib.parse.urlencode({"run": "visualization/pop_1", "tag": "population_transformation/eval_value"})
    points = _get(server + "/app/api/scalar/list?" + query)
    expected = {t["round"]: t["score"] for t in trials if t["index"] == 1}
    assert {p[1]: pytest.approx(p[2], rel=1e-6, abs=1e-6) for p in points} == expected

    listed = _get(server + "/app/api/hparams/list")
    assert len(listed) == len(trials)
    by_run = {f"visualization/trials/round{t['round']}-trial{t['index']}": t for t in trials}
    for item in listed:
        trial = by_run[item["name"]]
        assert item["hparams"]["optimizer"] == trial["optimizer"]
        assert item["hparams"]["batch_size"] == float(trial["batch_size"])
        assert item["metrics"]["hparams/eval_value"] == pytest.approx(trial["score"], rel=1e-6, abs=1e-6)
    indicators = _get(server + "/app/api/hparams/indicators")
    kinds = {h["name"]: h["type"] for h in indicators["hparams"]}
    assert kinds == {"learning_rate": "continuous", "batch_size": "continuous", "optimizer": "string", "status": "string"}
    assert [m["name"] for m in indicators["metrics"]] == ["hparams/eval_value"]


def test_headless_chromium_renders_the_hyper_parameters_tab(server: str, tmp_path: Path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "hparams.png"
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--window-size=1280,800",
                             f"--screenshot={shot}", server + "/app/hyper-parameter"],
                            capture_output=True, text=True, timeout=90)
    assert shot.is_file(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000  # a rendered table, not a blank page (a blank one is a few KB)
