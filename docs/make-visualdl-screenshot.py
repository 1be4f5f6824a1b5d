"""Regenerate docs/visualdl-hparams.png: the HYPER PARAMETERS tab of VisualDL on a real search.

Runs the quickstart example (5 candidates x 4 rounds), serves its logs with the real `visualdl`
server on a free port of 127.0.0.1, and takes a headless-Chromium screenshot (Debian package
`chromium`: apt-get install chromium). Usage, from the repository root:

    .venv/bin/python docs/make-visualdl-screenshot.py [--output docs/visualdl-hparams.png]
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "docs" / "visualdl-hparams.png"))
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found; fix: apt-get install chromium")

    from autofinetune.api import tune

    work = Path(tempfile.mkdtemp(prefix="vdl-shot-"))
    out = work / "output"
    example = REPO / "examples" / "quickstart"
    # tune() attaches the VisualDL view itself; a second one would write every log twice.
    tune(example / "train.py", example / "hparam.yaml", popsize=5, rounds=4, output_dir=out, seed=7, echo=None)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "visualdl.server.app", "--logdir", "visualization", "--host", "127.0.0.1",
                               "--port", str(port), "-L", "en", "--disable-telemetry"],
                              cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/alive", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("visualdl did not start")
                time.sleep(0.3)
        profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=work)
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--window-size=1800,900",
                        "--hide-scrollbars", f"--screenshot={args.output}", f"http://127.0.0.1:{port}/app/hyper-parameter"],
                       check=True, capture_output=True, timeout=120)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
