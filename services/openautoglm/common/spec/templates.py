"""Prompt-template syntax: format-string `{names}`, one of which is the example's `{input}` slot."""
from __future__ import annotations

import string

INPUT_SLOT = "input"
# Prompt dimensions the search adds to the template variables when instructions are given.
INSTRUCTION_DIMENSIONS = ("instruction_text", "instruction_position")


# The longest instruction the search writes (and accepts back in a trial record or warm start).
MAX_INSTRUCTION_CHARS = 1000


def clean_instruction(text: str) -> str:
    """Generated text made safe to put in a prompt: one line, no template braces (an instruction
    holding "{input}" would be filled with the example), at most MAX_INSTRUCTION_CHARS."""
    text = " ".join(text.replace("{", "").replace("}", "").split())
    return text[:MAX_INSTRUCTION_CHARS].strip()


def is_clean_instruction(text: str) -> bool:
    """Whether an instruction is one the search could have written (checked on every generated
    instruction that comes back: trial records, warm-start results)."""
    return bool(text) and text == clean_instruction(text)


def template_fields(text: str) -> set[str]:
    """The `{names}` a template uses (format-string syntax; `{{` escapes a brace)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as err:
        raise ValueError(f"malformed template: {err}") from None


def render(text: str, values: dict[str, str], keep_input: bool = True) -> str:
    """Fill a template's variables; with keep_input the '{input}' slot stays for the example."""
    mapping = dict(values)
    if keep_input:
        mapping[INPUT_SLOT] = "{" + INPUT_SLOT + "}"
    return text.format_map(mapping)


def fill_input(prompt: str, text: str) -> str:
    """Put one example's text into a rendered prompt's '{input}' slot (nothing else is parsed)."""
    return prompt.replace("{" + INPUT_SLOT + "}", text)
