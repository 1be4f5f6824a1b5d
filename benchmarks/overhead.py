"""What the tuner costs per trial, as ratios against baselines measured in the same run.

    python benchmarks/overhead.py [--quick] [--write docs/overhead.md]

(a) throughput: no-op trials on 2 slots through the real CLI, against a bare loop keeping 2
    `subprocess.Popen` of the same script running, and against Optuna (`n_jobs=2`, the same
    script as a subprocess objective), if Optuna is installed (`pip install .[bench]`);
(b) `--async` utilisation: 6 candidates on 4 slots, trials of 0.2-1.2 s drawn per (round,
    index); the measured slot-busy fraction against the ideal greedy schedule of the same
    measured durations with no launch cost;
(c) flat cost: a 5,000-trial no-op search (popsize 50 x 100 rounds), the tuner process's own CPU
    time per trial over the first 500 finished trials against the last 500 (sampled from
    /proc/<pid>/stat, attributed by the journal's finish count), and its peak RSS;
(d) the tuner's peak RSS while a trial writes 200 MB to stdout, against a quiet trial.

Ratios, not seconds, are the figures to compare across machines: both sides of each ratio ran
on the same machine, in the same run. No test asserts any of them (docs/overhead.md).
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

NOOP = "import autofinetune\nautofinetune.report_final_result(0.5)\n"
LOUD = ("import sys, autofinetune\nline = ('x' * 1023 + '\\n').encode()\n"
        "for _ in range(200 * 1024):\n    sys.stdout.buffer.write(line)\nautofinetune.report_final_result(0.5)\n")
#: A trial of a deterministic duration per (round, index), noting its own start and end.
TIMED = """import json, os, sys, time
start = time.time()
import autofinetune
model = os.environ["AUTOFINETUNE_SAVED_PARAMS_DIR"]
round_index = int(os.path.basename(os.path.dirname(model))[5:])
index = int(os.path.basename(model).split("-")[1])
duration = 0.2 + ((round_index * 7919 + index * 104729) % 1000) / 1000.0
time.sleep(duration)
autofinetune.report_final_result(0.5)
with open(os.environ["TIMES"], "a") as ledger:
    ledger.write(json.dumps({"round": round_index, "index": index, "start": start, "end": time.time()}) + "\\n")
"""
SPACE = "param_list:\n- {name: x, type: float, init_value: 0.5, greater_than: 0, lower_than: 1}\n"
ARGPARSE = "import argparse\nargparse.ArgumentParser().parse_known_args()\n"
TICKS = os.sysconf("SC_CLK_TCK")

#: docs/overhead.md, as `--write` makes it: the figures of this run between the fixed text.
DOC = """# What the tuner costs per trial

Written by `python benchmarks/overhead.py --write docs/overhead.md`; the figures are ratios
against baselines measured in the same run, so they compare across machines. Speed goals are
checked here, never by timed assertions in the tests.

{figures}

## Why the cost per trial stays flat

A 5,000-trial search used to spend more on its last trials than on its first: every finished
trial rewrote `log_file.txt`, `trials.csv` and `trials.json` whole (at 5,000 trials, ~180 ms and
2.4 MB per trial), and every view hook copied the list of finished trials. Now, per finished
trial, the tuner does O(1) work besides the journal's one fsync'd line:

- `trials.csv` gets one row appended (`records.SearchRecords.append_row`). While the search
  runs, rows are in the order trials finished; when the tuner exits (end, Ctrl-C, an output
  error) and on `--resume`, the file is rewritten whole from the records, in (round, index)
  order, exactly as before. A retried trial has one row: its final attempt.
- `trials.json` and `log_file.txt` are rewritten at most once a second, and at each round's
  end; a trial that finishes within the second is written by a timer when it is up, so no
  finished trial waits for the next one to appear. All three are rewritten when the tuner
  exits, so nothing finished is missing from them; the journal stays the truth
  (docs/architecture.md) and any view can be rebuilt from it.
- A view's `SearchSnapshot.trials` is a read-only window on the append-only list (its length
  fixed when the snapshot is made), not a copy; `failed` is a running count.
