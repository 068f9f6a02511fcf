"""How many trials each search strategy needs to find a good candidate, replayed over a table of
real results (benchmarks/data/search_table.json, rebuilt by build_search_table.py).

    python benchmarks/search_efficiency.py [--quick] [--json] [--seeds N]

For every task and strategy, each seed runs the prompt-generator's own search (StudySearch, the
code the service uses, with the trial records kept in process by LocalStudy) against the table: propose one candidate, look up its real objective,
feed it back, until a candidate reaches 95% of the table's best objective. Reported:
`trials_to_95` (task -> strategy -> mean trials over seeds) and each strategy's ratio to random
search measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from openautoglm.common.spec.schema import validate_dict
from openautoglm.prompt_generator.replay import LocalStudy

TABLE = Path(__file__).parent / "data" / "search_table.json"
STRATEGIES = ("random", "grid", "tpe", "cmaes", "bandit", "rl")


def trials_to_target(raw: dict, rows: dict, strategy: str, seed: int, target: float) -> int:
    spec = validate_dict({**raw, "strategy": strategy, "seed": seed, "budget": {"max_trials": len(rows)}})
    search = LocalStudy(spec)
    for trial in range(1, len(rows) + 1):
        batch, _ = search.propose(1)
        if not batch:
            return len(rows)
        value = rows[batch[0].id]["objective"]
        search.feedback(batch[0].id, value)
        if value >= target:
            return trial
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 seeds instead of 20 (under a minute)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seeds", type=int, default=0)
    args = parser.parse_args()
    seeds = args.seeds or (5 if args.quick else 20)
    table = json.loads(TABLE.read_text())
    started = time.monotonic()
    report: dict = {"seeds": seeds, "trials_to_95": {}, "ratio_to_random": {}, "space_size": {}, "best_objective": {}}
    for task, entry in table.items():
        rows = {r["candidate_id"]: r for r in entry["candidates"]}
        best = max(r["objective"] for r in rows.values())
        target = 0.95 * best
        report["space_size"][task] = len(rows)
        report["best_objective"][task] = best
        means = {}
        for strategy in STRATEGIES:
            counts = [trials_to_target(entry["spec"], rows, strategy, seed, target) for seed in range(seeds)]
            means[strategy] = statistics.mean(counts)
        report["trials_to_95"][task] = {k: round(v, 2) for k, v in means.items()}
        report["ratio_to_random"][task] = {k: round(v / means["random"], 3) for k, v in means.items()}
        hits = sum(r["objective"] >= target for r in rows.values())
        print(f"{task}: {len(rows)} candidates, best {best:.4f}, {hits} within 95% of it; mean trials to reach 95% ({seeds} seeds):")
        for strategy in STRATEGIES:
            print(f"  {strategy:<7} {means[strategy]:6.2f}  ({means[strategy] / means['random']:.2f}x random)")
    report["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
