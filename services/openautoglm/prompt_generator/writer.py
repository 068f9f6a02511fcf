"""A local causal language model that writes instructions for the search.

- APE (Zhou et al., ICLR 2023): shown input/output pairs from the train split, the model writes
  the instruction that would produce them.
- OPRO (Yang et al., ICLR 2024): shown the instructions tried so far with their validation
  scores (worst first, as OPRO orders its meta-prompt) and a few examples, it writes a new one
  that should score higher.
- Paraphrase (GrIPS's fourth edit): it rewrites one phrase.

Any Hugging Face causal LM directory works (a GLM, Qwen or Llama checkpoint on disk); one with a
chat template gets the meta-prompt as a user turn. Generation samples with a seed the search
derives from the study and the trial, so the same records ask the same question and get the same
answer; answers are cached by (question, seed). Each generation gets at most `seconds`
(transformers' `max_time`); one cut short by it is the one case two replicas can differ.
It runs on the prompt-generator's device: CUDA when it has one, else CPU (small models).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openautoglm.common.datasets import Example
from openautoglm.common.spec.templates import clean_instruction

log = logging.getLogger(__name__)
MAX_NEW_TOKENS = 48
# Answers kept per writer (question, seed) -> text.
CACHE_ENTRIES = 4096
# Characters of one example's text and label shown in a meta-prompt.
EXAMPLE_CHARS = 200

APE_TEMPLATE = (
    "I gave a friend an instruction and some inputs. The friend read the instruction and wrote an output "
    "for every one of the inputs. Here are the input-output pairs:\n\n{pairs}\n\nThe instruction was:"
)
OPRO_TEMPLATE = (
    "Your task is to write an instruction for a language model. Below are some previous instructions with "
    "their scores. The score ranges from 0 to 100, higher is better.\n\n{scored}\n\n"
    "Here are examples of the task:\n\n{pairs}\n\n"
    "Write a new instruction that is different from the old ones and has a score as high as possible. "
    "Write only the instruction.\nInstruction:"
)
PARAPHRASE_TEMPLATE = "Rewrite this phrase with other words that mean the same.\nPhrase: {phrase}\nRewritten:"


class WriterError(RuntimeError):
    """The model cannot be loaded or wrote nothing usable."""


def _pairs(examples: Sequence[Example]) -> str:
    return "\n\n".join(f"Input: {ex.text[:EXAMPLE_CHARS]}\nOutput: {ex.label[:EXAMPLE_CHARS]}" for ex in examples)


def first_instruction(text: str) -> str:
    """The instruction in a model's answer: its first non-empty line, without quotes or a label
    the model repeated ("Instruction: ..."), made safe to put in a prompt (templates.clean_instruction)."""
    for line in text.splitlines():
        line = line.strip().strip("\"'`").strip()
        for label in ("Instruction:", "The instruction was:", "Rewritten:"):
            if line.lower().startswith(label.lower()):
                line = line[len(label):].strip()
        if line:
            line = clean_instruction(line)
            return line[:1].upper() + line[1:]
    return ""


class InstructionWriter:
    """One local causal LM, loaded on first use, shared by every study of this replica."""

    def __init__(self, model_dir: str | Path, seconds: float = 20.0, max_new_tokens: int = MAX_NEW_TOKENS):
        self.model_dir = Path(model_dir).expanduser()
        if not (self.model_dir / "config.json").is_file():
            raise WriterError(f"{self.model_dir} is not a Hugging Face model directory (no config.json)")
        self.seconds = seconds
        self.max_new_tokens = max_new_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], str] = OrderedDict()
        self.generations = 0  # questions the model answered (cache misses)

    # --- the questions ------------------------------------------------------------------------
    def ape(self, examples: Sequence[Example], seed: int) -> str:
        return first_instruction(self.complete(APE_TEMPLATE.format(pairs=_pairs(examples)), seed))

    def opro(self, scored: Sequence[tuple[str, float]], examples: Sequence[Example], seed: int) -> str:
        """`scored`: (instruction, score in 0..1) pairs; shown worst first, as OPRO does."""
        lines = "\n\n".join(f"text:\n{text}\nscore:\n{round(100 * score)}" for text, score in sorted(scored, key=lambda p: p[1]))
        return first_instruction(self.complete(OPRO_TEMPLATE.format(scored=lines, pairs=_pairs(examples)), seed))

    def paraphrase(self, phrase: str, seed: int) -> str:
        return first_instruction(self.complete(PARAPHRASE_TEMPLATE.format(phrase=phrase), seed))

    # --- generation ---------------------------------------------------------------------------
    def complete(self, prompt: str, seed: int) -> str:
        """The model's sampled continuation of `prompt` (cached by prompt and seed)."""
        key = (prompt, seed)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            text = self._generate(prompt, seed)
            self._cache[key] = text
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
            return text

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            model: Any = AutoModelForCausalLM.from_pretrained(self.model_dir)
        except (OSError, ValueError, KeyError) as err:
            raise WriterError(f"cannot load the prompt model from {self.model_dir}: {err}") from None
        self._device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        model.to(self._device)
        self._model = model.eval()
        log.info("prompt model %s loaded on %s", self.model_dir, self._device)

    def _generate(self, prompt: str, seed: int) -> str:
        import torch

        if self._model is None:
            self._load()
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)["input_ids"]
        else:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        ids = ids.to(self._device)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # under the lock: the sample depends on the seed alone
        try:
            with torch.no_grad():
                out = self._model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.8, top_p=0.95,
                    max_new_tokens=self.max_new_tokens, max_time=self.seconds,
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        finally:
            torch.random.set_rng_state(generator_state)
        self.generations += 1
        return str(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
