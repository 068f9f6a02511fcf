"""Sampling text from a local Hugging Face causal language model: the one place that loads a
prompt model and generates with it. The prompt-generator uses it in its own process (small
models on CPU), and a trainer uses it to serve `PromptModel.Complete` (generation where the GPUs
are; trainer/prompt_model.py).

Generation samples with the caller's seed under a lock, so the same prompt and seed give the
same text; each generation gets a time budget (transformers' `max_time`), and one cut short by
it is the one case two calls can differ.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)
MAX_NEW_TOKENS = 48


class GenerationError(RuntimeError):
    """The model cannot be loaded or reached, or it wrote nothing."""


class TextGenerator(Protocol):
    """What the instruction writer needs from a model, wherever it runs."""

    def complete(self, prompt: str, seed: int) -> str:
        """One sampled continuation of `prompt`; raises GenerationError."""
        ...


class LocalGenerator:
    """One causal LM directory, loaded on first use onto CUDA when there is one, else the CPU.
    A model with a chat template gets the prompt as a user turn."""

    def __init__(self, model_dir: str | Path, seconds: float = 20.0, max_new_tokens: int = MAX_NEW_TOKENS):
        self.model_dir = Path(model_dir).expanduser()
        if not (self.model_dir / "config.json").is_file():
            raise GenerationError(f"{self.model_dir} is not a Hugging Face model directory (no config.json)")
        self.seconds = seconds
        self.max_new_tokens = max_new_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._lock = threading.Lock()
        self.generations = 0  # prompts answered

    @property
    def device(self) -> str:
        """Where the model runs ("cuda" or "cpu"; loads it when it is not loaded yet)."""
        with self._lock:
            self._load()
            return str(self._device.type)

    def complete(self, prompt: str, seed: int, max_seconds: float | None = None) -> str:
        """The model's sampled continuation of `prompt`, in at most `max_seconds` (at most the
        generator's own budget)."""
        seconds = self.seconds if not max_seconds or max_seconds <= 0 else min(max_seconds, self.seconds)
        with self._lock:
            self._load()
            return self._generate(prompt, seed, seconds)

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            model: Any = AutoModelForCausalLM.from_pretrained(self.model_dir)
        except (OSError, ValueError, KeyError) as err:
            raise GenerationError(f"cannot load the prompt model from {self.model_dir}: {err}") from None
        self._device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        model.to(self._device)
        self._model = model.eval()
        log.info("prompt model %s loaded on %s", self.model_dir, self._device)

    def _generate(self, prompt: str, seed: int, seconds: float) -> str:
        import torch

        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)["input_ids"]
        else:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        ids = ids.to(self._device)
        cpu_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # under the lock: the sample depends on the seed alone (CUDA's too)
        try:
            with torch.no_grad():
                out = self._model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.8, top_p=0.95,
                    max_new_tokens=self.max_new_tokens, max_time=seconds,
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        finally:
            torch.random.set_rng_state(cpu_state)
        self.generations += 1
        return str(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
