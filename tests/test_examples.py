"""The shipped examples work: standalone, resumed from a parent, and through the real CLI.

They need torch (and scikit-learn for the digits); without them these tests skip. The text
example runs on its shipped sample (`dataset sample`), never on a download.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "examples" / "image_classification"
TEXT = REPO / "examples" / "text_classification"
# Extra options that reach every trial: keep the fast tests fast and off the network.
EXAMPLES = {
    "image": (IMAGE, ["epochs", "1"]),
    "text": (TEXT, ["epochs", "1", "dataset", "sample"]),
}
FINAL = re.compile(r"^The final best eval score is (\S+)\.$", re.M)
STANDALONE = re.compile(r"^autofinetune: final result (\S+) ", re.M)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for name in ("AUTOFINETUNE_RESULT_FILE", "AUTOFINETUNE_TRIAL_TOKEN"):
        env.pop(name, None)  # standalone runs must print their score, not write it somewhere
    return env


def train(example: Path, *args: str, cwd: Path, expect_ok: bool = True):
    """Run an example's train.py standalone; returns (score or None, the process)."""
    proc = subprocess.run([sys.executable, str(example / "train.py"), *args], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=300)
    if not expect_ok:
        return None, proc
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = STANDALONE.search(proc.stdout)
    assert match, proc.stdout
    return float(match.group(1)), proc


def tune(example: Path, out: Path, *args: str, timeout: float = 300):
    """The real CLI; returns (final best score, trial records)."""
    proc = subprocess.run(
        [sys.executable, "-m", "autofinetune", str(example / "train.py"),
         f"--param_file={example / 'hparam.yaml'}", f"--output_dir={out}", *args],
        cwd=out.parent, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = FINAL.search(proc.stdout)
    assert match, proc.stdout
    trials_json = out / "trials.json"
    trials = json.loads(trials_json.read_text()) if trials_json.exists() else []
    return float(match.group(1)), trials


def info(directory: Path) -> dict:
    return json.loads((directory / "model.json").read_text())


@pytest.fixture
def digits_deps():
    pytest.importorskip("sklearn")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_through_the_cli(name, tmp_path, request):
    example, extra = EXAMPLES[name]
    if name == "image":
        request.getfixturevalue("digits_deps")
    best, trials = tune(example, tmp_path / "out", "--popsize=2", "--round=1",
                        "--evaluator=fulltrail", "--workers=2", *extra)
    assert 0 < best <= 1
    if trials:  # the per-trial record, when this version writes it
        assert [t["status"] for t in trials] == ["ok", "ok"]
        scores = [t["score"] for t in trials]
        assert all(0 < s <= 1 for s in scores) and best == max(scores)
        for t in trials:  # each trial saved its model where the tuner asked
            assert info(tmp_path / "out" / t["model_dir"])["val_accuracy"] == t["score"]


def test_image_standalone_and_exact_restore(tmp_path, digits_deps):
    parent, child = tmp_path / "parent", tmp_path / "child"
    score, _ = train(IMAGE, "--epochs=2", f"--saved_params_dir={parent}", cwd=tmp_path)
    assert 0 < score <= 1 and info(parent)["val_accuracy"] == score
    assert info(parent)["epochs_trained"] == 2
    # Same seed, same everything: the same weights, bit for bit.
    again, _ = train(IMAGE, "--epochs=2", f"--saved_params_dir={tmp_path / 'again'}", cwd=tmp_path)
    assert again == score
    assert info(tmp_path / "again")["weights_sha256"] == info(parent)["weights_sha256"]
    # A child that trains 0 epochs holds exactly the parent's weights, whatever its own
    # (weight-free) hyperparameters.
    restored, proc = train(IMAGE, f"--model_path={parent}", "--epochs=0", "--dropout=0.1",
                           "--learning_rate=0.02", f"--saved_params_dir={child}", cwd=tmp_path)
    assert "restored" in proc.stdout
    assert restored == score
    assert info(child)["weights_sha256"] == info(parent)["weights_sha256"]
    assert info(child)["epochs_trained"] == 2


def test_text_standalone_restore_and_refusals(tmp_path):
    parent, child = tmp_path / "parent", tmp_path / "child"
    score, proc = train(TEXT, "--dataset=sample", "--epochs=3", f"--saved_params_dir={parent}",
                        cwd=tmp_path)
    assert 0 < score <= 1 and "data: sample" in proc.stdout
    restored, _ = train(TEXT, "--dataset=sample", f"--model_path={parent}", "--epochs=0",
                        "--learning_rate=0.3", f"--saved_params_dir={child}", cwd=tmp_path)
    assert restored == score
    assert info(child)["weights_sha256"] == info(parent)["weights_sha256"]
    assert (child / "vocab.json").read_text() == (parent / "vocab.json").read_text()
    # An architecture hyperparameter cannot change on resume: a clear error, not a traceback.
    _, proc = train(TEXT, "--dataset=sample", f"--model_path={parent}", "--embed_dim=8",
                    cwd=tmp_path, expect_ok=False)
    assert proc.returncode != 0 and "--embed_dim=8" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_image_tuning_beats_the_default_hyperparameters(tmp_path, digits_deps):
    """The README's command and budget: the best found beats hparam.yaml's init values."""
    default, _ = train(IMAGE, cwd=tmp_path)  # train.py's defaults are the init values
    best, trials = tune(IMAGE, tmp_path / "out", "--popsize=4", "--round=4", "--workers=2",
                        "--seed=1", timeout=900)
    print(f"default hyperparameters: {default:.4f}; tuned: {best:.4f}")
    assert best > default


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_defaults_are_the_init_values(name, request):
    """The README's "default hyperparameters" score is a plain `python train.py`."""
    import importlib.util

    import yaml

    example, _ = EXAMPLES[name]
    if name == "image":
        request.getfixturevalue("digits_deps")
    spec = importlib.util.spec_from_file_location(f"example_{name}_train", example / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defaults = vars(module.parse_args([]))
    space = yaml.safe_load((example / "hparam.yaml").read_text())["param_list"]
    assert {p["name"]: p["init_value"] for p in space} == {p["name"]: defaults[p["name"]]
                                                            for p in space}
