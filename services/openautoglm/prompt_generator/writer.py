"""A causal language model that writes instructions for the search.

- APE (Zhou et al., ICLR 2023): shown input/output pairs from the train split, the model writes
  the instruction that would produce them.
- OPRO (Yang et al., ICLR 2024): shown the instructions tried so far with their validation
  scores (worst first, as OPRO orders its meta-prompt) and a few examples, it writes a new one
  that should score higher.
- Paraphrase (GrIPS's fourth edit): it rewrites one phrase.

The writer builds the meta-prompts and caches answers by (question, seed); the model behind it
is a `TextGenerator`: any Hugging Face causal LM directory (a GLM, Qwen or Llama checkpoint on
disk) loaded in this process (`InstructionWriter.local`, CUDA when there is one, else CPU for
small models), or the one a trainer hosts (`TrainerGenerator`, trainer_model.py), so that
generation runs where the GPUs are. Sampling is seeded by the study and the trial, so the same
records ask the same question and get the same answer on any replica.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from openautoglm.common.datasets import Example
from openautoglm.common.spec.templates import clean_instruction
from openautoglm.common.text_generation import GenerationError, LocalGenerator, TextGenerator

log = logging.getLogger(__name__)
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
    """One model's instruction writing, shared by every study of this replica."""

    def __init__(self, generator: TextGenerator):
        self.generator = generator
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], str] = OrderedDict()
        self.generations = 0  # questions the model answered (cache misses)

    @classmethod
    def local(cls, model_dir: str | Path, seconds: float = 20.0) -> "InstructionWriter":
        """A writer whose model runs in this process (`seconds`: the budget per generation)."""
        try:
            return cls(LocalGenerator(model_dir, seconds))
        except GenerationError as err:
            raise WriterError(str(err)) from None

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
        """The model's sampled continuation of `prompt` (cached by prompt and seed; a failure is
        not cached, so the same question is asked again next time)."""
        key = (prompt, seed)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            text = self.generator.complete(prompt, seed)
        except GenerationError as err:
            raise WriterError(str(err)) from None
        with self._lock:
            self.generations += 1
            self._cache[key] = text
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return text
