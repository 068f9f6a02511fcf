"""Examples for studies: the built-in demo sets that ship in the package, or a local JSONL file.

A JSONL line is one object with the input text and its label (classification) or target text
(generation). Problems name the file and line. The split into train and held-out examples is a
seeded shuffle, so every trainer replica and every re-run sees the same split.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
BUILTIN = {
    "sentiment-demo": ("sentiment_demo.jsonl", "classification"),
    "piglatin-demo": ("piglatin_demo.jsonl", "generation"),
}
DEFAULT_LABEL_FIELD = {"classification": "label", "generation": "target"}


class DatasetError(ValueError):
    """A dataset problem, naming the file and (where it applies) the line."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str


def resolve_path(builtin: str, path: str) -> Path:
    if builtin:
        if builtin not in BUILTIN:
            raise DatasetError(f"unknown built-in dataset {builtin!r}; expected one of {', '.join(BUILTIN)}")
        return DATA_DIR / BUILTIN[builtin][0]
    return Path(path).expanduser()


def load_jsonl(path: Path, text_field: str, label_field: str) -> list[Example]:
    """Read every line; a malformed line or a missing field raises DatasetError naming it."""
    examples = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise DatasetError(f"{path}: cannot read dataset: {err.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object")
            for name in (text_field, label_field):
                if name not in row:
                    raise DatasetError(f"{path}:{number}: missing field {name!r}")
            examples.append(Example(str(row[text_field]), str(row[label_field])))
    if len(examples) < 2:
        raise DatasetError(f"{path}: needs at least 2 examples, found {len(examples)}")
    return examples


def load_split(
    builtin: str,
    path: str,
    task: str,
    text_field: str = "",
    label_field: str = "",
    eval_fraction: float = 0.2,
    max_examples: int = 0,
    seed: int = 0,
) -> tuple[list[Example], list[Example]]:
    """(train, held_out): a seeded shuffle of the dataset, held_out ≈ eval_fraction of it."""
    examples = load_jsonl(
        resolve_path(builtin, path), text_field or "text", label_field or DEFAULT_LABEL_FIELD[task]
    )
    rng = random.Random(seed)
    rng.shuffle(examples)
    if max_examples:
        examples = examples[:max_examples]
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * (eval_fraction or 0.2))))
    return examples[n_eval:], examples[:n_eval]
