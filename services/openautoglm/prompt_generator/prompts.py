"""A study's prompt dimension: every template rendered with every combination of the variables
it uses (and every instruction before/after it, when instructions are given), cached by a hash of
(template, values, model version). A rendered prompt's `key` names it as one categorical value of
the search, and `prompt_key` recovers that key from a candidate's template id and variables.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openautoglm.common.spec.templates import INPUT_SLOT, INSTRUCTION_DIMENSIONS, render, template_fields


@dataclass(frozen=True)
class RenderedPrompt:
    template_id: str
    variables: tuple[tuple[str, str], ...]
    prompt: str

    @property
    def key(self) -> str:
        return json.dumps([self.template_id, list(self.variables)])


def prompt_key(template_text: str, template_id: str, variables: Mapping[str, str], with_instructions: bool) -> str:
    """The key of the rendered prompt that `template_id` with these `variables` is (KeyError if one is missing)."""
    used = sorted(template_fields(template_text) - {INPUT_SLOT})
    dims = [(name, variables[name]) for name in used]
    if with_instructions:
        dims += [(name, variables[name]) for name in INSTRUCTION_DIMENSIONS]
    return RenderedPrompt(template_id, tuple(dims), "").key


class RenderCache:
    """Rendered prompts keyed by a hash of (template, variable values, model version)."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.lookups = 0

    def render(self, template: str, values: dict[str, str], model_version: str) -> str:
        key = hashlib.sha256(
            json.dumps([template, sorted(values.items()), model_version]).encode()
        ).hexdigest()
        with self._lock:
            self.lookups += 1
            if key in self._cache:
                self.hits += 1
                return self._cache[key]
        text = render(template, values)
        with self._lock:
            self._cache[key] = text
        return text


def render_all(
    templates: Sequence[tuple[str, str]],
    variables: Mapping[str, Sequence[str]],
    model_version: str,
    cache: RenderCache,
    instructions: Sequence[str] = (),
    positions: Sequence[str] = ("before",),
) -> list[RenderedPrompt]:
    """Every template x every combination of the values of the variables it uses
    (x every instruction x every position, when instructions are given)."""
    out = []
    for template_id, text in templates:
        used = sorted(template_fields(text) - {INPUT_SLOT})
        for combo in itertools.product(*(variables[name] for name in used)):
            values = dict(zip(used, combo))
            rendered = cache.render(text, values, model_version)
            if not instructions:
                out.append(RenderedPrompt(template_id, tuple(values.items()), rendered))
                continue
            for instruction, position in itertools.product(instructions, positions):
                out.append(with_instruction(template_id, values, rendered, instruction, position))
    return out


def with_instruction(template_id: str, values: Mapping[str, str], rendered: str, instruction: str,
                     position: str) -> RenderedPrompt:
    """A rendered template with an instruction before or after it (a user's, or one the search
    wrote: both become prompts the same way)."""
    prompt = f"{instruction} {rendered}" if position == "before" else f"{rendered} {instruction}"
    dims = (("instruction_text", instruction), ("instruction_position", position))
    return RenderedPrompt(template_id, tuple(values.items()) + dims, prompt)