- PBT's parent line finds the parent by (round, index) in a dict; `--async` checks only the
  finished trial's round for completeness; VisualDL keeps each round's best instead of
  scanning all trials at each round's end.

What stays per trial and is inherent: the journal's lines, the trial's own folder and log,
and (with VisualDL installed) one VisualDL run folder per trial.

## The launch path: from one trial's end to the next one's start

Measured with a profiler on the 2-core machine, a no-op trial's end cost the search's thread
about 2.3 ms waiting for three fsyncs, 5 ms waiting for the launcher's answer to a start, ~4 ms
of VisualDL writer per finished trial, and the launcher ~3 ms of CPU scanning /proc twice. Now:

- a freed slot takes the next queued trial first, before the search journals and shows the
  trial that ended (`backends/local.py`, `_fill` in `_drain_exits`);
- the start request does not wait for the launcher's answer (`TrialProcess.begin`): the pid
  comes with the next exits, and the search does its bookkeeping meanwhile;
- `queued`, `started` and `intermediate` lines are not fsync'd (`journal.NOT_FSYNCED` says why:
  only a machine crash could lose them, and then the trial died with it); the other durable
  lines are synced by the journal's own thread, never waited for, and `close()` syncs the rest
  (fdatasync: the data and the size, not the modification time);
