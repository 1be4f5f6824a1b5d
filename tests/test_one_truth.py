"""One truth per idea (docs/architecture.md): the trial command, the journal, resume by replay,
the backend built before the output dir, and the option table, each tried through the real CLI.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import HPARAM_3, REPO, read_ledger, run_cli

FIXTURE = REPO / "tests" / "fixtures" / "journal_610e7f4"

#: A train.py with an `epochs` option that records the argv it was given.
EPOCHS_TRAIN = textwrap.dedent(
    """
    import argparse, json, os, sys
    import autofinetune

    p = argparse.ArgumentParser()
    p.add_argument("--learning_rate", type=float, required=True)
    p.add_argument("--batch_size", type=int, required=True)
    p.add_argument("--dropout", type=float, required=True)
    p.add_argument("--saved_params_dir", required=True)
    p.add_argument("--model_path", default=None)
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(json.dumps({"argv": sys.argv[1:], "epochs": args.epochs, "model_path": args.model_path}) + "\\n")
    open(os.path.join(args.saved_params_dir, "w.txt"), "w").write("x")
    autofinetune.report_final_result(0.5 + args.dropout / 10)
    """
)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- the trial command ----------------------------------------------------------------------------
@pytest.mark.parametrize("pairs, evaluator, words", [
    (["learning_rate", "0.05"], "fulltrail", ["learning_rate 0.05", "tuned hyperparameter", "hparam.yaml"]),
    (["saved_params_dir", "/tmp/x"], "fulltrail", ["saved_params_dir", "set by the tuner"]),
    (["model_path", "/tmp/x"], "populationbased", ["model_path", "populationbased evaluator"]),
    (["epochs", "3"], "populationbased", ["epochs", "populationbased evaluator", "--resume_epochs"]),
])
def test_a_trailing_pair_may_not_override_what_the_tuner_sets(project: Path, pairs, evaluator, words):
    out = project / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", f"--evaluator={evaluator}", "--popsize=2", "--round=1",
                      "--workers=1", f"--output_dir={out}", *pairs], cwd=project, env={"LEDGER": str(project / "ledger")})
    assert result.returncode == 2
    line = _one_line(result)
    for word in words:
        assert word in line, (word, line)
    assert not out.exists() and not (project / "ledger").exists()  # refused before anything ran


def test_model_path_is_an_ordinary_trailing_pair_under_full_trail(project: Path):
    """Full-trail never passes --model_path itself: a pretrained model path is the user's to give."""
    (project / "train.py").write_text(EPOCHS_TRAIN)
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--evaluator=fulltrail", "--popsize=1", "--round=1", "--workers=1",
                      f"--output_dir={project / 'out'}", "model_path", "/pretrained"], cwd=project, env={"LEDGER": str(project / "ledger")})
    assert result.returncode == 0, result.stderr
    assert [r["model_path"] for r in read_ledger(project / "ledger")] == ["/pretrained"]


def test_a_tuned_epochs_is_refused_under_population_based_and_kept_under_full_trail(project: Path):
    (project / "train.py").write_text(EPOCHS_TRAIN)
    (project / "epochs.yaml").write_text(HPARAM_3 + "- {name: epochs, type: int, init_value: 3, greater_than: 1, lower_than: 9}\n")
    result = run_cli(["train.py", "--param_file=epochs.yaml", "--popsize=2", "--round=2", "--workers=1", f"--output_dir={project / 'pbt'}"],
                     cwd=project, env={"LEDGER": str(project / "ledger")})
    assert result.returncode == 2
    line = _one_line(result)
    assert "'epochs'" in line and "--evaluator=fulltrail" in line and "rename" in line
    result = run_cli(["train.py", "--param_file=epochs.yaml", "--evaluator=fulltrail", "--popsize=2", "--round=2", "--workers=1", "--seed=3",
                      f"--output_dir={project / 'full'}"], cwd=project, env={"LEDGER": str(project / "ledger")})
    assert result.returncode == 0, result.stderr
    rows = json.loads((project / "full" / "trials.json").read_text())
    seen = read_ledger(project / "ledger")
    assert sorted(r["epochs"] for r in rows) == sorted(s["epochs"] for s in seen)  # the records tell what ran
    assert all(sum(a.startswith("--epochs=") for a in s["argv"]) == 1 for s in seen)


