"""A real script on the first try (README, "The training script"): preflight, thread budgets,
honest exit codes, and a schedule you can retrain from, through the real CLI.

The script below has the shape of the official PyTorch `mnist/main.py` (hyphenated options, no
`--saved_params_dir`, no `--model_path`), with the training replaced by a smooth function.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, read_ledger, run_cli

MNIST_SHAPED = textwrap.dedent(
    """
    import argparse, json, os, sys
    import autofinetune


    def main():
        parser = argparse.ArgumentParser(description="PyTorch MNIST Example")
        parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="input batch size for training (default: 64)")
        parser.add_argument("--test-batch-size", type=int, default=1000, metavar="N", help="input batch size for testing (default: 1000)")
        parser.add_argument("--epochs", type=int, default=14, metavar="N", help="number of epochs to train (default: 14)")
        parser.add_argument("--lr", type=float, default=1.0, metavar="LR", help="learning rate (default: 1.0)")
        parser.add_argument("--gamma", type=float, default=0.7, metavar="M", help="Learning rate step gamma (default: 0.7)")
        parser.add_argument("--no-cuda", action="store_true", default=False, help="disables CUDA training")
        parser.add_argument("--dry-run", action="store_true", default=False, help="quickly check a single pass")
        parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default: 1)")
        parser.add_argument("--log-interval", type=int, default=10, metavar="N", help="how many batches to wait before logging")
        parser.add_argument("--save-model", action="store_true", default=False, help="For Saving the current Model")
        args = parser.parse_args()
        with open(os.environ["LEDGER"], "a") as ledger:
            ledger.write(json.dumps({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
                                     if k.endswith("_THREADS") or k.startswith("AUTOFINETUNE_SAVED")}}) + "\\n")
        if os.environ.get("MODE") == "percent":
            autofinetune.report_final_result(98.3)
            return
        if os.environ.get("MODE") == "round1_fails" and "round1" in os.environ.get("AUTOFINETUNE_SAVED_PARAMS_DIR", ""):
            sys.exit("RuntimeError: CUDA out of memory (simulated)")
        autofinetune.report_final_result(0.99 - (args.lr - 0.5) ** 2 - (args.gamma - 0.7) ** 2 - ((args.batch_size - 64) / 640) ** 2)


    if __name__ == "__main__":
        main()
    """
)

HPARAM = textwrap.dedent(
    """
    param_list:
    - {name: lr, type: float, init_value: 1.0, greater_than: 0.01, lower_than: 2.0, log: true}
    - {name: gamma, type: float, init_value: 0.7, greater_than: 0.1, lower_than: 0.99}
    - {name: batch-size, type: int, init_value: 64, greater_than: 16, lower_than: 256}
    """
)


@pytest.fixture
def mnist(tmp_path: Path) -> Path:
    (tmp_path / "main.py").write_text(MNIST_SHAPED)
    (tmp_path / "hparam.yaml").write_text(HPARAM)
    return tmp_path


def _cli(project: Path, *extra: str, env=None, out: str = "out"):
    return run_cli(["main.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", "--workers=2", "--seed=1",
                    f"--output_dir={project / out}", "--no_progress", *extra], cwd=project,
                   env={"LEDGER": str(project / "ledger"), **(env or {})}, timeout=120)


def test_the_default_evaluator_is_refused_in_one_preflight_line_before_any_trial(mnist: Path):
    result = _cli(mnist)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("autofinetune: error: preflight:")
    for word in ("--saved_params_dir", "--model_path", "--evaluator=fulltrail"):
        assert word in lines[0], (word, lines[0])
    assert "--epochs" not in lines[0].split("fix:")[0]  # the script has --epochs
    assert read_ledger(mnist / "ledger") == [] and not (mnist / "out").exists()


def test_full_trail_runs_the_unmodified_script(mnist: Path):
    result = _cli(mnist, "--evaluator=fulltrail", "epochs", "1")
    assert result.returncode == 0, result.stderr
    seen = read_ledger(mnist / "ledger")
    assert len(seen) == 4
    for trial in seen:
        assert not any(a.startswith("--saved_params_dir") for a in trial["argv"])  # the script has no such option
        assert trial["env"]["AUTOFINETUNE_SAVED_PARAMS_DIR"].startswith(str(mnist / "out" / "round"))  # still offered
        assert any(a.startswith("--batch-size=") for a in trial["argv"]) and "--epochs=1" in trial["argv"]
    rows = json.loads((mnist / "out" / "trials.json").read_text())
    assert [r["status"] for r in rows] == ["ok"] * 4


def test_a_near_miss_name_is_named_with_its_fix(mnist: Path):
    (mnist / "hparam.yaml").write_text(HPARAM.replace("batch-size", "batch_size"))
    result = _cli(mnist, "--evaluator=fulltrail", "learning_rate", "0.1")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "--batch_size (hyperparameter; the script has --batch-size)" in line, line
    assert "--learning_rate (trailing pair" in line, line


def test_a_script_without_argparse_is_not_run_by_the_preflight(tmp_path: Path):
    (tmp_path / "train.py").write_text("import os, autofinetune\nopen(os.environ['LEDGER'], 'a').write('ran\\n')\n"
                                       "autofinetune.report_final_result(0.5)\n")
    (tmp_path / "hparam.yaml").write_text("param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n")
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=1", "--workers=2", f"--output_dir={tmp_path / 'out'}"],
                     cwd=tmp_path, env={"LEDGER": str(tmp_path / "ledger")})
    assert result.returncode == 0, result.stderr
    assert "preflight skipped" in result.stdout
    assert (tmp_path / "ledger").read_text().count("ran") == 2  # the trials only


def test_thread_budgets_reach_the_trials(mnist: Path):
    cores = os.cpu_count() or 1
    assert _cli(mnist, "--evaluator=fulltrail", "--workers=2").returncode == 0
    share = str(max(1, cores // 2))
    for trial in read_ledger(mnist / "ledger"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            assert trial["env"][name] == share, (name, trial["env"])
    (mnist / "ledger").unlink()
    result = _cli(mnist, "--evaluator=fulltrail", "--threads_per_trial=3", out="out3", env={"MKL_NUM_THREADS": "5"})
    assert result.returncode == 0, result.stderr
    assert "3 thread(s) per trial" in result.stdout
    for trial in read_ledger(mnist / "ledger"):
        assert trial["env"]["OMP_NUM_THREADS"] == "3" and trial["env"]["MKL_NUM_THREADS"] == "5"  # the user's own setting wins


def test_a_search_in_which_a_whole_round_failed_does_not_exit_0(mnist: Path):
    result = _cli(mnist, "--evaluator=fulltrail", env={"MODE": "round1_fails"})
    assert result.returncode == 1, result.stderr
    assert "every trial of round 1 failed" in result.stderr
    assert "2 of 4 trials failed: 2 x exit code 1 (RuntimeError: CUDA out of memory (simulated))" in result.stdout
    assert "WARNING:Program which was ran with" in result.stderr
    assert "RuntimeError: CUDA out of memory (simulated)" in result.stderr  # the trial's last stderr line


def test_a_search_with_an_occasional_failure_exits_0(tmp_path: Path):
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import argparse, autofinetune
        p = argparse.ArgumentParser(); p.add_argument("--x", type=float); p.add_argument("--saved_params_dir"); a = p.parse_args()
        if a.saved_params_dir.endswith("round0/model-1"):
            raise SystemExit("one bad trial")
        autofinetune.report_final_result(a.x)
    """))
    (tmp_path / "hparam.yaml").write_text("param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n")
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", "--workers=2", "--evaluator=fulltrail",
                      f"--output_dir={tmp_path / 'out'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 of 4 trials failed: 1 x exit code 1 (one bad trial)" in result.stdout


