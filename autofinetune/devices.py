"""Where trials may run: GPU slots from --gpu or pynvml, else CPU worker slots."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

from .errors import ConfigError, shown

#: More slots than any machine or cluster runs trials at once is a typo, not a plan.
MAX_SLOTS = 4096

log = logging.getLogger("autofinetune")


@dataclass(frozen=True)
class Slot:
    """One place a trial can run; `gpu` is None for a CPU slot."""

    index: int
    gpu: Optional[str] = None

    @property
    def label(self) -> str:
        return f"gpu:{self.gpu}" if self.gpu is not None else f"cpu:{self.index}"

    @property
    def cuda_visible_devices(self) -> str:
        """The child's CUDA_VISIBLE_DEVICES: its GPU, or empty so CPU trials never grab one."""
        return self.gpu if self.gpu is not None else ""


def parse_gpu_option(text: str) -> List[str]:
    """'0,1' -> ['0', '1']; '0,0' asks for two slots on GPU 0."""
    ids = [part.strip() for part in str(text).split(",")]
    if not ids or any(not part or not part.isprintable() or any(c.isspace() for c in part) for part in ids):
        raise ConfigError(f"--gpu={shown(repr(text), 60)}: expected comma-separated GPU ids without gaps, e.g. --gpu=0,1 "
                          f"(or 0,0 for two trials on GPU 0)")
    if len(ids) > MAX_SLOTS:
        raise ConfigError(f"--gpu: {len(ids)} slots, at most {MAX_SLOTS}; fix: list each GPU once per trial it should run")
    return ids


def visible_gpus() -> List[str]:
    """GPU indices pynvml can see; none when the driver or library is missing."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError:
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def build_slots(gpu: Optional[str], workers: Optional[int], discovered: Optional[Sequence[str]] = None) -> List[Slot]:
    """Turn --gpu / --workers into slots.

    Explicit GPU ids that pynvml cannot see only warn: the ids may be valid for a driver we
    cannot query, and tests use fake ids that the child sees in CUDA_VISIBLE_DEVICES.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers={workers}: must be at least 1")
    found = list(visible_gpus() if discovered is None else discovered)
    if gpu is not None:
        ids = parse_gpu_option(gpu)
        unseen = sorted({i for i in ids if i not in found})
        if unseen:
            shown = ", ".join(found) if found else "none"
            log.warning("GPU id(s) %s not visible to pynvml (visible: %s); trials get them in CUDA_VISIBLE_DEVICES anyway", ", ".join(unseen), shown)
        if workers is not None:
            log.warning("--workers is ignored when --gpu is given (one trial per listed id; repeat an id, e.g. --gpu=0,0, for several trials per GPU)")
        return [Slot(i, g) for i, g in enumerate(ids)]
    if found:
        if workers is not None:
            log.warning("--workers is ignored: pynvml found GPU(s) %s, one trial per GPU (use --gpu=0,0 for several per GPU)", ", ".join(found))
        return [Slot(i, g) for i, g in enumerate(found)]
    count = workers if workers is not None else (os.cpu_count() or 1)
    return [Slot(i, None) for i in range(count)]
