"""How much memory a trial needs, known before any model is loaded.

The gateway asks this for every trial it queues, so the scheduler can pack trials onto trainer
slots that hold them; the trainer applies the same formula (`training_memory_mb`) to the model it
actually loaded, as a last check against the memory it really has free. A study can state the
need itself (`training.memory_mb`), which wins over the estimate.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from openautoglm.common.catalogue import (
    DEFAULT_HYPERPARAMETERS,
    DEFAULT_MAX_LENGTH,
    TINY_SHAPE,
    TINY_VOCAB_ESTIMATE,
    minilm_path,
)

TINY = {**TINY_SHAPE, "vocab_size": TINY_VOCAB_ESTIMATE}


def training_memory_mb(params: int, trainable: int, hidden: int, layers: int, batch_size: int, max_length: int) -> float:
    """fp32 weights, grads and AdamW moments of the trainable part, plus one batch's activations."""
    activations = batch_size * max_length * hidden * layers * 34  # bytes, a transformer rule of thumb
    return (params * 4 + trainable * 12 + activations) / 2**20


@functools.lru_cache(maxsize=64)
def model_shape(builtin: str, path: str) -> dict[str, int]:
    """hidden_size, intermediate_size, num_hidden_layers, vocab_size of a model, from its config
    (read once per model: the gateway asks for every trial it queues). Do not modify the result."""
    if builtin == "tiny" or (not builtin and not path):
        return TINY
    if builtin == "minilm":
        try:
            directory = minilm_path()
        except ModuleNotFoundError:
            return TINY  # the trainer reports the missing package; do not fail the estimate
    else:
        directory = Path(path).expanduser()
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return TINY  # the trainer reports the unreadable model; do not fail the estimate
    hidden = int(config.get("hidden_size") or config.get("d_model") or config.get("n_embd") or 768)
    return {
        "hidden_size": hidden,
        "intermediate_size": int(config.get("intermediate_size") or config.get("n_inner") or 4 * hidden),
        "num_hidden_layers": int(config.get("num_hidden_layers") or config.get("n_layer") or 12),
        "vocab_size": int(config.get("vocab_size") or 32000),
    }


def estimate_params(shape: dict[str, int]) -> int:
    """Embeddings plus per layer: attention (4 h^2) and the MLP (3 h * intermediate, gated)."""
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    return shape["vocab_size"] * h + layers * (4 * h * h + 3 * h * inter)


def estimate_trial_memory_mb(builtin: str, path: str, tuning: str, batch_size: int, max_length: int) -> float:
    shape = model_shape(builtin, path)
    params = estimate_params(shape)
    # LoRA / prompt tuning train well under 1% of the weights.
    trainable = params if tuning in ("", "full") else params // 100
    return training_memory_mb(params, trainable, shape["hidden_size"], shape["num_hidden_layers"],
                              int(batch_size or DEFAULT_HYPERPARAMETERS["batch_size"]), max_length or DEFAULT_MAX_LENGTH)
