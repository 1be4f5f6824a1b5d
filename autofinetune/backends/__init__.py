"""Where trials run: on this machine (`local`) or as tasks of a Dask cluster (`dask`).

Every backend offers the LocalScheduler interface (submit, wait_any, shutdown, kill_now,
stop_launching, close, queued, running): the search loop does not know which one it drives.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..devices import Slot
from ..errors import ConfigError

BACKENDS = ("local", "dask")


def make_scheduler(backend: str, slots: Sequence[Slot], kill_grace: float, on_start: Optional[Callable[..., None]] = None,
                   address: Optional[str] = None) -> Any:
    if backend == "local":
        from ..scheduler import LocalScheduler

        return LocalScheduler(slots, kill_grace=kill_grace, on_start=on_start)
    if backend == "dask":
        try:
            from .dask import DaskScheduler
        except ImportError as error:
            if (getattr(error, "name", None) or "").split(".")[0] not in ("dask", "distributed"):
                raise
            raise ConfigError("--backend=dask needs Dask, which is not installed; fix: pip install 'autofinetune[dask]'") from None

        return DaskScheduler(slots, kill_grace=kill_grace, on_start=on_start, address=address)
    raise ConfigError(f"--backend={backend!r}: unknown backend; choose one of {', '.join(BACKENDS)}")
