"""The trainer's training machinery on CPU: mixed precision, GradScaler accounting, gradient
accumulation and checkpointing, length-bucketed batches, checkpoint + resume after SIGKILL,
LoRA / soft-prompt tuning, the MiniLM encoder, DDP over gloo, capacity refusal, ONNX export."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from openautoglm.trainer import loop
from openautoglm.trainer.core import TrialError, TrialJob, run_trial
from openautoglm.trainer.export import export
from openautoglm.common.net import free_port

ROOT = Path(__file__).resolve().parent.parent


def _job(**kw) -> TrialJob:
    base = dict(study_id="s", trial_id="t", task="classification", prompt="Review: {input} Sentiment:",
                hyperparameters={"epochs": 2, "learning_rate": 3e-3, "batch_size": 16}, dataset_builtin="sentiment-demo",
                max_examples=240, seed=5)
    base.update(kw)
    return TrialJob(**base)


def test_length_buckets_cover_every_example_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 90, size=1000).tolist()
    batches = loop.length_buckets(lengths, 16, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == loop.length_buckets(lengths, 16, seed=1, epoch=0)  # a pure function of (seed, epoch)
    assert batches != loop.length_buckets(lengths, 16, seed=1, epoch=1)
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    order = list(range(1000))
    naive = [order[i:i + 16] for i in range(0, 1000, 16)]
    naive_waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in naive)
    assert waste < naive_waste / 10


def test_bf16_autocast_trains_on_cpu(tmp_path):
    fp32 = run_trial(_job(), tmp_path / "a")
    bf16 = run_trial(_job(precision="bf16"), tmp_path / "b")
    assert bf16.precision == "bf16" and bf16.losses[-1] < bf16.losses[0]
    assert bf16.losses != fp32.losses  # it really ran in reduced precision
    assert abs(bf16.losses[0] - fp32.losses[0]) < 0.05


def test_fp16_on_a_cpu_trainer_is_refused_clearly(tmp_path):
    with pytest.raises(TrialError, match="fp16 needs a CUDA device"):
        run_trial(_job(precision="fp16"), tmp_path)


def test_grad_scaler_counts_skipped_steps():
    """fp16 loss scaling on CPU (the GradScaler works there): a step with inf gradients is skipped."""
    weight = torch.nn.Parameter(torch.ones(3))

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = weight

        def forward(self, x):
            return SimpleNamespace(loss=(self.weight * x).sum())

    model = Toy()
    xs = [torch.tensor([float("inf"), 1.0, 1.0])] + [torch.tensor([1.0, 1.0, 1.0])] * 3
    cfg = loop.LoopConfig(epochs=1, batch_size=1, learning_rate=0.1, precision="fp16", seed=0, warmup_ratio=0.0)
    result = loop.train(model, [1] * 4, lambda idx: {"x": xs[idx[0]]}, cfg, torch.device("cpu"))
    assert result.steps == 4 and result.skipped_steps == 1


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    plain = run_trial(_job(hyperparameters={"epochs": 1}), tmp_path / "a")
    ckpt = run_trial(_job(hyperparameters={"epochs": 1}, gradient_checkpointing=True), tmp_path / "b")
    assert ckpt.losses == pytest.approx(plain.losses, abs=1e-5)


def test_gradient_accumulation_takes_fewer_optimizer_steps(tmp_path):
    one = run_trial(_job(hyperparameters={"epochs": 1, "batch_size": 8}), tmp_path / "a")
    four = run_trial(_job(hyperparameters={"epochs": 1, "batch_size": 8}, gradient_accumulation_steps=4), tmp_path / "b")
    assert four.steps == -(-one.steps // 4)
    assert four.losses[-1] < four.losses[0] + 0.5


_KILLABLE = """
import sys, json
from pathlib import Path
from openautoglm.trainer.core import TrialJob, run_trial
job = TrialJob(**json.loads(sys.argv[1]))
run_trial(job, Path(sys.argv[2]), checkpoints_dir=Path(sys.argv[3]))
"""


def test_sigkill_mid_trial_resumes_from_the_checkpoint_with_identical_losses(tmp_path):
    job = _job(hyperparameters={"epochs": 6, "learning_rate": 3e-3, "batch_size": 8}, checkpoint_every_steps=10)
    reference = run_trial(job, tmp_path / "reference")
    ckpt_dir = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, json.dumps(asdict(job)), str(tmp_path / "killed"), str(ckpt_dir)])
    target = ckpt_dir / "s" / "t" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not target.exists():
        assert proc.poll() is None, "the trial finished before any checkpoint: make it longer"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((ckpt_dir / "s" / "t").glob(".*tmp*")) or target.exists()  # never a half-written checkpoint
    resumed = run_trial(job, tmp_path / "resumed", checkpoints_dir=ckpt_dir)
    assert resumed.resumed_from_step > 0 and resumed.resumed_from_step % 10 == 0
    assert len(resumed.losses) == len(reference.losses)
    assert np.max(np.abs(np.array(resumed.losses) - np.array(reference.losses))) < 1e-4
    assert resumed.predictions == reference.predictions
    assert not target.exists()  # a finished trial cleans its checkpoint up


def test_a_checkpoint_of_another_job_is_not_resumed(tmp_path):
    job = _job(hyperparameters={"epochs": 2, "batch_size": 8}, checkpoint_every_steps=5)
    ckpt_dir = tmp_path / "ckpt"
    from openautoglm.trainer import checkpoint

    checkpoint.save(ckpt_dir / "s" / "t", {"key": "something-else", "step": 5})
    result = run_trial(job, tmp_path / "a", checkpoints_dir=ckpt_dir)
    assert result.resumed_from_step == 0


@pytest.mark.parametrize("tuning", ["lora", "prompt_tuning"])
def test_parameter_efficient_tuning_trains_few_parameters(tmp_path, tuning):
    from openautoglm.trainer.core import prepare

    job = _job(tuning=tuning, hyperparameters={"epochs": 3, "learning_rate": 1e-2, "lora_r": 4, "num_virtual_tokens": 4})
    *_, model, _ = prepare(job)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert trainable < 0.5 * total
    result = run_trial(job, tmp_path)
    assert result.losses[-1] < result.losses[0]
    assert (Path(result.artifact_path) / "config.json").exists() or (Path(result.artifact_path) / "adapter_config.json").exists()


def test_lora_generation_with_the_tiny_glm(tmp_path):
    job = _job(task="generation", prompt="Pig latin: {input}", dataset_builtin="piglatin-demo", max_examples=60,
               tuning="lora", hyperparameters={"epochs": 2, "batch_size": 8})
    result = run_trial(job, tmp_path)
    assert len(result.predictions) == 12 and result.model_metrics["perplexity"] > 1.0
    assert result.model_metrics["fluency"] == pytest.approx(1 / result.model_metrics["perplexity"])  # bounded form


def test_minilm_encoder_classifies(tmp_path):
    result = run_trial(_job(model_builtin="minilm", max_examples=120, hyperparameters={"epochs": 2, "learning_rate": 5e-4}), tmp_path)
    assert len(result.predictions) == 24 and result.losses[-1] < result.losses[0]


def test_held_out_perplexity_matches_a_direct_computation(tmp_path):
    from transformers import AutoModelForCausalLM

    from openautoglm.trainer.core import Encoder, prepare

    job = _job(task="generation", prompt="Pig latin: {input}", dataset_builtin="piglatin-demo", max_examples=50,
               hyperparameters={"epochs": 1, "batch_size": 8})
    result = run_trial(job, tmp_path)
    train, held_out, labels, tokenizer, _, _ = prepare(job)
    model = AutoModelForCausalLM.from_pretrained(result.artifact_path).eval()
    encoder = Encoder(tokenizer, job, labels)
    nll, count = 0.0, 0
    with torch.no_grad():
        for ex in held_out:
            ids, lab = encoder.encode(ex)
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([lab]))
            n = sum(1 for x in lab[1:] if x != -100)
            nll += float(out.loss) * n
            count += n
    assert result.model_metrics["perplexity"] == pytest.approx(np.exp(nll / count), rel=1e-6)


def test_a_job_that_cannot_fit_is_refused(tmp_path):
    with pytest.raises(TrialError, match=r"needs about \d+ MiB but this trainer has 1 MiB free"):
        run_trial(_job(), tmp_path, free_memory_mb=1.0)


def test_ddp_over_two_gloo_processes_matches_one_process_with_the_combined_batch(tmp_path):
    job = _job(hyperparameters={"epochs": 1, "batch_size": 16, "warmup_ratio": 0.0}, max_examples=200)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(asdict(job)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                    "-m", "openautoglm.trainer.ddp", str(job_file), str(tmp_path / "ddp.json"), str(tmp_path / "a")],
                   check=True, env=env, timeout=300, capture_output=True)
    single = run_trial(job, tmp_path / "b")
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert len(ddp["losses"]) == len(single.losses) > 5
    assert np.max(np.abs(np.array(ddp["losses"]) - np.array(single.losses))) < 1e-4


@pytest.mark.parametrize("task,dataset", [("classification", "sentiment-demo"), ("generation", "piglatin-demo")])
def test_onnx_export_matches_torch_with_dynamic_axes(tmp_path, task, dataset):
    import onnxruntime
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    result = run_trial(_job(task=task, dataset_builtin=dataset, prompt="Q: {input}", max_examples=40,
                            hyperparameters={"epochs": 1}), tmp_path)
    files, diff = export(result.artifact_path, tmp_path / "export")
    names = {f.name for f in files}
    assert {"model.onnx", "model.safetensors", "config.json"} <= names
    assert diff < 1e-3
    loader = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    model = loader.from_pretrained(result.artifact_path).eval()
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, length in [(1, 4), (5, 23)]:
        ids = torch.randint(5, model.config.vocab_size, (batch, length))
        mask = torch.ones_like(ids)
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
        got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) < 1e-3


def test_few_shot_demonstrations_precede_each_input_and_never_crowd_it_out(tmp_path):
    from openautoglm.trainer.core import Encoder, demonstrations, prepare

    job = _job(hyperparameters={"epochs": 1, "few_shot": 3}, max_length=24)
    train, held_out, labels, tokenizer, _, _ = prepare(job)
    demos = demonstrations(train, 3, job.seed)
    assert demos == demonstrations(train, 3, job.seed) and len(demos) == 3
    encoder = Encoder(tokenizer, job, labels, demos)
    assert encoder.text("the movie was great").startswith(f"Review: {demos[0].text} Sentiment: {demos[0].label}")
    ids = encoder.prompt_ids("the movie was great")
    assert len(ids) <= 24
    assert tokenizer.decode(ids[-4:]).split()[-4:] == ["was", "great", "sentiment", ":"]  # the tail survives
    result = run_trial(job, tmp_path)
    assert len(result.predictions) == len(result.references)


def test_intermediate_scores_every_epoch_and_a_prune_flag_stops_training(tmp_path):
    import threading

    from openautoglm.trainer.loop import TrialPruned

    scores = []
    prune = threading.Event()

    def report(epoch, value):
        scores.append((epoch, value))
        if epoch == 2:
            prune.set()

    job = _job(hyperparameters={"epochs": 5, "batch_size": 16}, report_intermediate=True)
    with pytest.raises(TrialPruned):
        run_trial(job, tmp_path, intermediate=report, prune=prune)
    assert [e for e, _ in scores] == [1, 2]
    assert all(0.0 <= v <= 1.0 for _, v in scores)  # held-out accuracy
    gen = _job(task="generation", prompt="Pig latin: {input}", dataset_builtin="piglatin-demo", max_examples=40,
               hyperparameters={"epochs": 2, "batch_size": 8}, report_intermediate=True)
    seen = []
    run_trial(gen, tmp_path / "g", intermediate=lambda e, v: seen.append(v))
    assert len(seen) == 1 and seen[0] < 0  # minus the log-perplexity


class _Linear(torch.nn.Module):
    """A one-weight model for the loop: its loss is the weight's distance to 3."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return SimpleNamespace(loss=((self.weight * x - 3.0) ** 2).sum())


