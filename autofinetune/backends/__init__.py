"""Where trials run: on this machine (`local`) or as tasks of a Dask cluster (`dask`).

Every backend is a `Backend` (backends/base.py): the search loop does not know which one it drives.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..devices import Slot
from ..errors import ConfigError
from .base import Backend, OnStart

BACKENDS = ("local", "dask")

__all__ = ["BACKENDS", "Backend", "OnStart", "make_backend"]


def make_backend(name: str, slots: Sequence[Slot], kill_grace: float, on_start: OnStart,
                 address: Optional[str] = None) -> Backend:
    """The backend `name`; Dask is imported only when asked for, as it is an optional extra."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(slots, kill_grace=kill_grace, on_start=on_start)
    if name == "dask":
        try:
            from .dask import DaskBackend
        except ImportError as error:
            if (getattr(error, "name", None) or "").split(".")[0] not in ("dask", "distributed"):
                raise
            raise ConfigError("--backend=dask needs Dask, which is not installed; fix: pip install 'autofinetune[dask]'") from None

        return DaskBackend(slots, kill_grace=kill_grace, on_start=on_start, address=address)
    raise ConfigError(f"--backend={name!r}: unknown backend; choose one of {', '.join(BACKENDS)}")
