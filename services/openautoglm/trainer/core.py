"""Fine-tuning one trial, with no gRPC or NATS in sight (service.py wraps it).

`run_trial` takes a `TrialJob`: it loads the data split and the model (models.py), applies the
candidate's prompt to every input, trains with loop.train (mixed precision, accumulation,
checkpoints), predicts the held-out split, measures held-out perplexity for causal LMs, saves
the model (safetensors) and returns the predictions with their references for the evaluator.
A redelivered job finds its checkpoint and continues from it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable

import torch

from openautoglm.common import datasets
from openautoglm.common.datasets import Example
from openautoglm.common.catalogue import (
    DEFAULT_CHECKPOINT_EVERY_STEPS,
    DEFAULT_EVAL_FRACTION,
    DEFAULT_HYPERPARAMETERS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MODEL,
    DEFAULT_PRECISION,
    DEFAULT_TUNING,
    HYPERPARAMETER_NAMES,
    HYPERPARAMETER_RANGES,
    PRECISIONS,
)
from openautoglm.common.resources import training_memory_mb
from openautoglm.common.spec.templates import fill_input
from openautoglm.trainer import loop, models

log = logging.getLogger(__name__)
# Beside a trial's saved model: how to serve it (the prompt, demonstrations, labels), and what it
# predicted for the held-out split (the registry ships both; serving must reproduce the latter).
SERVING_RECIPE = "serving.json"
EVAL_PREDICTIONS = "eval_predictions.jsonl"


class TrialError(Exception):
    """The trial cannot run as asked (bad model dir, bad dataset, impossible precision...): fail it."""


@dataclass
class TrialJob:
    study_id: str
    trial_id: str
    task: str  # "classification" | "generation"
    prompt: str  # rendered template with the "{input}" slot
    hyperparameters: dict[str, Any]
    dataset_builtin: str = ""
    dataset_path: str = ""
    # An uploaded dataset / base model: the trainer fetches it and sets the path (app.py).
    dataset_artifact: str = ""
    text_field: str = ""
    label_field: str = ""
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    # Kept back for the study's final test (datasets.in_test_split); 0 = no test split.
    test_fraction: float = 0.0
    max_examples: int = 0
    model_builtin: str = DEFAULT_MODEL
    model_path: str = ""
    model_artifact: str = ""
    tuning: str = DEFAULT_TUNING
    precision: str = DEFAULT_PRECISION
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    checkpoint_every_steps: int = DEFAULT_CHECKPOINT_EVERY_STEPS
    max_length: int = DEFAULT_MAX_LENGTH
    seed: int = 0
    report_intermediate: bool = False

    def key(self) -> str:
        """Identity of the work: a checkpoint resumes only the exact same job."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class TrialResult:
    predictions: list[str]
    references: list[str]
    train_loss: float
    steps: int
    seconds: float
    artifact_path: str
    losses: list[float] = field(default_factory=list)
    model_metrics: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0
    resumed_from_step: int = 0
    precision: str = "fp32"


ProgressFn = Callable[[int, int, float], None]