def _toy_run(**cfg_kw):
    model = _Linear()
    cfg = loop.LoopConfig(**{"epochs": 1, "batch_size": 1, "learning_rate": 0.1, "warmup_ratio": 0.2, "seed": 0, **cfg_kw})
    result = loop.train(model, [1] * 10, lambda idx: {"x": torch.ones(1)}, cfg, torch.device("cpu"))
    return model, result


def test_each_learning_rate_schedule_shapes_the_steps_as_named():
    _, linear = _toy_run(lr_schedule="linear")
    _, cosine = _toy_run(lr_schedule="cosine")
    _, constant = _toy_run(lr_schedule="constant_with_warmup")
    for run in (linear, cosine, constant):  # 2 warm-up steps from 0
        assert run.learning_rates[:3] == pytest.approx([0.0, 0.05, 0.1])
    assert constant.learning_rates[2:] == pytest.approx([0.1] * 8)
    # After warm-up, linear decays by 1/8 of the peak a step; cosine by (1 + cos(pi * k / 8)) / 2.
    assert linear.learning_rates[2:] == pytest.approx([0.1 * (1 - k / 8) for k in range(8)])
    assert cosine.learning_rates[2:] == pytest.approx([0.1 * 0.5 * (1 + np.cos(np.pi * k / 8)) for k in range(8)])


