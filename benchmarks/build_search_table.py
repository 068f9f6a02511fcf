"""Rebuild benchmarks/data/search_table.json from real training (the trainer's core on CPU, the
evaluator's metrics): every candidate of each fixed space in search_spaces.py, and for the space
with search-written instructions, the user's candidates plus every candidate any strategy
proposes in EDIT_EXPLORATION seeds of EDIT_BUDGET trials (search_efficiency.py replays those
seeds, so its full run finds every candidate here).

    python benchmarks/build_search_table.py        # about 15 minutes on 2 CPU cores

Deterministic: the same seeds give the same table on the same library versions.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import search_table  # noqa: E402
from search_spaces import EDIT_BUDGET, EDIT_EXPLORATION, EDIT_SPACE, SPACES  # noqa: E402

from openautoglm.common.spec.schema import validate_dict  # noqa: E402
from openautoglm.prompt_generator.replay import LocalStudy  # noqa: E402

EDIT_STRATEGIES = ("random", "tpe", "cmaes", "bandit", "rl", "grips")


def build_space(name: str, raw: dict) -> dict:
    spec = validate_dict(raw)
    oracle = search_table.Oracle(name, spec)
    search = LocalStudy(spec)
    candidates, _ = search.propose(search.search.space_size or 0)
    for candidate in sorted(candidates, key=lambda c: c.id):
        oracle.value(candidate)
    return {"spec": raw, "candidates": oracle.table_rows()}


def replay(oracle: search_table.Oracle, raw: dict, strategy: str, seed: int, budget: int) -> list[float]:
    """One search run of `budget` trials against the oracle: the objective of each trial."""
    spec = validate_dict({**raw, "strategy": strategy, "seed": seed, "budget": {"max_trials": budget}})
    study = LocalStudy(spec)
    values = []
    for _ in range(budget):
        batch, _ = study.propose(1)
        if not batch:
            break
        value = oracle.value(batch[0])
        study.feedback(batch[0].id, value)
        values.append(value)
    return values


def build_edit_space(raw: dict) -> dict:
    spec = validate_dict(raw)
    oracle = search_table.Oracle("sentiment_edits", spec)
    written = {**raw, "strategy": "random", "search_space": {**raw["search_space"]}}
    written["search_space"].pop("instruction_edits")
    user = LocalStudy(validate_dict(written))
    for candidate in user.propose(user.search.space_size or 0)[0]:
        oracle.value(candidate)
    for seed in range(EDIT_EXPLORATION):
        for strategy in EDIT_STRATEGIES:
            replay(oracle, raw, strategy, seed, EDIT_BUDGET)
        print(f"sentiment_edits: seed {seed} explored, {len(oracle.rows)} candidates", file=sys.stderr)
    return {"spec": raw, "candidates": oracle.table_rows()}


def main() -> None:
    table = {name: build_space(name, raw) for name, raw in SPACES.items()}
    table["sentiment_edits"] = build_edit_space(EDIT_SPACE)
    search_table.save(table)
    print(f"wrote {search_table.TABLE}")


if __name__ == "__main__":
    main()