def test_resume_epochs_sets_the_epochs_of_resumed_trials(project: Path):
    (project / "train.py").write_text(EPOCHS_TRAIN)
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", "--workers=1", "--resume_epochs=3",
                      f"--output_dir={project / 'out'}"], cwd=project, env={"LEDGER": str(project / "ledger")})
    assert result.returncode == 0, result.stderr
    seen = read_ledger(project / "ledger")
    assert sorted((s["model_path"] is not None, s["epochs"]) for s in seen) == [(False, 5), (False, 5), (True, 3), (True, 3)]
    assert "resumes from round0/model-" in result.stdout  # each resumed trial names its parent


# -- the backend is built before the output dir is touched ------------------------------------------
def test_a_backend_that_fails_to_start_leaves_no_output_dir(project: Path, tmp_path: Path):
    pytest.importorskip("distributed")
    shim = tmp_path / "no_dask"
    shim.mkdir()
    (shim / "distributed.py").write_text("raise ImportError('No module named distributed', name='distributed')\n")
    out = project / "out"
    command = ["train.py", "--param_file=hparam.yaml", "--evaluator=fulltrail", "--popsize=2", "--round=1", "--workers=2",
               "--backend=dask", f"--output_dir={out}"]
    env = {"LEDGER": str(project / "ledger")}
    result = run_cli(command, cwd=project, env={**env, "PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert result.returncode == 2 and "pip install 'autofinetune[dask]'" in _one_line(result)
    assert not out.exists()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli(command + [f"--scheduler_address=tcp://127.0.0.1:{port}"], cwd=project,
                     env={**env, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert result.returncode == 2 and "cannot reach the Dask scheduler" in _one_line(result)
    assert not out.exists()
    result = run_cli(command, cwd=project, env=env, timeout=180)  # the same command, once Dask is there
    assert result.returncode == 0, result.stderr
    assert len(json.loads((out / "trials.json").read_text())) == 2


# -- the journal --------------------------------------------------------------------------------------
def _run(project: Path, out: Path, *extra: str, rounds: int = 2) -> subprocess.CompletedProcess:
    return run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", f"--round={rounds}", "--workers=2", "--seed=5",
                    "--evaluator=fulltrail", f"--output_dir={out}", "--no_progress", *extra], cwd=project, env={"LEDGER": str(project / "ledger")})


def test_a_torn_last_line_is_cut_before_the_next_append(project: Path):
    out = project / "out"
    assert _run(project, out, rounds=1).returncode == 0
    journal = out / "journal.jsonl"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"event": "finish", "tri')  # killed mid-write
    result = _run(project, out, "--resume", rounds=2)
    assert result.returncode == 0, result.stderr
    assert "cut off a torn last line" in result.stderr
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])  # nothing glued
    assert run_cli(["summary", str(out)], cwd=project).returncode == 0
    assert _run(project, out, "--resume", rounds=3).returncode == 0


@pytest.mark.parametrize("bad", ['{not json', '{"event": "finish"}', '{"event": "queued", "round": 0}', '[1, 2]',
                                 '{"event": "started", "round": "x", "index": 0, "pid": 1}', '{"event": "teleported"}'])
def test_any_other_bad_line_stops_resume_and_summary_with_its_line_number(project: Path, bad: str):
    out = project / "out"
    assert _run(project, out, rounds=1).returncode == 0
    journal = out / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text(lines[0] + bad + "\n" + "".join(lines[1:]))
    for command in (["summary", str(out)], ["plot", str(out), "--output", str(project / "p.png")]):
        result = run_cli(command, cwd=project)
        assert result.returncode == 2 and f"{journal}: line 2" in _one_line(result)
    result = _run(project, out, "--resume", rounds=2)
    assert result.returncode == 2 and f"{journal}: line 2" in _one_line(result)


def test_journal_holds_no_strategy_state(project: Path):
    """Strategies are restored by replay: the journal holds data, never a pickle or a blob."""
    out = project / "out"
    assert run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=6", "--round=2", "--workers=2", "--seed=5",
                    "--tuning_strategy=hazero", "--evaluator=fulltrail", f"--output_dir={out}"], cwd=project,
                   env={"LEDGER": str(project / "ledger")}).returncode == 0
    text = (out / "journal.jsonl").read_text()
    assert "pickle" not in text and '"strategy": {' not in text
    assert max(len(line) for line in text.splitlines()) < 4000