def test_a_percentage_score_is_invalid_with_the_fix(mnist: Path):
    result = _cli(mnist, "--evaluator=fulltrail", env={"MODE": "percent"})
    assert result.returncode == 1
    rows = json.loads((mnist / "out" / "trials.json").read_text())
    assert {r["status"] for r in rows} == {"invalid"}
    assert "report a fraction, 0.983, not 98.3" in rows[0]["message"]
    assert "no trial succeeded" in result.stderr


def test_resuming_a_finished_search_says_so(mnist: Path):
    assert _cli(mnist, "--evaluator=fulltrail").returncode == 0
    result = _cli(mnist, "--evaluator=fulltrail", "--resume")
    assert result.returncode == 0, result.stderr
    assert "all 2 round(s) are done already" in result.stdout
    assert len(read_ledger(mnist / "ledger")) == 4  # nothing ran again


def test_the_best_lineage_is_a_schedule_that_retrains(tmp_path: Path):
    """On the schedule toy, the best model's lineage re-run from scratch, step by step, reaches
    the best score again (within the toy's noise); its last round's values alone do not."""
    toy = REPO / "examples" / "pbt_schedule"
    out = tmp_path / "out"
    result = run_cli([str(toy / "train.py"), f"--param_file={toy / 'hparam.yaml'}", "--popsize=4", "--round=5", "--workers=2",
                      "--seed=2", f"--output_dir={out}", "--no_progress"], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    schedule = json.loads((out / "best_schedule.json").read_text())
    steps = schedule["steps"]
    assert len(steps) >= 2 and steps[-1]["score"] == json.loads((out / "best_model" / ".autofinetune_best.json").read_text())["score"]
    assert steps[0]["epochs"] is None and all(s["epochs"] == 1 for s in steps[1:])
    assert "not the recipe" in result.stdout
    result = run_cli(["retrain", str(out), "--output_dir", str(tmp_path / "again")], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    again = json.loads((tmp_path / "again" / "retrain.json").read_text())
    assert len(again["steps"]) == len(steps)
    assert abs(again["score"] - steps[-1]["score"]) < 0.02, (again["score"], steps[-1]["score"])
    # The file is what retrains: a schedule cut to its first step trains that step only.
    (out / "best_schedule.json").write_text(json.dumps({**schedule, "steps": steps[:1]}))
    assert run_cli(["retrain", str(out), "--output_dir", str(tmp_path / "first")], cwd=tmp_path, timeout=300).returncode == 0
    first = json.loads((tmp_path / "first" / "retrain.json").read_text())
    assert len(first["steps"]) == 1 and abs(first["score"] - steps[0]["score"]) < 0.02


def test_a_unique_prefix_passes_the_preflight_as_argparse_takes_it(tmp_path: Path):
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import argparse, autofinetune
        p = argparse.ArgumentParser(); p.add_argument("--learning_rate", type=float); p.add_argument("--saved_params_dir")
        autofinetune.report_final_result(p.parse_args().learning_rate)
    """))
    (tmp_path / "hparam.yaml").write_text("param_list:\n- {name: learning, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n")
    result = run_cli(["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=1", "--workers=2", f"--output_dir={tmp_path / 'out'}"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # argparse reads --learning=... as --learning_rate
    rows = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "ok"] and sorted(r["score"] for r in rows) == sorted(r["learning"] for r in rows)
