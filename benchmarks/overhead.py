"""What the tuner costs per trial, against a bare subprocess launch measured in the same run.

    python benchmarks/overhead.py [--trials 40]

Prints: seconds per trial of a no-op train.py (a) launched bare with subprocess.run, one after
another, and (b) run by `autofinetune` with one CPU slot (supervisor, result file, journal with
fsync, views); and the tuner's peak RSS while a trial writes 200 MB to stdout, against a quiet
trial (it must not grow with the output).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOOP = "import autofinetune\nautofinetune.report_final_result(0.5)\n"
LOUD = ("import sys, autofinetune\nline = ('x' * 1023 + '\\n').encode()\n"
        "for _ in range(200 * 1024):\n    sys.stdout.buffer.write(line)\nautofinetune.report_final_result(0.5)\n")
SPACE = "param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n"


def tuner(folder: Path, script: str, trials: int, name: str) -> "tuple[float, int]":
    (folder / f"{name}.py").write_text("import argparse\nargparse.ArgumentParser().parse_known_args()\n" + script)
    (folder / "h.yaml").write_text(SPACE)
    args = [sys.executable, "-m", "autofinetune", f"{name}.py", "--param_file=h.yaml", f"--popsize={trials}", "--round=1",
            f"--output_dir={folder / ('out-' + name)}", "--workers=1", "--evaluator=fulltrail", "--seed=1"]
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.01)
    assert process.returncode == 0, f"tuner failed on {name}"
    return time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bare.py").write_text(NOOP)
        start = time.perf_counter()
        for _ in range(options.trials):
            subprocess.run([sys.executable, "bare.py"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
        bare = (time.perf_counter() - start) / options.trials
        # the tuner's own start-up (imports, first journal) is paid once: measure it with one trial
        one, _ = tuner(folder, NOOP, 1, "one")
        many, quiet_peak = tuner(folder, NOOP, options.trials + 1, "many")
        per_trial = (many - one) / options.trials
        _, loud_peak = tuner(folder, LOUD, 1, "loud")
    print("| measure | bare subprocess | autofinetune | ratio |")
    print("|---|---|---|---|")
    print(f"| seconds per no-op trial (1 slot, {options.trials} trials) | {bare:.3f} | {per_trial:.3f} | {per_trial / bare:.2f}x |")
    print(f"| tuner start-up, one trial end to end (s) | - | {one:.2f} | - |")
    print(f"| tuner peak RSS, quiet trial vs 200 MB of trial output (MiB) | {quiet_peak / 1024:.1f} | {loud_peak / 1024:.1f} | {loud_peak / quiet_peak:.2f}x |")


if __name__ == "__main__":
    main()