@pytest.mark.parametrize("strategy", ["pshe2", "hazero"])
def test_a_journal_of_the_previous_release_resumes_exactly(tmp_path: Path, strategy: str):
    """Written by commit 610e7f4 (see the fixture's README): resuming it to a third round
    proposes exactly what that release proposed in an uninterrupted three-round run."""
    shutil.copy(FIXTURE / "train.py", tmp_path / "train.py")
    shutil.copy(FIXTURE / "hparam.yaml", tmp_path / "hparam.yaml")
    out = tmp_path / "out"
    out.mkdir()
    text = (FIXTURE / f"{strategy}.jsonl").read_text().replace("@OUT@", str(out)).replace("@PROJECT@", str(tmp_path))
    (out / "journal.jsonl").write_text(text)
    for event in map(json.loads, text.splitlines()):
        if event["event"] == "finish":
            model = Path(event["trial"]["model_dir"])
            model.mkdir(parents=True, exist_ok=True)
            (model / "model.txt").write_text("saved\n")
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=3", "--seed=7", f"--tuning_strategy={strategy}",
                      "--workers=2", f"--output_dir={out}", "--resume", "--no_progress"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "did not reproduce" not in result.stderr
    events = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    proposed = {e["index"]: e["point"] for e in events if e["event"] == "queued" and e["round"] == 2}
    expected = json.loads((FIXTURE / "round2_points.json").read_text())[strategy]
    assert [proposed[i] for i in sorted(proposed)] == expected
    assert sum(e["event"] == "finish" for e in events) == 12  # 8 kept, 4 new: nothing ran twice


# -- options ------------------------------------------------------------------------------------------
def test_strategy_options_are_checked_journaled_and_kept_on_resume(project: Path):
    out = project / "out"
    result = _run(project, out, "--strategy_option", "alpha=7", rounds=1)
    assert result.returncode == 2 and "alpha" in _one_line(result) and not out.exists()
    result = _run(project, out, "--strategy_option", "gamma=0.1", rounds=1)
    assert result.returncode == 2 and "gamma" in _one_line(result)
    assert _run(project, out, "--strategy_option", "alpha=0.3", rounds=1).returncode == 0
    start = json.loads((out / "journal.jsonl").read_text().splitlines()[0])
    assert start["config"]["strategy_options"]["alpha"] == 0.3
    result = _run(project, out, "--resume", rounds=2)
    assert result.returncode == 2 and "--strategy_option" in _one_line(result)
    assert _run(project, out, "--resume", "--strategy_option", "alpha=0.3", rounds=2).returncode == 0


def test_the_option_table_builds_the_parser_the_api_and_the_journal():
    from autofinetune import options
    from autofinetune.api import tune
    from autofinetune.cli import build_parser

    flags = {action.option_strings[0] for action in build_parser()._actions if action.option_strings}
    for option in options.OPTIONS:
        assert option.flag in flags
        assert option.name in (tune.__doc__ or "")
    assert set(options.journaled(options.defaults())) == {o.journal_key for o in options.OPTIONS if o.journal_key}
    from autofinetune.errors import ConfigError
    with pytest.raises(ConfigError, match="--popsize=0: must be at least 1"):
        options.validate({"popsize": 0})
    with pytest.raises(ConfigError, match="unknown option 'popsise'"):
        options.validate({"popsise": 3})


def test_echo_none_silences_the_search(tmp_path: Path):
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import argparse, autofinetune
        p = argparse.ArgumentParser(); p.add_argument("--x", type=float); p.add_argument("--saved_params_dir"); a = p.parse_args()
        if a.saved_params_dir.endswith("model-0"):
            raise SystemExit("crash on purpose")
        autofinetune.report_final_result(a.x)
    """))
    code = textwrap.dedent("""
        import autofinetune
        autofinetune.tune("train.py", [{"name": "x", "type": "float", "init_value": 0.5, "greater_than": 0, "lower_than": 1}],
                          popsize=2, rounds=1, workers=2, evaluator="fulltrail", output_dir="out", echo=None, visualdl=False)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    rows = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert sorted(r["status"] for r in rows) == ["failed", "ok"]  # a crash happened, and said nothing


def test_resume_says_once_when_the_replay_does_not_reproduce_the_journal(project: Path):
    """As under another cma or numpy version: the replayed candidates differ from the journaled ones."""
    out = project / "out"
    assert _run(project, out, rounds=1).returncode == 0
    journal = out / "journal.jsonl"
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    for event in events:
        if event["event"] == "queued":
            event["point"][0] = 0.123456
    journal.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = _run(project, out, "--resume", rounds=2)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("did not reproduce the journaled candidates of round 0") == 1