@pytest.mark.parametrize("name,cls", [("adamw", torch.optim.AdamW), ("adafactor", torch.optim.Adafactor),
                                      ("sgd", torch.optim.SGD)])
def test_each_optimizer_is_the_one_named_and_learns(name, cls):
    cfg = loop.LoopConfig(epochs=1, batch_size=1, learning_rate=0.05, optimizer=name)
    optimizer = loop.make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    assert type(optimizer) is cls
    if name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == 0.9
    model, result = _toy_run(optimizer=name, learning_rate=0.05, warmup_ratio=0.0, lr_schedule="constant_with_warmup")
    assert result.losses[-1] < result.losses[0]


def test_max_grad_norm_clips_each_step():
    """One SGD step moves the weight by lr x the gradient, clipped to max_grad_norm (|grad| is 6)."""
    def one_step(max_grad_norm: float) -> float:
        model = _Linear()
        cfg = loop.LoopConfig(epochs=1, batch_size=1, learning_rate=1.0, warmup_ratio=0.0, optimizer="sgd",
                              lr_schedule="constant_with_warmup", max_grad_norm=max_grad_norm)
        loop.train(model, [1], lambda idx: {"x": torch.ones(1)}, cfg, torch.device("cpu"))
        return float(model.weight.detach())

    assert one_step(0.01) == pytest.approx(0.01)
    assert one_step(0.5) == pytest.approx(0.5)
    assert one_step(100.0) == pytest.approx(6.0)


