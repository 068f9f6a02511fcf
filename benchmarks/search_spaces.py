"""The two real search spaces the search-efficiency benchmark replays (shared by the script
that builds the table and the benchmark itself)."""

SPACES = {
    "sentiment": {
        "name": "sentiment-table",
        "task": "classification",
        "dataset": {"builtin": "sentiment-demo"},
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
            },
        },
        "objective": {"terms": {"accuracy": 0.5, "macro_f1": 0.5}},
        "strategy": "grid",
        "budget": {"max_trials": 60},
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
