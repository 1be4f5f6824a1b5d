"""A search journaled before issue 15's strategy options resumes, again and again, with the
behaviour it started with (docs/algorithms.md, "Options added later").

Needs the resume.py / search.py change that makes resuming use
`strategies.registry.resumed_options` and journal the strategy options as the journal had them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from autofinetune.strategies.registry import legacy_options

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "journal_610e7f4"


def _cli(project: Path, strategy: str, rounds: int, out: Path, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run(
        [sys.executable, "-m", "autofinetune", "train.py", "--param_file=hparam.yaml", "--popsize=4", f"--round={rounds}",
         "--seed=7", f"--tuning_strategy={strategy}", "--workers=2", f"--output_dir={out}", "--no_progress", *extra],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )


def _points(out: Path) -> Dict[Tuple[int, int], List[float]]:
    events = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    return {(e["round"], e["index"]): e["point"] for e in events if e["event"] == "queued"}


@pytest.mark.parametrize("strategy", ["pshe2", "hazero"])
def test_an_old_journal_resumes_twice_with_its_own_behaviour(tmp_path: Path, strategy: str) -> None:
    """Resumed to round 3, then to round 4, with the command that started it: every candidate is
    the one a fresh search with the original's settings (the legacy values, named) proposes."""
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
    for rounds in (3, 4):
        done = _cli(tmp_path, strategy, rounds, out, ["--resume"])
        assert done.returncode == 0, done.stderr
        assert "did not reproduce" not in done.stderr
    original = [item for name, value in legacy_options(strategy).items()
                for item in ("--strategy_option", f"{name}={value}")]
    fresh = tmp_path / "fresh"
    assert _cli(tmp_path, strategy, 4, fresh, original).returncode == 0
    resumed, expected = _points(out), _points(fresh)
    assert len(resumed) == 16 and resumed == expected
