"""One base class for every error a user can fix.

The CLI catches `AutofinetuneError` and prints its message as one line with exit code 2, so
every message must name what is wrong (file, field) and how to fix it; anything else that
escapes is a bug and keeps its traceback.
"""


class AutofinetuneError(Exception):
    """An error caused by the user's input; its message is shown as one line."""

    exit_code = 2


class SpaceError(AutofinetuneError):
    """The search space (hparam.yaml or an in-memory list) is malformed."""


class ConfigError(AutofinetuneError):
    """A command-line option or API argument is invalid or inconsistent."""


class SearchFailed(AutofinetuneError):
    """The search ran but produced no successful trial."""

    exit_code = 1