def test_dropout_reaches_every_dropout_of_the_model(tmp_path):
    from openautoglm.trainer import models

    tokenizer, tiny = models.load("tiny", "", "classification", ["a", "b"], ["some words"], 32)
    models.set_dropout(tiny, 0.25)
    attention = [m for m in tiny.modules() if hasattr(m, "attention_dropout")]
    assert attention and all(m.attention_dropout == 0.25 for m in attention)
    assert tiny.config.attention_dropout == 0.25
    _, minilm = models.load("minilm", "", "classification", ["a", "b"], [], 32)
    models.set_dropout(minilm, 0.25)
    layers = [m for m in minilm.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(m.p == 0.25 for m in layers)
    # And a trial honours it: the same job trains differently with dropout on.
    base = {"epochs": 1, "learning_rate": 3e-3, "batch_size": 16}
    plain = run_trial(_job(hyperparameters=base, max_examples=80), tmp_path / "a")
    dropped = run_trial(_job(hyperparameters={**base, "dropout": 0.3}, max_examples=80), tmp_path / "b")
    assert dropped.losses != pytest.approx(plain.losses, abs=1e-6)
    saved = json.loads((Path(dropped.artifact_path) / "config.json").read_text())
    assert saved["attention_dropout"] == 0.3


def test_a_job_with_an_unknown_optimizer_fails_clearly(tmp_path):
    with pytest.raises(TrialError, match="unknown optimizer 'lion'"):
        run_trial(_job(hyperparameters={"epochs": 1, "optimizer": "lion"}), tmp_path)
    with pytest.raises(TrialError, match="dropout 1.5 is out of range"):
        run_trial(_job(hyperparameters={"epochs": 1, "dropout": 1.5}), tmp_path)
