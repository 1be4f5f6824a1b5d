"""End-to-end searches through the real CLI and real train.py subprocesses."""
from __future__ import annotations

import csv
import json
import itertools
import re
import textwrap
from pathlib import Path

from conftest import read_ledger, run_cli


def _intervals_max_overlap(records):
    events = sorted(itertools.chain.from_iterable(((r["start"], 1), (r["end"], -1)) for r in records), key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def test_three_rounds_of_four_write_the_full_tree(project: Path):
    out = project / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=3", f"--output_dir={out}",
                      "--evaluator=fulltrail", "--tuning_strategy=pshe2", "--workers=2", "--seed=7"],
                     cwd=project, env={"LEDGER": str(project / "ledger.jsonl")})
    assert result.returncode == 0, result.stderr
    assert len(read_ledger(project / "ledger.jsonl")) == 12
    for r in range(3):
        for i in range(4):
            assert (out / f"round{r}" / f"log-{i}.info").is_file()
            assert (out / f"round{r}" / f"model-{i}" / "weights.txt").is_file()
    assert (out / "best_model" / "weights.txt").is_file()
    log_text = (out / "log_file.txt").read_text()
    assert "learning_rate" in log_text and "batch_size" in log_text and "best so far: round" in log_text
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 12 and all(row["status"] == "ok" for row in rows)
    for row in rows:  # ints are ints and bounds hold
        assert 8 <= int(row["batch_size"]) <= 32 and re.fullmatch(r"\d+", row["batch_size"])
        assert 0.0001 <= float(row["learning_rate"]) <= 0.1
    best = max(rows, key=lambda row: float(row["score"]))
    assert (out / "best_model" / "weights.txt").read_text() == (out / best["model_dir"] / "weights.txt").read_text()
    assert f"The final best eval score is {float(best['score'])}." in result.stdout
    assert "The local best eval value in the 2-th round is" in result.stdout
    assert f"The final best model parameters are saved as {out / 'best_model'} ." in result.stdout
    for r in range(3):
        round_best = max(float(row["score"]) for row in rows if row["round"] == str(r))
        assert f"The local best eval value in the {r}-th round is {round_best}." in result.stdout
    assert (out / "journal.jsonl").is_file()


def test_fake_gpus_one_id_per_trial_and_at_most_two_at_once(project: Path):
    ledger = project / "ledger.jsonl"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=5", "--round=2", f"--output_dir={project / 'out'}",
                      "--gpu=0,1", "--seed=3", "sleep", "0.3"], cwd=project, env={"LEDGER": str(ledger)})
    assert result.returncode == 0, result.stderr
    records = read_ledger(ledger)
    assert len(records) == 10
    assert {r["cuda"] for r in records} == {"0", "1"}  # each trial saw exactly one id
    assert _intervals_max_overlap(records) == 2
    assert "not visible to pynvml" in result.stderr  # fake ids warn, never fail


def test_repeated_gpu_id_gives_three_concurrent_slots(project: Path):
    ledger = project / "ledger.jsonl"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=3", "--round=1", f"--output_dir={project / 'out'}",
                      "--gpu=0,0,1", "--seed=3", "sleep", "1.0"], cwd=project, env={"LEDGER": str(ledger)})
    assert result.returncode == 0, result.stderr
    records = read_ledger(ledger)
    assert sorted(r["cuda"] for r in records) == ["0", "0", "1"]
    assert _intervals_max_overlap(records) == 3


