"""Rebuild the built-in demo datasets (generated, seeded, so every rebuild is identical).

    python services/openautoglm/common/data/build_demo_data.py

sentiment_demo.jsonl: short reviews labelled positive / negative / neutral, with negations
("was not great" is negative) so that a model has to read more than one word.
piglatin_demo.jsonl: short sentences and their Pig Latin, a word-by-word generation task whose
BLEU and ROUGE-L move as a small model learns it.
"""
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SUBJECTS = ["the movie", "this phone", "the service", "our dinner", "the hotel", "that book",
            "the concert", "my new laptop", "the coffee", "this game", "the staff", "the update"]
POSITIVE = ["great", "wonderful", "excellent", "lovely", "fantastic", "superb", "delightful"]
NEGATIVE = ["terrible", "awful", "horrible", "disappointing", "dreadful", "broken", "boring"]
NEUTRAL = ["okay", "average", "ordinary", "acceptable", "standard", "fine"]
PATTERNS = ["{s} was {a}", "i found {s} {a}", "honestly {s} is {a}", "{s} felt {a} to me",
            "overall {s} seemed {a}"]
NEGATED = ["{s} was not {a}", "i would not call {s} {a}"]
WORDS = ["the", "cat", "dog", "runs", "jumps", "over", "small", "red", "house", "green", "tree",
         "sees", "big", "blue", "bird", "sings", "loud", "quick", "brown", "fox", "eats", "fish",
         "old", "man", "walks", "slowly", "home", "bright", "sun", "shines"]


def piglatin(word: str) -> str:
    vowels = "aeiou"
    if word[0] in vowels:
        return word + "way"
    i = next((k for k, ch in enumerate(word) if ch in vowels), len(word))
    return word[i:] + word[:i] + "ay"


def sentiment(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        kind = rng.random()
        s = rng.choice(SUBJECTS)
        if kind < 0.2:
            a = rng.choice(POSITIVE + NEGATIVE)
            text, label = rng.choice(NEGATED).format(s=s, a=a), "negative" if a in POSITIVE else "neutral"
        else:
            label = rng.choice(["positive", "negative", "neutral"])
            a = rng.choice({"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}[label])
            text = rng.choice(PATTERNS).format(s=s, a=a)
        rows.append({"text": text, "label": label})
    return rows


def piglatin_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
        rows.append({"text": " ".join(words), "target": " ".join(piglatin(w) for w in words)})
    return rows


def main() -> None:
    rng = random.Random(20261124)
    for name, rows in (("sentiment_demo.jsonl", sentiment(rng, 600)), ("piglatin_demo.jsonl", piglatin_rows(rng, 400))):
        with open(HERE / name, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
