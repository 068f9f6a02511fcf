"""Evaluator metrics against their reference libraries on shared fixtures (to 1e-6), including
empty predictions, unicode and Chinese text; the weighted objective; user scorer plugins."""
import sys
import textwrap

import pytest
import sacrebleu
from bert_score import score as bert_score
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score

from openautoglm.common.catalogue import METRICS_BY_TASK
from openautoglm.evaluator import metrics
from openautoglm.evaluator.metrics import MetricError, evaluate
from openautoglm.common.catalogue import minilm_path

LABELS_REF = ["pos", "neg", "neu", "pos", "neg", "pos"]
LABELS_PRED = ["pos", "neg", "pos", "pos", "neu", "neg"]
FIXTURES = {
    "ascii": (["the cat sat on a mat", "quick brown fox jumps", "hello there world"],
              ["the cat sat on the mat", "a quick brown fox", "hello world"]),
    "empty": (["", "a quick brown fox", ""], ["the cat sat on the mat", "a quick brown fox", "hello world"]),
    "unicode": (["café crème brûlée", "naïve façade — ok", "Ünïcödé ✓ test"],
                ["café crème brûlée!", "the naïve façade", "Ünïcödé test"]),
    "chinese": (["今天天气很好", "我喜欢学习机器学习", "这是一个测试"],
                ["今天天气非常好", "我喜欢机器学习", "这是测试"]),
}


def test_builtin_registry_matches_the_spec_list():
    for task, names in METRICS_BY_TASK.items():
        for name in names:
            assert task in metrics.BUILTIN[name].tasks


def test_classification_metrics_match_scikit_learn():
    values, score = evaluate("classification", LABELS_PRED, LABELS_REF, objective={"accuracy": 0.25, "macro_f1": 0.75})
    assert values["accuracy"] == pytest.approx(accuracy_score(LABELS_REF, LABELS_PRED), abs=1e-12)
    assert values["macro_f1"] == pytest.approx(f1_score(LABELS_REF, LABELS_PRED, average="macro"), abs=1e-12)
    assert score == pytest.approx(0.25 * values["accuracy"] + 0.75 * values["macro_f1"])


@pytest.mark.parametrize("name", FIXTURES)
def test_bleu_and_chrf_match_sacrebleu(name):
    preds, refs = FIXTURES[name]
    values, _ = evaluate("generation", preds, refs, metrics=["bleu", "chrf", "exact_match"])
    tokenize = "zh" if name == "chinese" else "13a"
    assert values["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs], tokenize=tokenize).score / 100, abs=1e-6)
    assert values["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score / 100, abs=1e-6)
    assert values["exact_match"] == pytest.approx(sum(p == r for p, r in zip(preds, refs)) / len(refs))


@pytest.mark.parametrize("name", ["ascii", "empty"])
def test_rouge_l_matches_rouge_score_on_ascii(name):
    preds, refs = FIXTURES[name]
    values, _ = evaluate("generation", preds, refs, metrics=["rouge_l"])
    scorer = rouge_scorer.RougeScorer(["rougeL"])  # its default tokenizer
    expected = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)) / len(refs)
    assert values["rouge_l"] == pytest.approx(expected, abs=1e-6)


def test_rouge_l_reads_chinese_and_accents_where_the_default_tokenizer_sees_nothing():
    preds, refs = FIXTURES["chinese"]
    default = rouge_scorer.RougeScorer(["rougeL"])
    assert all(default.score(r, p)["rougeL"].fmeasure == 0 for p, r in zip(preds, refs))
    values, _ = evaluate("generation", preds, refs, metrics=["rouge_l"])
    # 今天天气很好 vs 今天天气非常好: LCS 今天天气好 = 5 of 6 and 7 characters.
    first = 2 * (5 / 6) * (5 / 7) / (5 / 6 + 5 / 7)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=metrics.RougeTokenizer())
    assert scorer.score(refs[0], preds[0])["rougeL"].fmeasure == pytest.approx(first, abs=1e-9)
    assert values["rouge_l"] > 0.5
    unicode_preds, unicode_refs = FIXTURES["unicode"]
    assert evaluate("generation", unicode_preds, unicode_refs, metrics=["rouge_l"])[0]["rouge_l"] > 0.5


@pytest.mark.parametrize("name", ["ascii", "unicode", "chinese"])
def test_embedding_similarity_matches_bert_score(name):
    preds, refs = FIXTURES[name]
    values, _ = evaluate("generation", preds, refs, metrics=["embedding_similarity"])
    _, _, f1 = bert_score(preds, refs, model_type=str(minilm_path()), num_layers=6, batch_size=2)
    assert values["embedding_similarity"] == pytest.approx(float(f1.mean()), abs=1e-6)


def test_embedding_similarity_scores_empty_pairs_zero():
    preds, refs = FIXTURES["empty"]
    values, _ = evaluate("generation", preds, refs, metrics=["embedding_similarity"])
    _, _, f1 = bert_score([preds[1]], [refs[1]], model_type=str(minilm_path()), num_layers=6)
    assert values["embedding_similarity"] == pytest.approx(float(f1[0]) / 3, abs=1e-6)


def test_a_failing_scorer_is_reported_not_crashed(monkeypatch):
    def broken(predictions, references):
        raise ZeroDivisionError("oops")

    monkeypatch.setitem(metrics.registry(), "broken", metrics.Metric("broken", metrics.TASKS, True, "", broken))
    with pytest.raises(metrics.ScorerFailed, match="metric 'broken' failed"):
        evaluate("generation", ["a"], ["a"], metrics=["broken"])


def test_embedding_similarity_orders_meaning():
    close, _ = evaluate("generation", ["the film was wonderful"], ["the movie was great"], metrics=["embedding_similarity"])
    far, _ = evaluate("generation", ["quarterly tax filing deadline"], ["the movie was great"], metrics=["embedding_similarity"])
    assert close["embedding_similarity"] > far["embedding_similarity"]


def test_perplexity_comes_from_the_model_and_objectives_can_mix_and_minimise():
    preds, refs = FIXTURES["ascii"]
    values, score = evaluate("generation", preds, refs, objective={"rouge_l": 0.6, "perplexity": -0.01},
                             model_metrics={"perplexity": 12.5})
    assert values["perplexity"] == 12.5
    assert score == pytest.approx(0.6 * values["rouge_l"] - 0.125)
    with pytest.raises(MetricError, match="perplexity is measured by the trainer"):
        evaluate("generation", preds, refs, metrics=["perplexity"])


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


def test_user_scorers_plug_in_through_entry_points(tmp_path, monkeypatch):
    (tmp_path / "my_scorers.py").write_text(textwrap.dedent('''
        def shout_rate(predictions, references):
            """Fraction of predictions written in capitals."""
            return sum(p.isupper() for p in predictions) / len(predictions)
    '''))
    dist = tmp_path / "my_scorers-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-scorers\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[openautoglm.scorers]\nshout_rate = my_scorers:shout_rate\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    metrics.registry.cache_clear()
    try:
        values, score = evaluate("generation", ["HELLO", "quiet"], ["a", "b"], objective={"shout_rate": 2.0})
        assert values["shout_rate"] == 0.5 and score == 1.0
        from openautoglm.common.catalogue import known_metrics

        assert "shout_rate" in known_metrics("classification")
    finally:
        sys.modules.pop("my_scorers", None)
        metrics.registry.cache_clear()
