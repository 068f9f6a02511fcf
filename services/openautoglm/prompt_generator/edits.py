"""Phrase-level edits of an instruction, after GrIPS (Prasad et al., EACL 2023): no gradient and
no large model. An instruction is cut into phrases; an edit deletes one, swaps two, adds one from
the study's phrase pool, or (when a paraphraser is configured) rewrites one. The search applies
them to its best candidate so far (search.py), and every candidate they make records its lineage.

GrIPS cuts phrases with a constituency parser; with no model to download, `phrases` cuts at
punctuation and before the function words that usually open a phrase, which gives
GrIPS-sized pieces on instruction-like text ("Classify the sentiment | of this review | .").
Everything here is a pure function of its inputs and the seeded `random.Random` it is given.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openautoglm.common.spec.templates import clean_instruction

# A phrase opens before one of these words (lower-case), as well as after , ; : ( ).
_OPENERS = frozenset(
    "and or but then so because if when while whether of for in on at with without to from by as about into "
    "that which who whose where using based given".split())
_PUNCTUATION = re.compile(r"\s*([,;:()])\s*")


class EditImpossible(ValueError):
    """This edit cannot apply to this instruction (one phrase cannot be swapped, say)."""


@dataclass(frozen=True)
class Edit:
    """One applied edit: what it did, in words a person reads in the candidate's lineage."""

    operation: str
    description: str


def phrases(instruction: str) -> list[str]:
    """The instruction's phrases, in order; joined with spaces they give it back (modulo spaces
    around punctuation). Punctuation marks stay attached to the phrase before them."""
    words = instruction.split()
    out: list[list[str]] = []
    for word in words:
        opens = not out or word.lower().strip("\"'") in _OPENERS or out[-1][-1].endswith((",", ";", ":", ")"))
        if opens or word.startswith("("):
            out.append([word])
        else:
            out[-1].append(word)
    return [" ".join(p) for p in out]


def join(parts: Sequence[str]) -> str:
    """Phrases back into one instruction: single spaces, a capital first letter, and the final
    mark of the original kept at the end."""
    words = [_lower_first(p.strip()) if i else p.strip() for i, p in enumerate(parts)]
    text = " ".join(w for w in words if w)
    text = re.sub(r"\s+([,;:.!?])", r"\1", text).strip(" ,;:")
    return text[:1].upper() + text[1:] if text else text


def _lower_first(phrase: str) -> str:
    """A phrase moved off the front loses its capital ("Classify" -> "classify"; "NASA" stays)."""
    return phrase[:1].lower() + phrase[1:] if phrase[:2].istitle() else phrase


def pool_from(instructions: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The phrases `add` may insert: the study's own phrases first, then every phrase of its
    instructions (GrIPS adds phrases the search deleted, which come from these), de-duplicated."""
    seen: dict[str, None] = {}
    for phrase in [*extra, *(p.strip(" ,;:.!?") for text in instructions for p in phrases(text))]:
        if phrase:
            seen.setdefault(phrase, None)
    return list(seen)


def apply(instruction: str, operation: str, rng: random.Random, pool: Sequence[str],
          paraphrase: Callable[[str], str] | None = None) -> tuple[str, Edit]:
    """The instruction after one edit; EditImpossible when the edit cannot apply here."""
    parts = phrases(instruction)
    if len(parts) < 2 and operation in ("delete", "swap"):
        parts = instruction.split()  # one phrase: GrIPS's word-level edits
    final = parts[-1][-1] if parts and parts[-1][-1] in ".!?" else ""
    if final:
        parts[-1] = parts[-1][:-1]
    if operation == "delete":
        if len(parts) < 2:
            raise EditImpossible("one phrase left: nothing to delete")
        i = rng.randrange(len(parts))
        edit = Edit("delete", f"delete {parts[i].strip(' ,;:')!r}")
        del parts[i]
    elif operation == "swap":
        if len(parts) < 2:
            raise EditImpossible("one phrase: nothing to swap")
        i, j = sorted(rng.sample(range(len(parts)), 2))
        edit = Edit("swap", f"swap {parts[i].strip(' ,;:')!r} <-> {parts[j].strip(' ,;:')!r}")
        parts[i], parts[j] = parts[j], parts[i]
    elif operation == "add":
        present = {p.strip(" ,;:").lower() for p in parts}
        choices = [p for p in pool if p.lower() not in present]
        if not choices:
            raise EditImpossible("every phrase of the pool is in the instruction already")
        phrase, at = rng.choice(choices), rng.randrange(len(parts) + 1)
        edit = Edit("add", f"add {phrase!r} at {at}")
        parts.insert(at, phrase)
    elif operation == "paraphrase":
        if paraphrase is None:
            raise EditImpossible("no paraphraser is configured")
        i = rng.randrange(len(parts))
        new = clean_instruction(paraphrase(parts[i].strip(" ,;:")))
        if not new or new.lower() == parts[i].strip(" ,;:").lower():
            raise EditImpossible("the paraphraser gave nothing new")
        edit = Edit("paraphrase", f"paraphrase {parts[i].strip(' ,;:')!r} -> {new!r}")
        parts[i] = new
    else:
        raise ValueError(f"unknown edit {operation!r}")
    text = join(parts)
    if final and text and text[-1] not in ".!?":
        text += final
    if not text or text == instruction:
        raise EditImpossible("the edit left the instruction as it was")
    return text, edit


