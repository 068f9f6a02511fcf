"""A table of really trained candidates, and the oracle the search benchmark asks.

Each row is one candidate trained once with the trainer's own code on CPU: its validation
metrics and objective (what a search sees), and its test metrics and objective (never shown to a
search; reported once, to compare winners). A candidate the table lacks is trained on demand and
added (the tables with search-written instructions grow this way while they are built).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from openautoglm.common.spec.schema import StudySpecModel
from openautoglm.evaluator.metrics import evaluate
from openautoglm.prompt_generator.search import ProposedCandidate
from openautoglm.trainer.core import TrialJob, run_trial
from openautoglm.trainer.final_scores import predict_test_split

TABLE = Path(__file__).parent / "data" / "search_table.json"


class Oracle:
    """The trained results of one space, by candidate id (`rows`), training what is missing."""

    def __init__(self, name: str, spec: StudySpecModel, rows: list[dict] | None = None):
        self.name, self.spec = name, spec
        self.rows: dict[str, dict] = {r["candidate_id"]: r for r in rows or []}
        self.trained = 0  # candidates this oracle trained (not found in the table)
        self._scratch = Path(tempfile.mkdtemp(prefix="search-table-"))

    def value(self, candidate: ProposedCandidate) -> float:
        """The candidate's validation objective (trained now if the table lacks it)."""
        row = self.rows.get(candidate.id)
        if row is None:
            row = self.rows[candidate.id] = self._train(candidate)
            self.trained += 1
        return float(row["objective"])

    def _train(self, c: ProposedCandidate) -> dict:
        spec, data = self.spec, self.spec.dataset
        model = c.hyperparameters.get("model", spec.model.builtin)
        job = TrialJob(study_id=self.name, trial_id=c.id, task=spec.task, prompt=c.prompt,
                       hyperparameters={k: v for k, v in c.hyperparameters.items() if k != "model"},
                       dataset_builtin=data.builtin, max_examples=data.max_examples, seed=spec.seed,
                       eval_fraction=data.eval_fraction, test_fraction=data.test_fraction,
                       model_builtin=str(model), max_length=spec.training.max_length)
        started = time.monotonic()
        result = run_trial(job, self._scratch)
        metrics, objective = evaluate(spec.task, result.predictions, result.references, objective=spec.objective.terms,
                                      model_metrics=result.model_metrics)
        tested = predict_test_split(job, Path(result.artifact_path))
        test_metrics, test_objective = evaluate(spec.task, tested.predictions, tested.references,
                                                objective=spec.objective.terms, model_metrics=tested.model_metrics)
        row = {"candidate_id": c.id, "template_id": c.template_id, "variables": c.variables,
               "hyperparameters": c.hyperparameters, "metrics": metrics, "objective": objective,
               "test_metrics": test_metrics, "test_objective": test_objective,
               "train_seconds": round(time.monotonic() - started, 2)}
        if c.lineage is not None:
            row["lineage"] = {"source": c.lineage.source, "parent_id": c.lineage.parent_id, "edits": list(c.lineage.edits)}
        print(f"{self.name}: trained {len(self.rows) + 1} objective {objective:.4f}", file=sys.stderr)
        return row

    def table_rows(self) -> list[dict]:
        return sorted(self.rows.values(), key=lambda r: r["candidate_id"])


def load() -> dict:
    return json.loads(TABLE.read_text()) if TABLE.is_file() else {}


def save(table: dict) -> None:
    # Keys keep their order: a spec's hyperparameter order is the order a search samples them in,
    # so a sorted copy would replay a different search than the one that built the table.
    TABLE.write_text(json.dumps(table, indent=1) + "\n")