- no move between cgroups is on a start's path: a write to `cgroup.procs` waits for an RCU
  grace period, which a trace of the launcher measured at ~10 ms median per start (a sixth of a
  no-op trial's life on 2 cores), against ~0.3 ms for the spawn. The launcher parks in the next
  trial's cgroup ahead of time (a thread makes the move) and posix_spawns the trial there; a
  start that comes before the move is done uses `clone3(CLONE_INTO_CGROUP)` (~1 ms: a fork of
  the launcher) (docs/dask.md, "Process fence");
- VisualDL runs are written synchronously by the view (`views/visualdl._RecordFile`), with no
  LogWriter: a LogWriter starts a thread and holds a file open, so a 500-candidate search held
  500 of each (~1 s of the search's start), and one per finished trial cost the search's
  thread ~4 ms;
- the launcher scans `/proc` once at a trial's end, and again after the grace only if something
  of the trial was still running; with the cgroup fence it reads the trial's `cgroup.procs`
  instead and scans nothing;
- the trial's intermediate-results file is looked at with one `stat` while it has not grown;
- VisualDL records and `trials.csv` rows are written with one unbuffered write each.

Tried and taken out again (2026-12-08): handing the next queued trials to the launcher ahead
of time, to start the moment a running trial ends in that trial's slot, so no slot waits for
the launcher-search round trip (commit ddcdbc0 has it whole, with tests). On this 2-core
machine it did not raise (a) (an interleaved A/B: 0.775 against 0.754 of bare, within the
noise): a no-op benchmark is CPU-bound here, and what competes with the trials is the tuner's
~2 ms and the launcher's ~1 ms of CPU per trial, not an idle slot. With one slot it also let a
pruned search's decisions depend on timing (a trial started at its predecessor's end can report
before the search has read that end).

## The search's start-up

The trial launcher is started first and waited for only when the header names its fence: its
own start-up (~40 ms: an interpreter, the cgroup probes) runs while the script prints its usage
for the preflight. Candidates' VisualDL runs (`pop_<i>`) are made when their first round ends
(500 empty folders cost ~50 ms of a 500-candidate search's start). What is left: the imports
(numpy ~45 ms, VisualDL ~80-120 ms, which creates its config folder as it loads and so is
imported once the output dir exists, docs/security.md) and the preflight's `--help` (a trial's
own start-up: ~30 ms for a no-op script, the framework's import for a real one). The benchmark
first compiles the package's bytecode (`compile_package`): an editable checkout under
PYTHONDONTWRITEBYTECODE=1 compiled ~30 modules at every start (~60 ms), which no installed copy does.

## Reading the figures

The benchmark competes for the CPUs with whatever else runs; the load average before and after
is printed with the figures. On 2 cores, a no-op trial is mostly Python's own start-up, so the
throughput ratio is the launcher's overhead per trial against that start-up.
"""


def write_script(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(ARGPARSE + body)
    (folder / "h.yaml").write_text(SPACE)


def cli(folder: Path, name: str, popsize: int, rounds: int, workers: int, *more: str, out: str = "") -> List[str]:
    return [sys.executable, "-m", "autofinetune", f"{name}.py", "--param_file=h.yaml", f"--popsize={popsize}", f"--round={rounds}",
            f"--output_dir={folder / ('out-' + (out or name))}", f"--workers={workers}", "--evaluator=fulltrail", "--seed=1", *more]


def cpu_seconds(pid: int) -> Optional[float]:
    """The process's own user + system time (not its children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Watched:
    """A tuner run, sampled every few milliseconds: wall time, peak RSS, and (cpu, finished) pairs."""

    def __init__(self, args: List[str], cwd: Path, journal: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> None:
        self.samples: List[Tuple[int, float]] = []
        self.peak = 0
        start = time.perf_counter()
        process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env=dict(os.environ, **(env or {})))
        finished, offset = 0, 0
        while process.poll() is None:
            self.peak = max(self.peak, peak_rss_kib(process.pid))
            if journal is not None:
                cpu = cpu_seconds(process.pid)
                try:
                    with open(journal, "rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read()
                    complete = chunk[: chunk.rfind(b"\n") + 1]
                    offset += len(complete)
                    finished += complete.count(b'"event": "finish"')
                except OSError:
                    pass
                if cpu is not None:
                    self.samples.append((finished, cpu))
            time.sleep(0.005 if journal is None else 0.02)
        self.wall = time.perf_counter() - start
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        assert process.returncode == 0, f"tuner failed: {stderr[-2000:]}"

    def cpu_at(self, count: int) -> float:
        """The tuner's CPU time when `count` trials had finished (the first sample that saw them)."""
        return next(cpu for done, cpu in self.samples if done >= count)


def bare_rate(folder: Path, trials: int, slots: int) -> float:
    """Trials per second of the script alone, `slots` at a time: the most any launcher can do."""
    running: List[subprocess.Popen] = []
    started = 0
    begin = time.perf_counter()
    while started < trials or running:
        while started < trials and len(running) < slots:
            running.append(subprocess.Popen([sys.executable, "bare.py"], cwd=folder, stdout=subprocess.DEVNULL))
            started += 1
        for process in list(running):
            if process.poll() is not None:
                running.remove(process)
        time.sleep(0.001)
    return trials / (time.perf_counter() - begin)


def optuna_rate(folder: Path, trials: int, slots: int) -> Optional[float]:
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: "optuna.Trial") -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        subprocess.run([sys.executable, "bare.py", f"--x={x}"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
        return 0.5

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    begin = time.perf_counter()
    study.optimize(objective, n_trials=trials, n_jobs=slots)
    return trials / (time.perf_counter() - begin)


def greedy_makespan(durations: Dict[Tuple[int, int], float], popsize: int, rounds: int, slots: int) -> float:
    """The ideal schedule with no launch cost: each candidate's next trial waits for its last;
    a free slot takes the earliest-ready candidate."""
    ready = [(0.0, index, 0) for index in range(popsize)]  # (ready at, candidate, its next round)
    heapq.heapify(ready)
    free = [0.0] * slots
    end = 0.0
    while ready:
        at, index, round_index = heapq.heappop(ready)
        slot_free = heapq.heappop(free)
        begin = max(at, slot_free)
        finish = begin + durations[(round_index, index)]
        heapq.heappush(free, finish)
        end = max(end, finish)
        if round_index + 1 < rounds:
            heapq.heappush(ready, (finish, index, round_index + 1))
    return end


def utilisation(folder: Path, rounds: int) -> Dict[str, float]:
    popsize, slots = 6, 4
    write_script(folder, "timed", TIMED)
    times = folder / "times.jsonl"
    run = Watched(cli(folder, "timed", popsize, rounds, slots, "--async"), folder, env={"TIMES": str(times)})
    ledger = [json.loads(line) for line in times.read_text().splitlines()]
    assert len(ledger) == popsize * rounds, "every trial should have noted its times"
    own = {(r["round"], r["index"]): r["end"] - r["start"] for r in ledger}
    makespan = max(r["end"] for r in ledger) - min(r["start"] for r in ledger)
    journal = [json.loads(line) for line in (folder / "out-timed" / "journal.jsonl").read_text().splitlines()]
    runner = {(e["trial"]["round"], e["trial"]["index"]): e["trial"]["duration"] for e in journal if e["event"] == "finish"}
    busy = sum(own.values()) / (slots * makespan)
    ideal = sum(own.values()) / (slots * greedy_makespan(own, popsize, rounds, slots))
    # in the launcher's terms, the search began when the first trial's process did, before its own clock started
    launched = min(r["start"] - max(0.0, runner[(r["round"], r["index"])] - own[(r["round"], r["index"])]) for r in ledger)
    busy_runner = sum(runner.values()) / (slots * (max(r["end"] for r in ledger) - launched))
    ideal_runner = sum(runner.values()) / (slots * greedy_makespan(runner, popsize, rounds, slots))
    return {"busy": busy, "ideal": ideal, "ratio": busy / ideal, "busy_runner": busy_runner,
            "ratio_runner": busy_runner / ideal_runner, "trials": popsize * rounds, "wall": run.wall}


def flat_cost(folder: Path, popsize: int, rounds: int, window: int) -> Dict[str, float]:
    write_script(folder, "long", NOOP)
    total = popsize * rounds
    run = Watched(cli(folder, "long", popsize, rounds, 2), folder, journal=folder / "out-long" / "journal.jsonl")
    first = (run.cpu_at(window + 1) - run.cpu_at(1)) / window
    last = (run.cpu_at(total) - run.cpu_at(total - window)) / window
    # Every window, and a least-squares line through them: one slow minute of the VM at either
    # end moves the two-window ratio, but not the line through all of them.
    marks = [1] + [k * window for k in range(1, total // window + 1)]
    windows = [(run.cpu_at(b) - run.cpu_at(a)) / (b - a) for a, b in zip(marks, marks[1:])]
    xs = list(range(len(windows)))
    mean_x, mean_y = sum(xs) / len(xs), sum(windows) / len(windows)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, windows)) / max(1e-12, sum((x - mean_x) ** 2 for x in xs))
    fitted = (mean_y + slope * (xs[-1] - mean_x)) / max(1e-12, mean_y + slope * (xs[0] - mean_x))
    return {"first": first, "last": last, "ratio": last / first, "peak_mib": run.peak / 1024, "total": total,
            "wall": run.wall, "window": window, "windows": windows, "fitted": fitted}


def span(values: List[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def compile_package() -> None:
    """Bytecode for every module of the package, as `pip install` writes it. An editable
    checkout run with PYTHONDONTWRITEBYTECODE=1 (as CI machines and containers often are) never
    caches it, so each tuner start compiled ~30 modules again (~60 ms on this machine's 2 cores),
    which an installed copy never does; the bare loop's and the tuner's trials both import
    `autofinetune`, so both sides of each ratio run from the same bytecode."""
    import compileall

    import autofinetune

    compileall.compile_dir(str(Path(autofinetune.__file__).parent), quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--write", type=Path, default=None, help="write the report (markdown) to this file, e.g. docs/overhead.md")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (a), each bare, tuner, start-up and Optuna back to back")
    options = parser.parse_args()
    trials = 100 if options.quick else 500
    async_rounds = 4 if options.quick else 10
    popsize, rounds, window = (20, 50, 100) if options.quick else (50, 100, 500)
    compile_package()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bare.py").write_text(ARGPARSE + NOOP)
        write_script(folder, "noop", NOOP)
        # (a) in rounds of bare, tuner, start-up, Optuna back to back, so a drift of the machine's
        # speed (this VM's varies ~1.5x over minutes) falls on both sides of each ratio; the
        # median round is reported, with the range.
        runs: List[Dict[str, float]] = []
        for repeat in range(options.repeats):
            bare_once = bare_rate(folder, trials, 2)
            tuned = Watched(cli(folder, "noop", trials, 1, 2, out=f"noop-{repeat}"), folder)
            startup_once = Watched(cli(folder, "noop", 1, 1, 1, out=f"startup-{repeat}"), folder).wall  # imports, journal, one trial
            optuna_once = optuna_rate(folder, trials, 2)
            runs.append({"bare": bare_once, "tuner": trials / tuned.wall, "startup": startup_once,
                         "steady": trials / max(1e-9, tuned.wall - startup_once),
                         "optuna": optuna_once if optuna_once is not None else float("nan")})
        ratios = {key: sorted(run[key] / run["bare"] for run in runs) for key in ("tuner", "steady", "optuna")}
        middle = sorted(runs, key=lambda run: run["steady"] / run["bare"])[len(runs) // 2]
        bare, tuner_rate, startup, tuner_steady = middle["bare"], middle["tuner"], middle["startup"], middle["steady"]
        optuna = None if middle["optuna"] != middle["optuna"] else middle["optuna"]
        util = utilisation(folder, async_rounds)
        flat = flat_cost(folder, popsize, rounds, window)
        write_script(folder, "quiet", NOOP)
        quiet = Watched(cli(folder, "quiet", 1, 1, 1), folder).peak
        write_script(folder, "loud", LOUD)
        loud = Watched(cli(folder, "loud", 1, 1, 1), folder).peak
    load_after = os.getloadavg()
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/overhead.py{' --quick' if options.quick else ''}` on "
        f"{os.cpu_count()} CPU(s), {platform.python_implementation()} {platform.python_version()}; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        "| measure | figure | goal |",
        "|---|---|---|",
        f"| (a) bare launch rate, {trials} no-op trials, 2 at a time (the median of {len(runs)} rounds) | {bare:.1f} trials/s | - |",
        f"| (a) autofinetune, `--workers=2 --popsize={trials} --round=1`, end to end | {tuner_rate:.1f} trials/s "
        f"(**{tuner_rate / bare:.2f}x** bare; rounds {span(ratios['tuner'])}) | >= 0.9x |",
        f"| (a) autofinetune without its start-up ({startup:.2f} s, measured with one trial) | {tuner_steady:.1f} trials/s "
        f"(**{tuner_steady / bare:.2f}x** bare; rounds {span(ratios['steady'])}) | >= 0.9x |",
        (f"| (a) Optuna, `n_trials={trials}, n_jobs=2`, subprocess objective | {optuna:.1f} trials/s (**{optuna / bare:.2f}x** bare; "
         f"rounds {span(ratios['optuna'])}) | - |"
         if optuna is not None else "| (a) Optuna | not installed (`pip install .[bench]`) | - |"),
        f"| (b) `--async`, 6 candidates x {async_rounds} rounds on 4 slots, 0.2-1.2 s trials: slot-busy fraction "
        f"(the trials' own start/end) | {util['busy']:.3f} of ideal greedy {util['ideal']:.3f}: **{util['ratio']:.3f}** | >= 0.93 |",
        f"| (b) the same, trial durations as the launcher measured them (interpreter start-up counted as work) "
        f"| **{util['ratio_runner']:.3f}** of ideal | >= 0.93 |",
        f"| (c) tuner CPU per trial, {flat['total']:.0f}-trial search (popsize {popsize} x {rounds} rounds, 2 slots): "
        f"first {window} / last {window} | {flat['first'] * 1000:.2f} ms / {flat['last'] * 1000:.2f} ms: "
        f"**{flat['ratio']:.2f}x** | <= 1.2x |",
        f"| (c) the same, a straight line fitted to every window of {window} (ms per trial: "
        f"{', '.join(f'{w * 1000:.2f}' for w in flat['windows'])}): its last window / its first | **{flat['fitted']:.2f}x** | <= 1.2x |",
        f"| (c) tuner peak RSS over that search | **{flat['peak_mib']:.1f} MiB** | < 150 MiB |",
        f"| (d) tuner peak RSS, quiet trial vs a trial writing 200 MB to stdout | {quiet / 1024:.1f} MiB vs {loud / 1024:.1f} MiB "
        f"(**{loud / max(1, quiet):.2f}x**) | flat |",
    ]
    table = "\n".join(lines)
    print(table)
    if options.write is not None:
        options.write.write_text(DOC.replace("{figures}", table))


if __name__ == "__main__":
    main()
