"""Metric definitions (no gRPC here): each metric maps (predictions, references) to one number.

All metrics are on a 0..1 scale so they can be mixed in a weighted objective: BLEU is sacrebleu's
corpus BLEU divided by 100, ROUGE-L is rouge-score's mean F-measure, macro-F1 is scikit-learn's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from openautoglm.common.spec import METRICS_BY_TASK


@dataclass(frozen=True)
class Metric:
    name: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    description: str
    compute: Callable[[Sequence[str], Sequence[str]], float]


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(list(references), list(predictions)))


def macro_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(list(references), list(predictions), average="macro", zero_division=0))


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score / 100.0)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return float(sum(scores) / len(scores)) if scores else 0.0


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
    return hits / len(references) if references else 0.0


REGISTRY: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", ("classification",), True, "fraction of exact label matches", accuracy),
        Metric("macro_f1", ("classification",), True, "unweighted mean of per-label F1 (scikit-learn)", macro_f1),
        Metric("bleu", ("generation",), True, "corpus BLEU (sacrebleu) / 100", bleu),
        Metric("rouge_l", ("generation",), True, "mean ROUGE-L F-measure (rouge-score)", rouge_l),
        Metric("exact_match", ("generation",), True, "fraction of outputs equal to the reference", exact_match),
    )
}
assert all(name in REGISTRY for names in METRICS_BY_TASK.values() for name in names)


class MetricError(ValueError):
    """Bad evaluation input; `field` names the request field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def evaluate(
    task: str,
    predictions: Sequence[str],
    references: Sequence[str],
    metrics: Sequence[str] = (),
    objective: dict[str, float] | None = None,
) -> tuple[dict[str, float], float]:
    """Compute the metrics (default: all of the task's) and the weighted objective."""
    if len(predictions) != len(references):
        raise MetricError("predictions", f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise MetricError("references", "nothing to evaluate: no references")
    objective = objective or {}
    wanted = list(dict.fromkeys([*(metrics or METRICS_BY_TASK[task]), *objective]))
    for i, name in enumerate(wanted):
        metric = REGISTRY.get(name)
        if metric is None:
            field = f"metrics[{i}]" if i < len(metrics or ()) else "objective.terms"
            raise MetricError(field, f"unknown metric {name!r}; known: {', '.join(REGISTRY)}")
        if task not in metric.tasks:
            raise MetricError("metrics", f"metric {name!r} does not apply to a {task} task")
    values = {name: REGISTRY[name].compute(predictions, references) for name in wanted}
    score = sum(weight * values[name] for name, weight in objective.items())
    return values, float(score)
