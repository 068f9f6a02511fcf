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
