"""Trial checkpoints: everything needed to continue a trial bit-for-bit, written atomically.

A checkpoint holds the model (trainable state), optimizer, LR schedule, GradScaler, the RNG
states, the step (which is also the data position: the batch plan is a pure function of the
seed) and the loss history. It is written to a temp file beside the target and renamed
(`os.replace` is atomic only within one filesystem), so a SIGKILL leaves the old checkpoint or
the new one, never half of one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

FILE = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / FILE
    temp = directory / f".{FILE}.tmp-{os.getpid()}"
    torch.save(state, temp)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, target)
    return target


def load(directory: Path, key: str) -> dict[str, Any] | None:
    """The checkpoint in `directory` if it belongs to this exact job (`key`), else None."""
    target = directory / FILE
    if not target.is_file():
        return None
    state = torch.load(target, map_location="cpu", weights_only=False)
    return state if state.get("key") == key else None