def test_cpu_slots_see_no_gpu_and_work_queue_fills_freed_slots(project: Path):
    """A slot takes the next candidate when it frees: no waiting for the slowest of a wave."""
    train = project / "train.py"
    train.write_text(train.read_text().replace("time.sleep(args.sleep)", "time.sleep(2.0 if args.batch_size >= 24 else 0.2)"))
    ledger = project / "ledger.jsonl"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=6", "--round=1", f"--output_dir={project / 'out'}",
                      "--workers=2", "--seed=2"], cwd=project, env={"LEDGER": str(ledger)})  # index 1 is slow, 2-4 fast
    assert result.returncode == 0, result.stderr
    records = read_ledger(ledger)
    assert all(r["cuda"] == "" for r in records)
    assert _intervals_max_overlap(records) == 2
    slow = [r for r in records if r["end"] - r["start"] > 1.5]
    fast = [r for r in records if r["end"] - r["start"] < 1.0]
    if slow and fast:  # a fast trial started while a slow one still ran
        assert any(s["start"] < f["start"] < s["end"] for s in slow for f in fast)


def test_crashing_trial_warns_and_search_completes(project: Path):
    out = project / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=4", "--round=2", f"--output_dir={out}",
                      "--workers=2", "--seed=1", "mode", "crash"], cwd=project, env={"LEDGER": str(project / "l.jsonl")})
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "trials.json").read_text())
    crashed = [r for r in rows if r["batch_size"] % 2 == 0]
    assert crashed, "the seed should produce at least one even batch size"
    assert all(r["status"] == "failed" and r["score"] is None for r in crashed)
    assert all(r["status"] == "ok" for r in rows if r["batch_size"] % 2 == 1)
    assert result.stderr.count("was crashed!") == len(crashed)
    assert "WARNING:Program which was ran with hyperparameters as learning_rate=" in result.stderr
    log = (out / crashed[0]["log_path"]).read_text()
    assert "simulated crash" in log


def test_passthrough_pairs_reach_every_trial_last(project: Path):
    ledger = project / "ledger.jsonl"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=1", f"--output_dir={project / 'out'}",
                      "--workers=2", "extra", "hello", "max_seq_len", "128"], cwd=project, env={"LEDGER": str(ledger)})
    assert result.returncode == 0, result.stderr
    for record in read_ledger(ledger):
        assert record["extra"] == "hello"
        assert record["argv"][-2:] == ["--extra=hello", "--max_seq_len=128"]
        assert record["unknown"] == ["--max_seq_len=128"]


def test_seed_repeats_candidates(project: Path):
    def candidates(name: str):
        out = project / name
        result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=3", "--round=3", f"--output_dir={out}",
                          "--workers=2", "--seed=42"], cwd=project, env={"LEDGER": str(project / f"{name}.jsonl")})
        assert result.returncode == 0, result.stderr
        return [(r["round"], r["index"], r["learning_rate"], r["batch_size"], r["dropout"]) for r in json.loads((out / "trials.json").read_text())]

    first, second = candidates("a"), candidates("b")
    assert first == second
    assert len(set(c[2:] for c in first)) > 1


