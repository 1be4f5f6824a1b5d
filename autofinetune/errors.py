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
    """The search ran but is no success: no trial succeeded, or every trial of a round failed.

    `result` holds what it found all the same (None when nothing succeeded), for the API.
    """

    exit_code = 1

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


def shown(value: object, limit: int = 120) -> str:
    """A user's value as an error message shows it: whole when short, its two ends otherwise,
    so one line stays one readable line however long a path or a value is."""
    text = str(value)
    if not text.isprintable():  # a newline or an escape code would break the one line
        text = repr(text)[1:-1]
    if len(text) <= limit:
        return text or "''"
    keep = (limit - 5) // 2
    return f"{text[:keep]}[...]{text[-keep:]}"


def path_error(what: str, path: object, error: BaseException, fix: str) -> ConfigError:
    """One line for any OSError (or symlink loop) met on a path the user gave."""
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return ConfigError(f"{what}={shown(path)}: {reason}; fix: {fix}")
