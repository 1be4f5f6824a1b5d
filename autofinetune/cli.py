"""The command line: parse, validate, run the search, map errors to exit codes.

User errors (AutofinetuneError) become one line on stderr and exit code 2 (1 when the search
ran but every trial failed); Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from typing import List, Optional

from . import __version__
from .errors import AutofinetuneError


class _OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> "None":  # type: ignore[override]
        self.exit(2, f"autofinetune: error: {message} (see autofinetune -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="autofinetune",
        description="Tune the hyperparameters of a training script (PaddleHub AutoDL Finetuner compatible).",
        epilog="Trailing 'name value' pairs (e.g. max_seq_len 128) reach every trial as --name=value, placed last. "
               "Also: 'autofinetune summary OUTPUT_DIR [--format json]' and 'autofinetune plot OUTPUT_DIR'.",
    )
    parser.add_argument("script", help="the training script (a .py runs with this Python; anything else must be executable)")
    parser.add_argument("passthrough", nargs="*", metavar="name value", help="options passed unchanged to every trial")
    parser.add_argument("--param_file", required=True, help="the search space, hparam.yaml (required)")
    parser.add_argument("--gpu", default=None, help="GPU ids, comma separated; 0,0 = two trials on GPU 0 (default: all GPUs pynvml finds, else CPU slots)")
    parser.add_argument("--popsize", type=int, default=5, help="candidates per round (default 5)")
    parser.add_argument("--round", dest="rounds", type=int, default=10, help="rounds (default 10)")
    parser.add_argument("--output_dir", default=None, help="where results go (default output_YYYYmmddHHMMSS)")
    parser.add_argument("--evaluator", default="populationbased", help="populationbased (default: resume from the better models of the last round) | fulltrail (train every candidate from scratch)")
    parser.add_argument("--tuning_strategy", default="pshe2", help="pshe2 (default) | hazero")
    parser.add_argument("--workers", type=int, default=None, help="CPU slots when there is no GPU (default: one per core)")
    parser.add_argument("--seed", type=int, default=None, help="makes the proposed candidates repeatable")
    parser.add_argument("--timeout", type=float, default=None, help="seconds a trial may run before it is stopped (status timeout)")
    parser.add_argument("--max_retries", type=int, default=0, help="re-run a failed or timed-out trial up to N more times (default 0)")
    parser.add_argument("--kill_grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL when a trial is stopped (default 5)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search in --output_dir (same command otherwise)")
    parser.add_argument("--backend", default="local", help="local (default: child processes here) | dask (tasks on a Dask cluster)")
    parser.add_argument("--scheduler_address", default=None, help="with --backend=dask: the Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--async", dest="asynchronous", action="store_true",
                        help="a freed slot starts the candidate's next trial at once instead of waiting for the round's slowest (pshe2 only; not bit-repeatable)")
    parser.add_argument("--no_progress", action="store_true", help="no live progress line (plain per-trial lines only)")
    parser.add_argument("--version", action="version", version=f"autofinetune {__version__}")
    return parser


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("autofinetune")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _terminate_like_ctrl_c(signum: int, frame: object) -> None:
    """A batch system's SIGTERM gets the same clean stop as Ctrl-C: journal kept, trials stopped."""
    raise KeyboardInterrupt


SUBCOMMANDS = ("summary", "plot")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:
        # `autofinetune summary OUT` / `plot OUT`; a training script named so runs as ./summary
        from . import views

        _configure_logging()
        command = views.main_summary if argv[0] == "summary" else views.main_plot
        try:
            return command(argv[1:])
        except AutofinetuneError as error:
            print(f"autofinetune: error: {error}", file=sys.stderr)
            return error.exit_code
    args = build_parser().parse_intermixed_args(argv)
    _configure_logging()
    previous_term = signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    try:
        from .api import tune
        from .search import parse_passthrough

        pairs = dict(parse_passthrough(args.passthrough))
        tune(
            args.script,
            args.param_file,
            popsize=args.popsize,
            rounds=args.rounds,
            output_dir=args.output_dir,
            evaluator=args.evaluator,
            tuning_strategy=args.tuning_strategy,
            gpu=args.gpu,
            workers=args.workers,
            seed=args.seed,
            passthrough=pairs,
            timeout=args.timeout,
            max_retries=args.max_retries,
            kill_grace=args.kill_grace,
            resume=args.resume,
            backend=args.backend,
            scheduler_address=args.scheduler_address,
            asynchronous=args.asynchronous,
            echo=lambda line: print(line, flush=True),
            progress=not args.no_progress,
        )
    except AutofinetuneError as error:
        if error.exit_code == 130:
            given = [a for a in argv if a != "--resume"]
            if args.output_dir is None and getattr(error, "output_dir", None):
                given.append(f"--output_dir={error.output_dir}")
            print(f"autofinetune: {error}:\n  autofinetune {shlex.join(given + ['--resume'])}", file=sys.stderr)
            return 130
        print(f"autofinetune: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # before the search started, or a second Ctrl-C
        print("autofinetune: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    return 0
