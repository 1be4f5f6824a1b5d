"""Shared helpers: write real train.py scripts and run the real CLI in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]

#: A train.py that records what it saw (argv, CUDA_VISIBLE_DEVICES, start/end times) in a
#: ledger, then reports a smooth score of its hyperparameters.
LEDGER_TRAIN = textwrap.dedent(
    """
    import argparse, json, os, sys, time
    import autofinetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--dropout", type=float, required=True)
    parser.add_argument("--saved_params_dir", required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--mode", default="normal")
    parser.add_argument("--extra", default=None)
    args, unknown = parser.parse_known_args()

    start = time.time()
    time.sleep(args.sleep)
    record = {"argv": sys.argv[1:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
              "end": time.time(), "pid": os.getpid(), "extra": args.extra, "unknown": unknown}
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(json.dumps(record) + "\\n")
    with open(os.path.join(args.saved_params_dir, "weights.txt"), "w") as handle:
        handle.write(f"{args.learning_rate} {args.batch_size} {args.dropout}\\n")
    if args.mode == "crash" and args.batch_size % 2 == 0:
        raise SystemExit("simulated crash for an even batch size")
    score = 1.0 - (args.learning_rate - 0.03) ** 2 * 100 - ((args.batch_size - 20) / 20.0) ** 2 - (args.dropout - 0.3) ** 2
    autofinetune.report_final_result(score)
    """
)

HPARAM_3 = textwrap.dedent(
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
    - name : dropout
      init_value : 0.5
      type : float
      lower_than : 0.9
      greater_than : 0.0
    """
)


def run_cli(args: List[str], cwd: Path, env: Optional[dict] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "autofinetune", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def read_ledger(path: Path) -> List[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def project(tmp_path: Path):
    """A folder with the ledger train.py and a 3-parameter hparam.yaml."""
    (tmp_path / "train.py").write_text(LEDGER_TRAIN)
    (tmp_path / "hparam.yaml").write_text(HPARAM_3)
    return tmp_path
