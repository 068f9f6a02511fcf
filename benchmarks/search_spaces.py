"""The real search spaces the search-efficiency benchmark replays (shared by the script that
builds the tables and the benchmark itself).

`sentiment` and `piglatin` are fixed spaces, trained in full. They are sized so that few
candidates come near the best (so strategies can be told apart): on sentiment, macro-F1 from
scratch on 240 examples moves a lot with the learning rate, the epochs and the batch size.

`EDIT_SPACES` are spaces whose instructions the search writes itself (GrIPS edits of the user's
verbose ones). Their inputs are short and the instruction comes after the review, so a long
instruction pushes the review out of the window: wording matters. Each table holds the user's
candidates and every candidate any strategy proposed in exploration runs (EDIT_EXPLORATION seeds,
the spec's budget of trials each), each trained for real.
"""

SPACES = {
    "sentiment": {
        "name": "sentiment-table",
        "task": "classification",
        "dataset": {"builtin": "sentiment-demo", "max_examples": 240},
        "search_space": {
            "templates": [
                {"id": "instruct", "text": "{instruction} Review: {input} Sentiment:"},
                {"id": "question", "text": "Review: {input} Question: {question}"},
                {"id": "bare", "text": "{input}"},
            ],
            "variables": {
                "instruction": ["Classify the sentiment of this review.", "Is this review positive, negative or neutral?"],
                "question": ["How did the writer feel?", "What is the tone?"],
            },
            "hyperparameters": {
                "learning_rate": {"type": "choice", "values": [0.0003, 0.001, 0.003, 0.01]},
                "epochs": {"type": "choice", "values": [1, 2, 3]},
                "batch_size": {"type": "choice", "values": [8, 32]},
            },
        },
        "objective": {"terms": {"macro_f1": 1.0}},
        "strategy": "grid",
        "budget": {"max_trials": 120},
        "seed": 11,
    },
    "piglatin": {
        "name": "piglatin-table",
        "task": "generation",
        "dataset": {"builtin": "piglatin-demo", "max_examples": 200},
        "search_space": {
            "templates": [
                {"id": "verb", "text": "{verb}: {input}"},
                {"id": "arrow", "text": "{input} =>"},
            ],
            "variables": {"verb": ["Pig latin", "Translate into pig latin"]},
            "hyperparameters": {
                "learning_rate": {"type": "choice", "values": [0.001, 0.003, 0.01]},
                "epochs": {"type": "choice", "values": [4, 8]},
                "batch_size": {"type": "choice", "values": [8, 16]},
            },
        },
        "objective": {"terms": {"rouge_l": 1.0}},
        "strategy": "grid",
        "budget": {"max_trials": 36},
        "seed": 11,
    },
}


def _edit_space(name: str, max_length: int, budget: int) -> dict:
    """The sentiment space whose instructions the search writes (GrIPS edits of the user's three
    verbose ones, placed after the review), with inputs cut to `max_length` tokens."""
    return {
        "name": name,
        "task": "classification",
        "dataset": {"builtin": "sentiment-demo", "max_examples": 240},
        "search_space": {
            "templates": [{"id": "bare", "text": "{input}"}],
            "instructions": [
                "Classify the sentiment of this review as positive, negative or neutral, reading every word of it "
                "carefully before you answer.",
                "Read the review and say whether its writer felt positive, negative or neutral about what they describe.",
                "Please decide, for the customer review shown above, whether the overall sentiment is positive, "
                "negative or neutral.",
            ],
            "instruction_position": ["after"],
            "instruction_edits": {"operations": ["delete", "swap", "add"],
                                  "phrase_pool": ["in one word", "carefully", "the sentiment"]},
            "hyperparameters": {
                "learning_rate": {"type": "choice", "values": [0.001, 0.003]},
                "epochs": {"type": "choice", "values": [2, 3]},
            },
        },
        "training": {"max_length": max_length},
        "objective": {"terms": {"macro_f1": 1.0}},
        "strategy": "grips",
        "budget": {"max_trials": budget},  # each replay's budget
        "seed": 11,
    }


# The spaces with search-written instructions, by table name (their own tables and report):
# - `sentiment_edits` (24 tokens, 80 trials) compares strategies: 46 of its 4,121 candidates are
#   within 95% of its best, and a search that edits well gets there sooner.
# - `sentiment_edits_short` (16 tokens, 40 trials) is where wording matters most: every long
#   user-written instruction pushes the review out of the window, so each one trains a one-class
#   predictor, and a shorter edited instruction wins on test by a wide margin. The same plateau
#   (most candidates score the same) is why it cannot tell strategies apart.
EDIT_SPACES = {
    "sentiment_edits": _edit_space("sentiment-edits-table", 24, 80),
    "sentiment_edits_short": _edit_space("sentiment-edits-short-table", 16, 40),
}
EDIT_EXPLORATION = 20  # seeds per strategy the tables are built from (search_efficiency's full run)


def edit_budget(raw: dict) -> int:
    """Trials per replay on an edit table: its spec's budget."""
    return int(raw["budget"]["max_trials"])
