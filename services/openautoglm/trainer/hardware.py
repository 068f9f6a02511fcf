"""What this trainer's machine has: device kind, local GPUs, free memory (read, never guessed)."""
from __future__ import annotations

import os

import torch


def device_kind() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def free_memory_mb() -> float:
    """Free memory of the device trials run on: the current GPU's, else the machine's free RAM."""
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0] / 2**20
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20


def report_capacity(slots: int, busy: int) -> None:
    """Put the slots and, with GPUs, each device's memory into the metrics (metrics.py)."""
    from openautoglm.common.metrics import GPU_MEMORY, TRAINER_SLOTS

    TRAINER_SLOTS.labels("total").set(slots)
    TRAINER_SLOTS.labels("busy").set(busy)
    for index in range(gpu_count()):
        free, total = torch.cuda.mem_get_info(index)
        GPU_MEMORY.labels(str(index), "allocated").set(torch.cuda.memory_allocated(index))
        GPU_MEMORY.labels(str(index), "reserved").set(torch.cuda.memory_reserved(index))
        GPU_MEMORY.labels(str(index), "free").set(free)
        GPU_MEMORY.labels(str(index), "total").set(total)
