"""Fine-tuning one trial, with no gRPC or NATS in sight (service.py wraps it).

`run_trial` takes a `TrialJob`, trains the model on the train split with the candidate's prompt
applied to every input, predicts the held-out split, saves the model (safetensors) and returns
the predictions with their references for the evaluator. The built-in "tiny" model is a small
GPT-2-style transformer built from a `transformers` config with a word-level tokenizer built from
the study's own text, so nothing is downloaded; a local Hugging Face directory works the same way.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from openautoglm.common import datasets
from openautoglm.common.spec import fill_input

log = logging.getLogger(__name__)

DEFAULT_HYPERPARAMETERS = {
    "learning_rate": 3e-3,
    "epochs": 3,
    "batch_size": 16,
    "weight_decay": 0.0,
    "warmup_ratio": 0.1,
}
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "sep_token": "[SEP]", "eos_token": "[EOS]"}
MAX_LENGTH = 96


class TrialError(Exception):
    """The trial cannot run as asked (bad model dir, bad dataset...): fail it, don't retry."""


class TrialInterrupted(Exception):
    """Training was asked to stop (the service is shutting down); the job goes back to the queue."""


@dataclass
class TrialJob:
    study_id: str
    trial_id: str
    task: str  # "classification" | "generation"
    prompt: str  # rendered template with the "{input}" slot
    hyperparameters: dict
    dataset_builtin: str = ""
    dataset_path: str = ""
    text_field: str = ""
    label_field: str = ""
    eval_fraction: float = 0.2
    max_examples: int = 0
    model_builtin: str = "tiny"
    model_path: str = ""
    seed: int = 0


@dataclass
class TrialResult:
    predictions: list[str]
    references: list[str]
    train_loss: float
    steps: int
    seconds: float
    artifact_path: str
    losses: list[float] = field(default_factory=list)


ProgressFn = Callable[[int, int, float], None]


def build_word_tokenizer(texts: list[str]):
    """A lower-cased word-level tokenizer whose vocabulary is every word of `texts` (sorted)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre = pre_tokenizers.BertPreTokenizer()
    words = set()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def _tiny_config(vocab_size: int, tokenizer, **extra):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=MAX_LENGTH * 2,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=128,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def _load_model(job: TrialJob, train, held_out, labels: list[str]):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    classification = job.task == "classification"
    if job.model_path:
        path = Path(job.model_path).expanduser()
        if not (path / "config.json").is_file():
            raise TrialError(f"model directory {path} has no config.json (not a Hugging Face model)")
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if classification:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=len(labels), ignore_mismatched_sizes=True
            )
            model.config.pad_token_id = tokenizer.pad_token_id
        else:
            model = AutoModelForCausalLM.from_pretrained(path)
        return tokenizer, model
    texts = [fill_input(job.prompt, ex.text) for ex in train + held_out]
    texts += [ex.label for ex in train + held_out]
    tokenizer = build_word_tokenizer(texts)
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    config = _tiny_config(len(tokenizer), tokenizer, num_labels=max(len(labels), 2))
    model = GPT2ForSequenceClassification(config) if classification else GPT2LMHeadModel(config)
    return tokenizer, model


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _encode_generation(tokenizer, prompt_text: str, target: str | None):
    """Token ids for prompt [SEP] target [EOS]; labels mask the prompt out of the loss."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"][: MAX_LENGTH - 1]
    prompt_ids = prompt_ids + [tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id]
    if target is None:
        return prompt_ids, None
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"][:MAX_LENGTH] + [tokenizer.eos_token_id]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def run_trial(
    job: TrialJob,
    artifacts_dir: Path,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> TrialResult:
    """Train, predict the held-out split, save the model; raises TrialError / TrialInterrupted."""
    from transformers import get_linear_schedule_with_warmup

    started = time.monotonic()
    hp = {**DEFAULT_HYPERPARAMETERS, **job.hyperparameters}
    try:
        train, held_out = datasets.load_split(
            job.dataset_builtin, job.dataset_path, job.task, job.text_field, job.label_field,
            job.eval_fraction, job.max_examples, job.seed,
        )
    except datasets.DatasetError as err:
        raise TrialError(str(err)) from None
    torch.manual_seed(job.seed)
    classification = job.task == "classification"
    labels = sorted({ex.label for ex in train + held_out}) if classification else []
    try:
        tokenizer, model = _load_model(job, train, held_out, labels)
    except (OSError, ValueError) as err:
        raise TrialError(f"cannot load model: {err}") from None

    try:
        epochs, batch_size = int(hp["epochs"]), int(hp["batch_size"])
        lr, weight_decay, warmup = (float(hp[k]) for k in ("learning_rate", "weight_decay", "warmup_ratio"))
    except (TypeError, ValueError) as err:
        raise TrialError(f"bad hyper-parameter value: {err}") from None
    if epochs < 1 or batch_size < 1:
        raise TrialError(f"epochs and batch_size must be >= 1 (got {epochs}, {batch_size})")
    generator = torch.Generator().manual_seed(job.seed)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(total * warmup), total)
    label_ids = {name: i for i, name in enumerate(labels)}
    inputs = [fill_input(job.prompt, ex.text) for ex in train]

    model.train()
    losses: list[float] = []
    step = 0
    for _ in range(epochs):
        for batch in _batches(len(train), batch_size, generator):
            if stop is not None and stop.is_set():
                raise TrialInterrupted(f"stopped at step {step}/{total}")
            if classification:
                enc = tokenizer([inputs[i] for i in batch], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                out = model(**enc, labels=torch.tensor([label_ids[train[i].label] for i in batch]))
            else:
                pairs = [_encode_generation(tokenizer, inputs[i], train[i].label) for i in batch]
                ids = _pad([p[0] for p in pairs], tokenizer.pad_token_id)
                out = model(
                    input_ids=ids,
                    attention_mask=(_pad([[1] * len(p[0]) for p in pairs], 0)),
                    labels=_pad([p[1] for p in pairs], -100),
                )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(out.loss.detach()))
            if progress is not None and (step % 10 == 0 or step == total):
                progress(step, total, losses[-1])

    predictions = _predict(model, tokenizer, job, held_out, labels)
    artifact = _save(model, tokenizer, artifacts_dir / job.study_id / job.trial_id)
    tail = losses[-steps_per_epoch:] or [float("nan")]
    return TrialResult(
        predictions=predictions,
        references=[ex.label for ex in held_out],
        train_loss=sum(tail) / len(tail),
        steps=step,
        seconds=time.monotonic() - started,
        artifact_path=str(artifact),
        losses=losses,
    )


@torch.no_grad()
def _predict(model, tokenizer, job: TrialJob, held_out, labels: list[str]) -> list[str]:
    model.eval()
    texts = [fill_input(job.prompt, ex.text) for ex in held_out]
    out: list[str] = []
    for i in range(0, len(texts), 64):
        chunk = texts[i : i + 64]
        if job.task == "classification":
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            out += [labels[k] for k in model(**enc).logits.argmax(-1).tolist()]
            continue
        for text in chunk:  # one at a time: no left-padding subtleties for decoder-only models
            prompt_ids, _ = _encode_generation(tokenizer, text, None)
            ids = torch.tensor([prompt_ids])
            generated = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=min(MAX_LENGTH, 2 * len(prompt_ids) + 4),
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            out.append(tokenizer.decode(generated[0, len(prompt_ids):], skip_special_tokens=True).strip())
    return out


def _save(model, tokenizer, target: Path) -> Path:
    """Write the model and tokenizer beside the target, then rename: never a half-written dir."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target
