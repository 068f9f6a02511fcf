"""Rebuild benchmarks/data/search_table.json from real training (the trainer's core on CPU, the
evaluator's metrics): every candidate of each fixed space in search_spaces.py, and for each space
with search-written instructions, the user's candidates plus every candidate any strategy
proposes in EDIT_EXPLORATION seeds of the spec's budget of trials (search_efficiency.py replays those
seeds, so its full run finds every candidate here).

    python benchmarks/build_search_table.py [--jobs N] [--edit-only [TABLE ...]]

Deterministic: the same seeds give the same table on the same library versions.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import search_table  # noqa: E402
from search_spaces import EDIT_EXPLORATION, EDIT_SPACES, SPACES, edit_budget  # noqa: E402

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


def build_edit_space(name: str, raw: dict, jobs: int = 1) -> dict:
    """The user's candidates, then every candidate each strategy proposes in EDIT_EXPLORATION
    seeds; `jobs` processes split the seeds (the table is the same: a replay depends only on its
    own seed and the values it is fed, which are deterministic per candidate)."""
    spec = validate_dict(raw)
    oracle = search_table.Oracle(name, spec)
    written = {**raw, "strategy": "random", "search_space": {**raw["search_space"]}}
    written["search_space"].pop("instruction_edits")
    user = LocalStudy(validate_dict(written))
    for candidate in user.propose(user.search.space_size or 0)[0]:
        oracle.value(candidate)
    slices = [list(range(k, EDIT_EXPLORATION, jobs)) for k in range(jobs)]
    if jobs == 1:
        rows = [_explore(name, raw, slices[0], oracle.table_rows())]
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(_explore, [name] * jobs, [raw] * jobs, slices, [oracle.table_rows()] * jobs))
    merged = {row["candidate_id"]: row for part in rows for row in part}
    return {"spec": raw, "candidates": sorted(merged.values(), key=lambda r: r["candidate_id"])}


def _explore(name: str, raw: dict, seeds: list[int], rows: list[dict]) -> list[dict]:
    """Every strategy's replay of `seeds` against an oracle holding `rows`: the rows it ends with."""
    torch.set_num_threads(1)  # one core per process
    oracle = search_table.Oracle(name, validate_dict(raw), rows)
    for seed in seeds:
        for strategy in EDIT_STRATEGIES:
            replay(oracle, raw, strategy, seed, edit_budget(raw))
        print(f"{name}: seed {seed} explored, {len(oracle.rows)} candidates", file=sys.stderr)
    return oracle.table_rows()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1, help="processes exploring the edit table's seeds (one core each)")
    parser.add_argument("--edit-only", nargs="*", choices=sorted(EDIT_SPACES), metavar="TABLE",
                        help="rebuild these edit tables only (all of them when none is named); keep the others")
    args = parser.parse_args()
    if args.edit_only is None:
        table, rebuild = {name: build_space(name, raw) for name, raw in SPACES.items()}, list(EDIT_SPACES)
    else:
        table, rebuild = search_table.load(), args.edit_only or list(EDIT_SPACES)
    for name in rebuild:
        table[name] = build_edit_space(name, EDIT_SPACES[name], args.jobs)
    search_table.save(table)
    print(f"wrote {search_table.TABLE}")


if __name__ == "__main__":
    main()
