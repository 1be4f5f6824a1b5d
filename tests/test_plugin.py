"""A third-party strategy, installed for real, is found, tested and run like a built-in.

tests/plugin_pkg is a minimal plugin project (uniform random search). It is installed with pip
into a temporary directory -- never into the environment or the working tree -- and every
check runs in a subprocess with that directory on PYTHONPATH, as a user's install would be.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().parent / "plugin_pkg"

TRAIN = textwrap.dedent(
    """
    import argparse
    import autofinetune

    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=float, required=True)
    parser.add_argument("--y", type=float, required=True)
    args, _ = parser.parse_known_args()
    autofinetune.report_final_result(1.0 - (args.x - 0.3) ** 2 - (args.y - 0.6) ** 2)
    """
)

HPARAM = textwrap.dedent(
    """
    param_list:
    - name: x
      type: float
      init_value: 0.5
      greater_than: 0.0
      lower_than: 1.0
    - name: y
      type: float
      init_value: 0.5
      greater_than: 0.0
      lower_than: 1.0
    """
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """Install the plugin into a fresh target directory; the environment for subprocesses."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in this environment")
    work = tmp_path_factory.mktemp("plugin")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = work / "source"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = work / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    # --no-build-isolation builds with this environment's setuptools: it needs bdist_wheel,
    # built into setuptools >= 70.1 (or the `wheel` package for older ones).
    assert done.returncode == 0, "pip could not install tests/plugin_pkg:\n" + done.stdout + done.stderr
    assert list(target.glob("autofinetune_uniform-*.dist-info")), "pip installed no metadata"
    path = os.pathsep.join(filter(None, [str(target), str(REPO), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def test_metadata_comes_from_the_entry_point_without_importing_the_strategy(installed: Dict[str, str]) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from autofinetune.strategies import available, check_strategy, get_info
        info = get_info("uniform")
        options = check_strategy("uniform", 1, 2, asynchronous=True)
        print(json.dumps({
            "target": info.target, "builtin": info.builtin, "async": info.supports_async,
            "names": sorted(n for n in available() if not n.startswith("optuna.")), "options": options,
            "strategy_imported": "autofinetune_uniform.strategy" in sys.modules,
            "info_imported": "autofinetune_uniform.info" in sys.modules,
        }))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **installed))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "target": "autofinetune_uniform.strategy:Uniform", "builtin": False, "async": True,
        "names": ["hazero", "pshe2", "uniform"], "options": {},
        "strategy_imported": False, "info_imported": True,
    }
    assert "skipped" not in done.stderr  # no plugin warning


def test_the_plugin_passes_the_conformance_kit(installed: Dict[str, str], tmp_path: Path) -> None:
    # A copy outside the repository: the installed plugin, not the sources, is what is tested.
    shutil.copytree(PLUGIN / "tests_plugin", tmp_path / "tests_plugin")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests_plugin", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ, **installed),
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    # Everything runs but the beats-random check the plugin opts out of (dims 2 and 5).
    assert counts.get("passed", 0) >= 20 and set(counts) == {"passed", "skipped"} and counts["skipped"] == 2, summary


def test_the_cli_searches_with_the_plugin(installed: Dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "hparam.yaml").write_text(HPARAM)
    done = run_cli(
        ["train.py", "--param_file=hparam.yaml", "--popsize=2", "--round=2", "--tuning_strategy=uniform",
         "--evaluator=fulltrail", "--output_dir=out", "--workers=2"],
        cwd=tmp_path, env=installed, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "out" / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert all(row["status"] == "ok" for row in rows), rows
    assert all(0.0 <= float(row["x"]) <= 1.0 and 0.0 <= float(row["y"]) <= 1.0 for row in rows)
