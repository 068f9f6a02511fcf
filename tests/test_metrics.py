"""Evaluator metrics against the reference libraries, and the weighted objective."""
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score

from openautoglm.evaluator.metrics import MetricError, evaluate

LABELS_REF = ["pos", "neg", "neu", "pos", "neg", "pos"]
LABELS_PRED = ["pos", "neg", "pos", "pos", "neu", "neg"]
TEXT_REF = ["the cat sat on the mat", "a quick brown fox", "hello world"]
TEXT_PRED = ["the cat sat on a mat", "quick brown fox jumps", "hello there world"]


def test_classification_metrics_match_scikit_learn():
    values, score = evaluate("classification", LABELS_PRED, LABELS_REF, objective={"accuracy": 0.25, "macro_f1": 0.75})
    assert values["accuracy"] == pytest.approx(accuracy_score(LABELS_REF, LABELS_PRED), abs=1e-12)
    assert values["macro_f1"] == pytest.approx(f1_score(LABELS_REF, LABELS_PRED, average="macro"), abs=1e-12)
    assert score == pytest.approx(0.25 * values["accuracy"] + 0.75 * values["macro_f1"])


def test_generation_metrics_match_sacrebleu_and_rouge_score():
    values, _ = evaluate("generation", TEXT_PRED, TEXT_REF)
    assert values["bleu"] == pytest.approx(sacrebleu.corpus_bleu(TEXT_PRED, [TEXT_REF]).score / 100, abs=1e-12)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(TEXT_PRED, TEXT_REF)) / 3
    assert values["rouge_l"] == pytest.approx(expected, abs=1e-12)
    assert values["exact_match"] == 0.0
    perfect, _ = evaluate("generation", TEXT_REF, TEXT_REF)
    assert perfect["bleu"] == pytest.approx(1.0) and perfect["rouge_l"] == pytest.approx(1.0) and perfect["exact_match"] == 1.0


@pytest.mark.parametrize(
    "args,field",
    [
        (("classification", ["a"], ["a", "b"]), "predictions"),
        (("classification", [], []), "references"),
        (("classification", ["a"], ["a"], ["bleu"]), "metrics"),
        (("classification", ["a"], ["a"], ["nonsense"]), "metrics[0]"),
    ],
)
def test_bad_evaluation_input_names_the_field(args, field):
    with pytest.raises(MetricError) as info:
        evaluate(*args)
    assert info.value.field == field
