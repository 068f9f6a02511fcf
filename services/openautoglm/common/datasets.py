"""Examples for studies: the built-in demo sets that ship in the package, or a local JSONL file.

A JSONL line is one object with the input text and its label (classification) or target text
(generation). Problems name the file and line. The test split is fixed by the data alone (a hash
of each example); the rest splits into train and validation by a seeded shuffle, so every
trainer replica and every re-run sees the same three splits.
"""
from __future__ import annotations

import hashlib
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


@dataclass(frozen=True)
class Splits:
    """A dataset cut three ways: the search trains on `train` and scores candidates on
    `validation`; `test` is scored once, for the winner, when the study completes."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]


def in_test_split(example: Example, test_fraction: float) -> bool:
    """Whether an example belongs to the test split: a hash of its text and label, so the split
    is fixed by the data alone (no seed, no order): every study on a dataset, whatever its seed,
    is tested on the same examples, and none of them is ever trained or selected on."""
    digest = hashlib.sha256(json.dumps([example.text, example.label]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def load_splits(
    builtin: str,
    path: str,
    task: str,
    text_field: str = "",
    label_field: str = "",
    eval_fraction: float = 0.2,
    max_examples: int = 0,
    seed: int = 0,
    test_fraction: float = 0.0,
) -> Splits:
    """The three splits. Test first (`in_test_split`, none when test_fraction is 0); then the
    rest is shuffled by the seed, capped at max_examples, and validation is eval_fraction of it.
    With max_examples, the test split keeps the same proportion to what is used."""
    examples = load_jsonl(
        resolve_path(builtin, path), text_field or "text", label_field or DEFAULT_LABEL_FIELD[task]
    )
    test: list[Example] = []
    rest: list[Example] = []
    for ex in examples:  # one hash per example
        (test if test_fraction and in_test_split(ex, test_fraction) else rest).append(ex)
    if len(rest) < 2:
        raise DatasetError(f"{resolve_path(builtin, path)}: too few examples outside the test split ({len(rest)})")
    rng = random.Random(seed)
    rng.shuffle(rest)
    if max_examples:
        rest = rest[:max_examples]
        test = test[:max(1, round(len(rest) * test_fraction / (1 - test_fraction)))] if test else []
    n_eval = min(len(rest) - 1, max(1, round(len(rest) * (eval_fraction or 0.2))))
    return Splits(train=rest[n_eval:], validation=rest[:n_eval], test=test)


def load_split(
    builtin: str,
    path: str,
    task: str,
    text_field: str = "",
    label_field: str = "",
    eval_fraction: float = 0.2,
    max_examples: int = 0,
    seed: int = 0,
    test_fraction: float = 0.0,
) -> tuple[list[Example], list[Example]]:
    """(train, validation) of `load_splits`: what training and the search's scores use."""
    splits = load_splits(builtin, path, task, text_field, label_field, eval_fraction, max_examples, seed, test_fraction)
    return splits.train, splits.validation
