"""Preflight: learn which options the training script accepts before a single trial runs.

A first search used to find a script's missing options one failed round at a time (full-trail
failing every trial for want of `--saved_params_dir`; population-based training round 0 and
then failing every resumed trial for want of `--model_path`). Here the script is run once with
`--help` (time-limited, no GPU, nothing of the search's in its environment); if what comes back
is an argparse-style usage text, every option the search would pass — the tuned hyperparameters,
the trailing pairs, the evaluator's `--model_path`/`--epochs` that only later rounds need — is
checked against it, and a search that would fail is refused in one line naming every missing
option and the fix. A script that is not argparse (or not Python) is skipped with one note.
"""
from __future__ import annotations

import difflib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, List, Optional, Sequence

from .errors import ConfigError, shown
from .runner import open_regular

#: Seconds `script --help` may take (importing torch alone can take a few).
HELP_TIMEOUT = 30.0
#: A usage text is a few KiB; more is not one.
HELP_LIMIT = 1 << 20
#: How much of the script is searched for `ArgumentParser`.
SOURCE_LIMIT = 4 << 20
_OPTION = re.compile(r"(?<![\w-])--([A-Za-z0-9][\w.-]*)")


@dataclass(frozen=True)
class Accepted:
    """What `--help` said: the options the script takes, or None when it could not tell."""

    options: Optional[FrozenSet[str]]
    note: str = ""
    #: The script parses with `parse_known_args`: an option it lacks is ignored, not fatal.
    lenient: bool = False

    def takes(self, name: str) -> bool:
        """argparse also takes a unique prefix of an option (its allow_abbrev, on by default)."""
        if self.options is None or name in self.options:
            return True
        return len([option for option in self.options if option.startswith(name)]) == 1


def preflight(script: Path, program: Sequence[str], cwd: Optional[str]) -> Accepted:
    """What the script accepts, learnt without running a script that would not just print help.

    Only a Python script that builds an `ArgumentParser` is run with `--help` (argparse prints
    the usage and exits before any training); any other script would simply *run*, so it is
    left alone and its options are found out by the trials.
    """
    if script.suffix != ".py":
        return Accepted(None, f"preflight skipped: {shown(script.name, 60)} is not a Python script; its options are found out by the trials")
    try:
        fd = open_regular(script)
        try:
            source = os.read(fd, SOURCE_LIMIT)
        finally:
            os.close(fd)
    except OSError as error:
        return Accepted(None, f"preflight skipped: cannot read {shown(script.name, 60)} ({error.strerror or error})")
    if b"ArgumentParser" not in source:
        return Accepted(None, f"preflight skipped: {shown(script.name, 60)} builds no argparse ArgumentParser; "
                              f"its options are found out by the trials")
    learnt = learn_options(program, cwd)
    return Accepted(learnt.options, learnt.note, lenient=b"parse_known_args" in source)


def learn_options(program: Sequence[str], cwd: Optional[str]) -> Accepted:
    """Run `program --help` and read argparse's usage text; never raises for the script's sake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFINETUNE_")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # a --help must not touch, or wait for, a GPU
    try:
        done = subprocess.run([*program, "--help"], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=HELP_TIMEOUT, start_new_session=True)
    except subprocess.TimeoutExpired:
        return Accepted(None, f"preflight skipped: `{shown(program[-1], 60)} --help` took more than {HELP_TIMEOUT:g} s")
    except OSError as error:
        return Accepted(None, f"preflight skipped: could not run `{shown(program[-1], 60)} --help` ({error.strerror or error})")
    text = done.stdout[:HELP_LIMIT].decode("utf-8", errors="replace")
    if done.returncode != 0 or "usage:" not in text.lower():
        return Accepted(None, f"preflight skipped: `{shown(program[-1], 60)} --help` printed no argparse usage "
                              f"(exit code {done.returncode}); its options are found out by the trials")
    return Accepted(frozenset(_OPTION.findall(text)))


def missing_options(accepted: Accepted, required: Sequence[str]) -> List[str]:
    return [name for name in required if not accepted.takes(name)]


def refuse_missing(script: str, accepted: Accepted, tuned: Sequence[str], passthrough: Sequence[str],
                   evaluator_options: Sequence[str], evaluator: str) -> str:
    """One line naming every option the search would pass and the script lacks, with the fix:
    raised as a ConfigError, or returned as a warning for a script that ignores unknown options
    (`parse_known_args`: its trials would run, but without what those options carry).

    `evaluator_options` are what the evaluator needs from the script (`saved_params_dir`,
    `model_path`, `epochs` under population-based: the later rounds' options, found now)."""
    problems = []
    for group, names in (("hyperparameter", tuned), ("trailing pair", passthrough)):
        for name in missing_options(accepted, names):
            problems.append(f"--{name} ({group}{_near(name, accepted)})")
    lacking = missing_options(accepted, evaluator_options)
    if lacking:
        problems.append(" and ".join(f"--{name}" for name in lacking) + f" (the {evaluator} evaluator saves and resumes "
                                                                           f"models through them)")
    if not problems:
        return ""
    if accepted.lenient:
        return (f"preflight: {shown(script, 80)} does not take {', '.join(problems)}; it ignores unknown options "
                f"(parse_known_args), so its trials will run without them")
    fixes = ["add them to its argparse options"]
    if any("hyperparameter" in p for p in problems):
        fixes.append("rename the hyperparameter in the param file")
    if lacking:
        fixes.append("or run with --evaluator=fulltrail")
    raise ConfigError(f"preflight: {shown(script, 80)} does not accept {', '.join(problems)}; fix: {', '.join(fixes)} "
                      f"(README, 'The training script'; --skip_preflight if it takes them without listing them in --help)")


def _near(name: str, accepted: Accepted) -> str:
    """`batch_size` when the script says `--batch-size`: the near-miss a newcomer makes."""
    if not accepted.options:
        return ""
    spelled = [option for option in accepted.options if option.replace("-", "_") == name.replace("-", "_")]
    close = spelled or difflib.get_close_matches(name, sorted(accepted.options), n=1, cutoff=0.8)
    return f"; the script has --{close[0]}" if close else ""
