"""Evaluation throughput: examples/s for the generation metrics (BLEU, chrF, ROUGE-L) and for
the embedding metric (BERTScore on MiniLM), against a baseline measured in the same run: the
embedding metric scored one example at a time (no length-sorted batching).

    python benchmarks/eval_throughput.py [--quick] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import time

from openautoglm.evaluator import metrics

WORDS = ("the cat dog runs over small red house green tree sees big blue bird sings loud quick brown fox eats fish "
         "old man walks slowly home bright sun shines").split()


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))) for _ in range(n)]
    preds = [" ".join(w if rng.random() < 0.7 else rng.choice(WORDS) for w in r.split()) for r in refs]
    return preds, refs


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n_text, n_embed, n_base = (2000, 512, 64) if args.quick else (20000, 4096, 256)
    preds, refs = corpus(n_text)
    text_rate = rate(lambda: metrics.evaluate("generation", preds, refs, metrics=["bleu", "chrf", "rouge_l"]), n_text)
    metrics.embedding_similarity(preds[:8], refs[:8])  # load the encoder outside the timing
    embed_rate = rate(lambda: metrics.embedding_similarity(preds[:n_embed], refs[:n_embed]), n_embed)

    def one_at_a_time():
        for p, r in zip(preds[:n_base], refs[:n_base]):
            metrics.embedding_similarity([p], [r])

    base_rate = rate(one_at_a_time, n_base)
    report = {
        "generation_metrics_examples_per_s": round(text_rate, 1),
        "embedding_metric_examples_per_s": round(embed_rate, 1),
        "embedding_unbatched_examples_per_s": round(base_rate, 1),
        "embedding_batching_speedup": round(embed_rate / base_rate, 2),
        "examples": {"generation": n_text, "embedding": n_embed, "baseline": n_base},
    }
    print(f"generation metrics (BLEU+chrF+ROUGE-L): {text_rate:9.1f} examples/s over {n_text}")
    print(f"embedding similarity (batched by length): {embed_rate:9.1f} examples/s over {n_embed}")
    print(f"embedding similarity (one at a time):     {base_rate:9.1f} examples/s over {n_base}  -> {report['embedding_batching_speedup']}x")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
