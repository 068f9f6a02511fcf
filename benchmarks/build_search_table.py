"""Rebuild benchmarks/data/search_table.json: every candidate of each space in search_spaces.py
trained once for real (the trainer's core on CPU) and scored by the evaluator's metrics.

    python benchmarks/build_search_table.py        # a few minutes on 2 CPU cores

Deterministic: the same seeds give the same table on the same library versions.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from search_spaces import SPACES  # noqa: E402

from openautoglm.common.spec.schema import validate_dict  # noqa: E402
from openautoglm.evaluator.metrics import evaluate  # noqa: E402
from openautoglm.prompt_generator.replay import LocalStudy  # noqa: E402
from openautoglm.trainer.core import TrialJob, run_trial  # noqa: E402

OUT = Path(__file__).parent / "data" / "search_table.json"


def build_space(name: str, raw: dict) -> dict:
    spec = validate_dict(raw)
    search = LocalStudy(spec)
    candidates, _ = search.propose(search.search.space_size or 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in sorted(candidates, key=lambda c: c.id):
            started = time.monotonic()
            result = run_trial(TrialJob(
                study_id=name, trial_id=c.id, task=spec.task, prompt=c.prompt, hyperparameters=c.hyperparameters,
                dataset_builtin=spec.dataset.builtin, max_examples=spec.dataset.max_examples, seed=spec.seed,
            ), Path(tmp))
            values, score = evaluate(spec.task, result.predictions, result.references, objective=spec.objective.terms,
                                     model_metrics=result.model_metrics)
            rows.append({"candidate_id": c.id, "template_id": c.template_id, "variables": c.variables,
                         "hyperparameters": c.hyperparameters, "metrics": values, "objective": score,
                         "train_seconds": round(time.monotonic() - started, 2)})
            print(f"{name}: {len(rows)}/{len(candidates)} objective {score:.4f}", file=sys.stderr)
    return {"spec": raw, "candidates": rows}


def main() -> None:
    table = {name: build_space(name, raw) for name, raw in SPACES.items()}
    OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
