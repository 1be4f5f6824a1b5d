"""The command line: parse, run the search, map errors to exit codes.

User errors (AutofinetuneError) become one line on stderr and exit code 2 (1 when the search
ran but every trial failed); Ctrl-C exits 130. The options come from the one table in
options.py; this module only adds the script, the trailing pairs and presentation flags.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from typing import List, Optional

from . import __version__
from . import options as option_table
from .errors import AutofinetuneError


class _SearchParser(option_table.OneLineArgumentParser):
    """The search's parser: a dashed option meant for train.py gets the near-miss hint."""

    def error(self, message: str) -> "None":  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
            dashed = next((w for w in words if w.startswith("--")), None)
            if dashed is not None:
                name = dashed[2:].split("=", 1)[0]
                message += (f"; options for train.py go after the flags as undashed 'name value' pairs, "
                            f"e.g. {name} {dashed.split('=', 1)[1] if '=' in dashed else 'VALUE'}")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _SearchParser(
        prog="autofinetune",
        description="Tune the hyperparameters of a training script (PaddleHub AutoDL Finetuner compatible).",
        epilog="Trailing 'name value' pairs (e.g. max_seq_len 128) reach every trial as --name=value; they may not name a tuned "
               "hyperparameter or an option the tuner sets. Also: 'autofinetune summary OUTPUT_DIR [--format json]', "
               "'autofinetune plot OUTPUT_DIR' and 'autofinetune retrain OUTPUT_DIR --output_dir NEW'.",
    )
    parser.add_argument("script", help="the training script (a .py runs with this Python; anything else must be executable)")
    parser.add_argument("passthrough", nargs="*", metavar="name value", help="options passed unchanged to every trial")
    parser.add_argument("--param_file", required=True, help="the search space, hparam.yaml (required)")
    option_table.add_to_parser(parser)
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


SUBCOMMANDS = ("summary", "plot", "retrain")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:
        # `autofinetune summary OUT` / `plot OUT`; a training script named so runs as ./summary
        from . import views

        _configure_logging()
        if argv[0] == "retrain":
            from .retrain import main_retrain as command
        else:
            command = views.main_summary if argv[0] == "summary" else views.main_plot
        try:
            return command(argv[1:])
        except AutofinetuneError as error:
            print(f"autofinetune {argv[0]}: error: {error}", file=sys.stderr)
            return error.exit_code
    args = build_parser().parse_intermixed_args(argv)
    _configure_logging()
    previous_term = signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    try:
        from .api import tune
        from .rules import parse_passthrough

        result = tune(args.script, args.param_file, passthrough=parse_passthrough(args.passthrough),
                      echo=lambda line: print(line, flush=True), progress=not args.no_progress, **option_table.from_namespace(args))
        logdir = result.output_dir / "visualization"
        if logdir.is_dir():  # VisualDL 2.5's page answers HTTP 500 without -L en
            print(f"See it in VisualDL: visualdl --logdir {shlex.quote(str(logdir))} --host 127.0.0.1 --port 8040 -L en "
                  f"--disable-telemetry", flush=True)
    except AutofinetuneError as error:
        from .search import SearchInterrupted

        if isinstance(error, SearchInterrupted):
            given = [a for a in argv if a != "--resume"]
            if args.output_dir is None:
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
