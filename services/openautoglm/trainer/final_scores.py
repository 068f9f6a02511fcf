"""A trained trial's predictions on its dataset's test split, from its saved model.

The search trains on the train split and selects on the validation split; the test split
(datasets.in_test_split) is touched once, when a study completes, for its winner and its final
repeats: this loads the trial's saved model the way serving does (its weights, prompt,
demonstrations and labels) and predicts the test examples, and the evaluator scores them. Its
result has the shape of a trial's, so the same scoring path (scoring.Scorer) applies.
"""
from __future__ import annotations

import time
from pathlib import Path

from openautoglm.common import datasets
from openautoglm.trainer import core
from openautoglm.trainer.core import TrialError, TrialJob, TrialResult


def test_split_of(job: TrialJob) -> list[datasets.Example]:
    """The job's test split (TrialError when its dataset has none)."""
    if job.test_fraction <= 0:
        raise TrialError("the study's dataset has no test split (dataset.test_fraction)")
    try:
        splits = datasets.load_splits(job.dataset_builtin, job.dataset_path, job.task, job.text_field, job.label_field,
                                      job.eval_fraction, job.max_examples, job.seed, job.test_fraction)
    except datasets.DatasetError as err:
        raise TrialError(str(err)) from None
    if not splits.test:
        raise TrialError("the test split of the study's dataset is empty")
    return splits.test


def predict_test_split(job: TrialJob, artifact_dir: Path) -> TrialResult:
    """Predict the test split with the trial's saved model (`artifact_dir`, the trial's own)."""
    from openautoglm.trainer.serving import ServedModel

    started = time.monotonic()
    examples = test_split_of(job)
    try:
        served = ServedModel(job.trial_id, artifact_dir)
    except (OSError, ValueError, KeyError) as err:
        raise TrialError(f"cannot load the trial's saved model from {artifact_dir}: {err}") from None
    texts = [ex.text for ex in examples]
    predictions = [answer for answer, _ in served.predict(texts)]
    model_metrics: dict[str, float] = {}
    if served.task == "generation":
        perplexity = core.perplexity(served.model, served.encoder, served.job, examples, served.device)
        model_metrics = {"perplexity": perplexity, "fluency": 1.0 / perplexity}
    return TrialResult(predictions=predictions, references=[ex.label for ex in examples], train_loss=float("nan"),
                       steps=0, seconds=time.monotonic() - started, artifact_path=str(artifact_dir),
                       model_metrics=model_metrics, precision=served.precision)
