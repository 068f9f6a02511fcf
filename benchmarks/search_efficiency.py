"""How many trials each search strategy needs to find a good candidate, replayed over tables of
really trained candidates (benchmarks/data/search_table.json, rebuilt by build_search_table.py).

    python benchmarks/search_efficiency.py [--quick] [--json] [--seeds N] [--edit-seeds N] [--tables T ...] [--save]

For every table and strategy, each seed runs the prompt-generator's own search (StudySearch, the
code the service uses, with the trial records kept in process by LocalStudy): propose one
candidate, look up its **validation** objective, feed it back, until a candidate reaches 95% of
the table's best validation objective. Reported: `trials_to_95` (table -> strategy -> mean
trials over seeds; a seed that never gets there counts its whole budget), each strategy's ratio to
random search measured in the same run, and how many of each table's candidates are within 95%
of its best (few, or strategies cannot be told apart). `trials_to_95_se` is each mean's standard
error: the fixed tables replay 100 seeds by default because with 20 a mean's standard error is
7-8% of it (the ratio to random moves by about 0.1 from seed set to seed set), too coarse to read
a 0.6x goal; replaying them needs no training. The edit tables replay 20 seeds (`--edit-seeds`):
a seed there may propose candidates the table lacks, which are trained for real.

`instruction_search` holds the tables whose instructions the search writes (GrIPS edits;
search_spaces.EDIT_SPACES): every strategy runs with edit proposals on, plus `grips` itself; the
grid runs over the user's written candidates only (a grid cannot grow). Each also reports, on the
test split (never seen by any search), the best search-written instruction against the best
user-written one, each chosen by validation as a study would choose it, with the generated one's
lineage.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import search_table  # noqa: E402
from build_search_table import replay  # noqa: E402
from search_spaces import EDIT_SPACES, edit_budget  # noqa: E402

from openautoglm.common.spec.schema import validate_dict  # noqa: E402

STRATEGIES = ("random", "grid", "tpe", "cmaes", "bandit", "rl")
EDIT_STRATEGIES = ("random", "grid", "tpe", "cmaes", "bandit", "rl", "grips")
# The quick form's cap on an edit table's budget: it shows the benchmark runs (CI), not figures,
# and a replay's cost grows with the square of its trials (each proposal rebuilds the search).
QUICK_EDIT_BUDGET = 40


def trials_to(values: list[float], target: float, budget: int) -> int:
    """Trials until a value reaches `target` (the whole budget when none does)."""
    return next((i + 1 for i, v in enumerate(values) if v >= target), budget)


def _mean_and_se(counts: list[int]) -> tuple[float, float]:
    se = statistics.stdev(counts) / len(counts) ** 0.5 if len(counts) > 1 else 0.0
    return statistics.mean(counts), se


def fixed_table(name: str, entry: dict, seeds: int) -> dict:
    spec = validate_dict(entry["spec"])
    oracle = search_table.Oracle(name, spec, entry["candidates"])
    rows = list(oracle.rows.values())
    best = max(r["objective"] for r in rows)
    target = 0.95 * best
    means, errors = {}, {}
    for strategy in STRATEGIES:
        counts = [trials_to(replay(oracle, entry["spec"], strategy, seed, len(rows)), target, len(rows))
                  for seed in range(seeds)]
        means[strategy], errors[strategy] = _mean_and_se(counts)
    return {"space_size": len(rows), "best": best, "within_95": sum(r["objective"] >= target for r in rows),
            "means": means, "errors": errors, "trained_missing": oracle.trained}


def _without_edits(raw: dict) -> dict:
    space = {k: v for k, v in raw["search_space"].items() if k != "instruction_edits"}
    return {**raw, "search_space": space}


def edit_table(name: str, entry: dict, seeds: int, max_budget: int | None = None) -> dict:
    raw = entry["spec"]
    budget = min(edit_budget(raw), max_budget or edit_budget(raw))
    oracle = search_table.Oracle(name, validate_dict(raw), entry["candidates"])
    rows = list(oracle.rows.values())  # the target comes from the table as built
    best = max(r["objective"] for r in rows)
    target = 0.95 * best
    means, errors = {}, {}
    for strategy in EDIT_STRATEGIES:
        spec = _without_edits(raw) if strategy == "grid" else raw
        counts = [trials_to(replay(oracle, spec, strategy, seed, budget), target, budget)
                  for seed in range(seeds)]
        means[strategy], errors[strategy] = _mean_and_se(counts)
    entry["candidates"] = oracle.table_rows()  # with any candidate trained here (kept by --save)
    rows = list(oracle.rows.values())
    written = [r for r in rows if "lineage" not in r]
    generated = [r for r in rows if "lineage" in r]
    best_written = max(written, key=lambda r: r["objective"])  # chosen on validation, as a study would
    best_generated = max(generated, key=lambda r: r["objective"])
    return {
        "candidates": len(rows), "written_candidates": len(written), "best": best,
        "within_95": sum(r["objective"] >= target for r in rows), "means": means, "errors": errors,
        "budget": budget, "seeds": seeds,
        "trained_missing": oracle.trained,
        "generated_vs_written_on_test": {
            "written": {"instruction": best_written["variables"]["instruction_text"],
                        "hyperparameters": best_written["hyperparameters"],
                        "validation": best_written["objective"], "test": best_written["test_objective"]},
            "generated": {"instruction": best_generated["variables"]["instruction_text"],
                          "hyperparameters": best_generated["hyperparameters"], "lineage": best_generated["lineage"],
                          "validation": best_generated["objective"], "test": best_generated["test_objective"]},
            "test_gain": best_generated["test_objective"] - best_written["test_objective"],
        },
    }


def _print_means(strategies: tuple[str, ...], means: dict[str, float], errors: dict[str, float]) -> None:
    for strategy in strategies:
        print(f"  {strategy:<7} {means[strategy]:6.2f} ± {errors[strategy]:4.2f}  "
              f"({means[strategy] / means['random']:.2f}x random)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help=f"5 seeds per fixed table, 2 of at most {QUICK_EDIT_BUDGET} trials per edit table")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seeds", type=int, default=0, help="seeds per fixed table (default 100)")
    parser.add_argument("--edit-seeds", type=int, default=0, help="seeds on each edit table (default 20)")
    parser.add_argument("--tables", nargs="+", metavar="TABLE", help="replay these tables only (default: all)")
    parser.add_argument("--save", action="store_true",
                        help="write candidates trained here (ones the table lacked) back into the table")
    args = parser.parse_args()
    seeds = args.seeds or (5 if args.quick else 100)
    edit_seeds = args.edit_seeds or (2 if args.quick else 20)
    table = search_table.load()
    replayed = {name: entry for name, entry in table.items() if not args.tables or name in args.tables}
    if args.tables and set(args.tables) - set(table):
        parser.error(f"no such table: {', '.join(sorted(set(args.tables) - set(table)))} (have {', '.join(table)})")
    started = time.monotonic()
    report: dict = {"seeds": seeds, "trials_to_95": {}, "trials_to_95_se": {}, "ratio_to_random": {}, "space_size": {},
                    "best_objective": {}, "within_95": {}, "trained_missing": {}}
    for name, entry in replayed.items():
        if name in EDIT_SPACES:
            continue
        result = fixed_table(name, entry, seeds)
        means = result["means"]
        report["space_size"][name] = result["space_size"]
        report["best_objective"][name] = result["best"]
        report["within_95"][name] = result["within_95"]
        report["trained_missing"][name] = result["trained_missing"]
        report["trials_to_95"][name] = {k: round(v, 2) for k, v in means.items()}
        report["trials_to_95_se"][name] = {k: round(v, 2) for k, v in result["errors"].items()}
        report["ratio_to_random"][name] = {k: round(v / means["random"], 3) for k, v in means.items()}
        print(f"{name}: {result['space_size']} candidates, best {result['best']:.4f}, {result['within_95']} within 95% "
              f"of it; mean trials to reach 95% ({seeds} seeds, ± standard error):")
        _print_means(STRATEGIES, means, result["errors"])
    report["instruction_search"] = {}
    for name in (n for n in EDIT_SPACES if n in replayed):
        result = edit_table(name, table[name], edit_seeds, QUICK_EDIT_BUDGET if args.quick else None)
        means, errors = result.pop("means"), result.pop("errors")
        result["trials_to_95"] = {k: round(v, 2) for k, v in means.items()}
        result["trials_to_95_se"] = {k: round(v, 2) for k, v in errors.items()}
        result["ratio_to_random"] = {k: round(v / means["random"], 3) for k, v in means.items()}
        report["instruction_search"][name] = result
        print(f"{name}: {result['candidates']} candidates ({result['written_candidates']} user-written), best "
              f"{result['best']:.4f}, {result['within_95']} within 95% of it; mean trials to reach 95% ({edit_seeds} "
              f"seeds, budget {result['budget']}, ± standard error):")
        _print_means(EDIT_STRATEGIES, means, errors)
        versus = result["generated_vs_written_on_test"]
        print(f"  best written instruction (validation {versus['written']['validation']:.4f}, test "
              f"{versus['written']['test']:.4f}): {versus['written']['instruction']!r}")
        print(f"  best generated instruction (validation {versus['generated']['validation']:.4f}, test "
              f"{versus['generated']['test']:.4f}, {'; '.join(versus['generated']['lineage']['edits'])}): "
              f"{versus['generated']['instruction']!r}")
        print(f"  test gain of the generated one: {versus['test_gain']:+.4f}")
    edits_trained = sum(r["trained_missing"] for r in report["instruction_search"].values())
    if args.save and (sum(report["trained_missing"].values()) or edits_trained):
        search_table.save(table)
        print(f"saved the candidates trained here into {search_table.TABLE}")
    report["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