def test_out_of_range_and_nan_scores_are_invalid_and_silent_exit_is_failed(tmp_path: Path):
    (tmp_path / "hparam.yaml").write_text(textwrap.dedent("""
        param_list:
        - {name: x, type: int, init_value: 1, greater_than: 0, lower_than: 3}
    """))
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import argparse, autofinetune
        p = argparse.ArgumentParser(); p.add_argument("--x", type=int); p.add_argument("--saved_params_dir")
        a = p.parse_args()
        if a.x == 0: autofinetune.report_final_result(2.0)
        elif a.x == 1: autofinetune.report_final_result(float("nan"))
        elif a.x == 2: pass
        else: autofinetune.report_final_result(0.5)
    """))
    out = tmp_path / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=8", "--round=2", f"--output_dir={out}", "--workers=2", "--seed=1", "--evaluator=fulltrail"], cwd=tmp_path)
    rows = json.loads((out / "trials.json").read_text())
    by_x = {}
    for row in rows:
        by_x.setdefault(row["x"], set()).add(row["status"])
    assert by_x.get(0, {"invalid"}) == {"invalid"}
    assert by_x.get(1, {"invalid"}) == {"invalid"}
    assert by_x.get(2, {"failed"}) == {"failed"}
    assert by_x.get(3, {"ok"}) == {"ok"}
    assert len(by_x) >= 3, by_x
    if 3 in by_x:
        assert result.returncode == 0 and "The final best eval score is 0.5." in result.stdout


def test_every_trial_failing_ends_with_clear_message_and_nonzero_exit(tmp_path: Path):
    (tmp_path / "hparam.yaml").write_text("param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n")
    (tmp_path / "train.py").write_text("raise SystemExit(3)\n")
    out = tmp_path / "out"
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", f"--output_dir={out}", "--workers=2"], cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("autofinetune: error: no trial succeeded (4 of 4 failed") and "log-0.info" in last
    assert "4 of 4 trials failed: 4 x exit code 3" in result.stdout  # grouped by cause
    assert (out / "log_file.txt").read_text().count("failed") == 4


def test_non_python_executable_script_runs(tmp_path: Path):
    script = tmp_path / "train.sh"
    script.write_text(textwrap.dedent("""\
        #!/bin/sh
        # A trial in another language writes its result file itself (README, "The training script").
        printf '{"score": 0.25, "token": "%s"}' "$AUTOFINETUNE_TRIAL_TOKEN" > "$AUTOFINETUNE_RESULT_FILE"
    """))
    (tmp_path / "hparam.yaml").write_text("param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n")
    result = run_cli(["train.sh", "--param_file=hparam.yaml", "--popsize=2", "--round=1", f"--output_dir={tmp_path / 'o'}", "--workers=1"], cwd=tmp_path)
    assert result.returncode == 2 and "not executable" in result.stderr and "chmod +x" in result.stderr
    script.chmod(0o755)
    result = run_cli(["train.sh", "--param_file=hparam.yaml", "--popsize=2", "--round=1", f"--output_dir={tmp_path / 'o'}", "--workers=1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "The final best eval score is 0.25." in result.stdout


def test_a_trial_cannot_write_another_trials_result(tmp_path: Path):
    """Without the trial's own token, a result file (even at the right path) counts as no report."""
    (tmp_path / "hparam.yaml").write_text("param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n")
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import json, os
        with open(os.environ["AUTOFINETUNE_RESULT_FILE"], "w") as f:
            json.dump({"score": 0.9, "token": "forged"}, f)
    """))
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=1", "--round=1", f"--output_dir={tmp_path / 'o'}", "--workers=1"], cwd=tmp_path)
    assert result.returncode == 1
    rows = json.loads((tmp_path / "o" / "trials.json").read_text())
    assert rows[0]["status"] == "failed" and "not written by this trial" in rows[0]["message"]


def test_a_script_without_model_path_gets_one_clear_hint(tmp_path: Path):
    (tmp_path / "hparam.yaml").write_text("param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n")
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import argparse, autofinetune
        p = argparse.ArgumentParser(); p.add_argument("--x", type=float); p.add_argument("--saved_params_dir")
        a = p.parse_args()
        open(a.saved_params_dir + "/m", "w").write("m")
        autofinetune.report_final_result(a.x)
    """))
    command = ["train.py", "--param_file=hparam.yaml", "--popsize=3", "--round=3", "--workers=2", "--seed=1"]
    result = run_cli(command + [f"--output_dir={tmp_path / 'o'}"], cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "o").exists()  # the preflight says it before round 0
    line = result.stderr.strip()
    assert "--model_path and --epochs" in line and "--evaluator=fulltrail" in line and len(line.splitlines()) == 1
    # Without the preflight, the trials find out (round 0 succeeds, later rounds fail) and one hint says why.
    result = run_cli(command + [f"--output_dir={tmp_path / 'p'}", "--skip_preflight"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # whole rounds failed: not a success
    hints = [line for line in result.stderr.splitlines() if "does not accept" in line]
    assert len(hints) == 1
    assert "--epochs, --model_path" in hints[0] and "--evaluator=fulltrail" in hints[0]
    assert "error: unrecognized arguments: --model_path=" in result.stderr  # the WARNING line carries the trial's own error