def pick_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise TrialError("precision fp16 needs a CUDA device; this trainer has only a CPU (use bf16 or fp32)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrialError("precision bf16 is not supported by this GPU (use fp16 or fp32)")


def estimate_memory_mb(model: torch.nn.Module, batch_size: int, max_length: int) -> float:
    """The need of this loaded model (the formula the gateway applies before loading)."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    hidden = getattr(model.config, "hidden_size", 256)
    layers = getattr(model.config, "num_hidden_layers", 4)
    return training_memory_mb(params, trainable, hidden, layers, batch_size, max_length)


def _hyperparameters(job: TrialJob) -> dict[str, Any]:
    """The job's hyper-parameters over the defaults, checked again here (a job on the queue is
    not trusted to have come through the spec's validation)."""
    hp = {**DEFAULT_HYPERPARAMETERS, **job.hyperparameters}
    try:
        hp["epochs"], hp["batch_size"], hp["few_shot"] = int(hp["epochs"]), int(hp["batch_size"]), int(hp["few_shot"])
        for key in ("learning_rate", "weight_decay", "warmup_ratio", "max_grad_norm"):
            hp[key] = float(hp[key])
        if "dropout" in hp:
            hp["dropout"] = float(hp["dropout"])
    except (TypeError, ValueError) as err:
        raise TrialError(f"bad hyper-parameter value: {err}") from None
    if hp["few_shot"] < 0:
        raise TrialError(f"few_shot must be >= 0 (got {hp['few_shot']})")
    if hp["epochs"] < 1 or hp["batch_size"] < 1:
        raise TrialError(f"epochs and batch_size must be >= 1 (got {hp['epochs']}, {hp['batch_size']})")
    for name, names in HYPERPARAMETER_NAMES.items():
        if hp[name] not in names:
            raise TrialError(f"unknown {name} {hp[name]!r}; expected one of {', '.join(names)}")
    for name, (low, high, low_allowed, high_allowed) in HYPERPARAMETER_RANGES.items():
        value = hp.get(name)
        if value is not None and not ((low < value or (low_allowed and value == low))
                                      and (value < high or (high_allowed and value == high))):
            raise TrialError(f"{name} {value} is out of range")
    return hp


def demonstrations(train: list[Example], k: int, seed: int) -> list[Example]:
    """The k few-shot examples of a trial: a seeded sample of the train split."""
    import random

    return random.Random(seed + 1).sample(train, min(k, len(train))) if k > 0 else []


class Encoder:
    """Turns examples into tensors: few-shot demonstrations and the prompt applied, truncated
    from the left to max_length (the example itself is never cut for its demonstrations),
    padded per batch."""

    def __init__(self, tokenizer: Any, job: TrialJob, labels: list[str], demos: Sequence[Example] = ()):
        self.tokenizer, self.job = tokenizer, job
        tokenizer.truncation_side = "left"
        self.prefix = " ".join(f"{fill_input(job.prompt, d.text)} {d.label}" for d in demos)
        self.label_ids = {name: i for i, name in enumerate(labels)}
        sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.sep = [sep] if sep is not None else []
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def text(self, example_text: str) -> str:
        prompt = fill_input(self.job.prompt, example_text)
        return f"{self.prefix} {prompt}" if self.prefix else prompt

    def prompt_ids(self, text: str, limit: int | None = None) -> list[int]:
        ids: list[int] = self.tokenizer(self.text(text), add_special_tokens=self.job.task == "classification",
                                        truncation=True, max_length=limit or self.job.max_length)["input_ids"]
        return ids

    def encode(self, example: Example) -> tuple[list[int], list[int] | int]:
        if self.job.task == "classification":
            return self.prompt_ids(example.text), self.label_ids[example.label]
        prompt = self.prompt_ids(example.text, self.job.max_length - 1) + self.sep
        target = self.tokenizer(example.label, add_special_tokens=False)["input_ids"][: self.job.max_length]
        target = target + [self.tokenizer.eos_token_id]
        return prompt + target, [-100] * len(prompt) + target

    def collate(self, rows: list[tuple[list[int], list[int] | int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in rows)
        batch = {
            "input_ids": torch.tensor([ids + [self.pad] * (width - len(ids)) for ids, _ in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
        }
        if self.job.task == "classification":
            batch["labels"] = torch.tensor([label for _, label in rows])
        else:
            batch["labels"] = torch.tensor([_token_labels(lab) + [-100] * (width - len(_token_labels(lab))) for _, lab in rows])
        return batch


def _token_labels(label: list[int] | int) -> list[int]:
    """A generation example's target token ids (classification examples carry a class index)."""
    if isinstance(label, int):
        raise TypeError("a generation batch got a class label")
    return label


def prepare(job: TrialJob) -> tuple[list[Example], list[Example], list[str], Any, Any, dict[str, Any]]:
    """(train, held_out, labels, tokenizer, model, hyper-parameters) for a job, seeded."""
    hp = _hyperparameters(job)
    try:
        train, held_out = datasets.load_split(
            job.dataset_builtin, job.dataset_path, job.task, job.text_field, job.label_field,
            job.eval_fraction, job.max_examples, job.seed, job.test_fraction,
        )
    except datasets.DatasetError as err:
        raise TrialError(str(err)) from None
    labels = sorted({ex.label for ex in train + held_out}) if job.task == "classification" else []
    texts = [fill_input(job.prompt, ex.text) for ex in train + held_out] + [ex.label for ex in train + held_out]
    torch.manual_seed(job.seed)
    try:
        tokenizer, model = models.load(job.model_builtin, job.model_path, job.task, labels, texts, job.max_length)
        if "dropout" in hp:
            models.set_dropout(model, hp["dropout"])  # before peft wraps it: LoRA keeps lora_dropout
        model = models.apply_tuning(model, job.tuning, job.task, hp)
    except models.ModelError as err:
        raise TrialError(str(err)) from None
    if job.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if job.tuning != "full" and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return train, held_out, labels, tokenizer, model, hp


def run_trial(
    job: TrialJob,
    artifacts_dir: Path,
    progress: ProgressFn | None = None,
    stop: loop.Flag | None = None,
    checkpoints_dir: Path | None = None,
    free_memory_mb: float | None = None,
    intermediate: Callable[[int, float], None] | None = None,
    prune: loop.Flag | None = None,
) -> TrialResult:
    """Train, predict the held-out split, save the model; raises TrialError / TrialInterrupted."""
    started = time.monotonic()
    device = pick_device()
    check_precision(job.precision, device)
    train, held_out, labels, tokenizer, model, hp = prepare(job)
    if free_memory_mb is not None:
        need = estimate_memory_mb(model, hp["batch_size"], job.max_length)
        if need > free_memory_mb:
            raise TrialError(f"the job needs about {need:.0f} MiB but this trainer has {free_memory_mb:.0f} MiB free")
    model.to(device)
    demos = demonstrations(train, hp["few_shot"], job.seed)
    encoder = Encoder(tokenizer, job, labels, demos)
    rows = [encoder.encode(ex) for ex in train]
    cfg = loop.LoopConfig(
        epochs=hp["epochs"], batch_size=hp["batch_size"], learning_rate=hp["learning_rate"],
        weight_decay=hp["weight_decay"], warmup_ratio=hp["warmup_ratio"], precision=job.precision,
        accumulation=job.gradient_accumulation_steps, checkpoint_every=job.checkpoint_every_steps, seed=job.seed,
        max_grad_norm=hp["max_grad_norm"], lr_schedule=hp["lr_schedule"], optimizer=hp["optimizer"],
    )
    ckpt_dir = checkpoints_dir / job.study_id / job.trial_id if checkpoints_dir is not None else None
    epoch_end = None
    if job.report_intermediate and intermediate is not None:
        def epoch_end(epoch: int) -> None:
            intermediate(epoch, held_out_score(model, tokenizer, encoder, job, held_out, labels, device))

    outcome = loop.train(
        model, [len(ids) for ids, _ in rows], lambda idx: encoder.collate([rows[i] for i in idx]), cfg, device,
        ckpt_dir, job.key(), progress, stop, prune, epoch_end,
    )
    rank, _ = loop.distributed()
    timer = time.perf_counter()
    predictions, model_metrics = _predict(model, tokenizer, encoder, job, held_out, labels, device)
    model_metrics["latency_ms"] = (time.perf_counter() - timer) * 1000 / max(len(held_out), 1)
    model_metrics["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    extra = {
        SERVING_RECIPE: json.dumps(serving_recipe(job, labels, demos), indent=1),
        EVAL_PREDICTIONS: "".join(json.dumps({"input": ex.text, "reference": ex.label, "prediction": p}) + "\n"
                                  for ex, p in zip(held_out, predictions)),
    }
    artifact = _save(model, tokenizer, artifacts_dir / job.study_id / job.trial_id, extra) if rank == 0 else None
    if ckpt_dir is not None and rank == 0:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the trial is done: its result is the artifact
    tail = outcome.losses[-max(1, len(outcome.losses) // max(1, hp["epochs"])):] or [float("nan")]
    return TrialResult(
        predictions=predictions,
        references=[ex.label for ex in held_out],
        train_loss=sum(tail) / len(tail),
        steps=outcome.steps,
        seconds=time.monotonic() - started,
        artifact_path=str(artifact or ""),
        losses=outcome.losses,
        model_metrics=model_metrics,
        skipped_steps=outcome.skipped_steps,
        resumed_from_step=outcome.resumed_from_step,
        precision=job.precision,
    )


def warm_up(scratch_dir: Path, stop: loop.Flag | None = None) -> dict[str, float]:
    """Run one short trial per task on the built-in model and data, so a trainer pays its one-time
    costs (transformers' lazy imports, the optimiser's and the kernels' first-call set-up, the
    safetensors writer) while it starts rather than in a study's first trial, which otherwise
    took about three times as long as the next ones (benchmarks/mesh_overhead.py); then measure
    its training throughput (`measure_throughput`), which it announces. `stop` ends it early
    (TrialInterrupted): a trainer stopped while warming up must not wait for it, since the
    interpreter joins the training thread before the process can exit."""
    models.preload()
    for dataset, (_, task) in datasets.BUILTIN.items():
        job = TrialJob(study_id="warm-up", trial_id=task, task=task, prompt="{input}",
                       hyperparameters={"epochs": 1, "batch_size": 8}, dataset_builtin=dataset, max_examples=24)
        run_trial(job, scratch_dir, stop=stop)
    shutil.rmtree(scratch_dir / "warm-up", ignore_errors=True)
    return measure_throughput(stop=stop)


# The fixed benchmark a trainer runs when it starts: training steps of the built-in tiny model
# on a batch of this many sequences of this many tokens, for at least this long per precision.
THROUGHPUT_BATCH, THROUGHPUT_TOKENS, THROUGHPUT_SECONDS = 8, 64, 0.3


def measure_throughput(device: torch.device | None = None, seconds: float = THROUGHPUT_SECONDS,
                       stop: loop.Flag | None = None) -> dict[str, float]:
    """Training tokens per second of the fixed benchmark, per precision this device runs (fp16
    only on CUDA; bf16 where supported): what the scheduler's speeds and the gateway's cost model
    are measured in. Raises TrialInterrupted once `stop` is set."""
    device = device or pick_device()
    texts = [f"w{i}" for i in range(200)]
    _, model = models.load("tiny", "", "generation", [], texts, THROUGHPUT_TOKENS)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, int(model.config.vocab_size), (THROUGHPUT_BATCH, THROUGHPUT_TOKENS), generator=generator).to(device)
    out = {}
    for precision in PRECISIONS:
        try:
            check_precision(precision, device)
        except TrialError:
            continue
        steps, started = 0, 0.0
        while True:
            if stop is not None and stop.is_set():
                raise loop.TrialInterrupted("stopped while measuring throughput")
            if steps == 2:  # the first steps set up kernels: not timed
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
            with loop.autocast_context(precision, device):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            if steps > 2:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed = time.perf_counter() - started
                if elapsed >= seconds and steps >= 5:
                    break
        out[precision] = (steps - 2) * THROUGHPUT_BATCH * THROUGHPUT_TOKENS / elapsed
    return out


def held_out_score(model: Any, tokenizer: Any, encoder: Encoder, job: TrialJob, held_out: list[Example], labels: list[str],
                   device: torch.device) -> float:
    """A cheap intermediate score, higher is better: held-out accuracy (classification) or
    minus the log-perplexity of the references (generation, no decoding)."""
    if job.task == "classification":
        predictions, _ = _predict(model, tokenizer, encoder, job, held_out, labels, device)
        return sum(p == ex.label for p, ex in zip(predictions, held_out)) / len(held_out)
    return -math.log(perplexity(model, encoder, job, held_out, device))


@torch.no_grad()
def perplexity(model: Any, encoder: Encoder, job: TrialJob, held_out: list[Example], device: torch.device) -> float:
    """exp(mean NLL per reference token), teacher-forced on the held-out split."""
    model.eval()
    autocast = loop.autocast_context(job.precision, device)
    rows = [encoder.encode(ex) for ex in held_out]
    nll, tokens = 0.0, 0
    for i in range(0, len(rows), 32):
        batch = {k: v.to(device) for k, v in encoder.collate(rows[i : i + 32]).items()}
        labels_t = batch.pop("labels")
        with autocast:
            logits = model(**batch).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels_t[:, 1:]
        mask = shift_labels != -100
        losses = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.clamp(min=0).reshape(-1), reduction="none"
        ).view_as(shift_labels)
        nll += float((losses * mask).sum())
        tokens += int(mask.sum())
    return math.exp(nll / max(tokens, 1))


@torch.no_grad()
def classify(model: Any, encoder: Encoder, texts: Sequence[str], labels: list[str], device: torch.device,
             precision: str, batch_size: int = 64) -> list[tuple[str, dict[str, float]]]:
    """(label, every label's probability) per raw input text: the prompt applied, batched. The
    trial's own held-out predictions and a served model's answers both come from here."""
    model.eval()
    autocast = loop.autocast_context(precision, device)
    rows: list[tuple[list[int], list[int] | int]] = [(encoder.prompt_ids(text), 0) for text in texts]
    out: list[tuple[str, dict[str, float]]] = []
    for i in range(0, len(rows), batch_size):
        batch = encoder.collate(rows[i : i + batch_size])
        batch.pop("labels")
        with autocast:
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        probabilities = torch.softmax(logits.float(), -1).tolist()
        for k, row in zip(logits.argmax(-1).tolist(), probabilities):
            out.append((labels[k], {label: row[j] for j, label in enumerate(labels)}))
    return out


def generation_limit(prompt_length: int, max_length: int) -> int:
    """New tokens a trial decodes for a prompt of this length (and a served model by default)."""
    return min(max_length, 2 * prompt_length + 4)


@torch.no_grad()
def generate(model: Any, tokenizer: Any, encoder: Encoder, text: str, device: torch.device, precision: str,
             max_new_tokens: int = 0, streamer: Any = None) -> str:
    """Greedy continuation of one raw input (one at a time: no left-padding subtleties for
    decoder-only models); `streamer` (transformers' streamer protocol) hears each token."""
    model.eval()
    prompt = encoder.prompt_ids(text, encoder.job.max_length - 1) + encoder.sep
    ids = torch.tensor([prompt], device=device)
    with loop.autocast_context(precision, device):
        generated = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens or generation_limit(len(prompt), encoder.job.max_length),
            do_sample=False, pad_token_id=encoder.pad, eos_token_id=tokenizer.eos_token_id, streamer=streamer,
        )
    return str(tokenizer.decode(generated[0, len(prompt):], skip_special_tokens=True).strip())


def _predict(model: Any, tokenizer: Any, encoder: Encoder, job: TrialJob, held_out: list[Example], labels: list[str],
             device: torch.device) -> tuple[list[str], dict[str, float]]:
    if job.task == "classification":
        return [label for label, _ in classify(model, encoder, [ex.text for ex in held_out], labels, device, job.precision)], {}
    held_out_perplexity = perplexity(model, encoder, job, held_out, device)
    return ([generate(model, tokenizer, encoder, ex.text, device, job.precision) for ex in held_out],
            {"perplexity": held_out_perplexity, "fluency": 1.0 / held_out_perplexity})


def serving_recipe(job: TrialJob, labels: list[str], demos: Sequence[Example]) -> dict[str, Any]:
    """What serving needs beside the weights to answer as the trial did (serving.json): the task,
    the prompt template as rendered for the trial, its few-shot demonstrations, the label set and
    the length and precision it ran with."""
    return {"format": 1, "task": job.task, "prompt": job.prompt, "labels": labels,
            "demonstrations": [{"text": d.text, "label": d.label} for d in demos],
            "max_length": job.max_length, "precision": job.precision, "tuning": job.tuning}


def _save(model: Any, tokenizer: Any, target: Path, extra: dict[str, str]) -> Path:
    """Write the model (merged, for LoRA), tokenizer and `extra` files beside the target, then rename."""
    if hasattr(model, "merge_and_unload") and getattr(model, "peft_type", None) is not None:
        from peft import PeftType

        if model.peft_type == PeftType.LORA:
            model = model.merge_and_unload()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    for name, text in extra.items():
        (staging / name).write_text(text)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target
