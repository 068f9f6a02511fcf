"""The training loop, readable in one screen (after nanoGPT's train.py).

DDP is detected from the environment (torchrun sets WORLD_SIZE); only rank 0 reports progress
and writes checkpoints. The autocast context is chosen once from the precision; the GradScaler
is enabled only for fp16 and is unscaled before gradient clipping; steps it skips (inf/NaN
gradients) are counted. Batches come from `length_buckets`, a pure function of (seed, epoch),
so the step number is also the data position a resumed trial continues from.
"""
from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist

from openautoglm.common.catalogue import SGD_MOMENTUM
from openautoglm.trainer import checkpoint


class TrialInterrupted(Exception):
    """Training was asked to stop (the service is shutting down); the job goes back to the queue."""


class TrialPruned(Exception):
    """The study's pruner stopped this trial (after an intermediate score)."""

    def __init__(self, step: int):
        super().__init__(f"pruned at step {step}")
        self.step = step


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    precision: str = "fp32"
    accumulation: int = 1
    checkpoint_every: int = 20
    seed: int = 0
    max_grad_norm: float = 1.0
    # transformers' schedule names: "linear", "cosine" or "constant_with_warmup".
    lr_schedule: str = "linear"
    # "adamw", "adafactor" or "sgd" (with momentum).
    optimizer: str = "adamw"


@dataclass
class LoopResult:
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    skipped_steps: int = 0
    resumed_from_step: int = 0
    # The learning rate each optimiser step used (what the schedule gave it).
    learning_rates: list[float] = field(default_factory=list)


def length_buckets(lengths: list[int], batch_size: int, seed: int, epoch: int, pool: int = 50) -> list[list[int]]:
    """Batches of similar-length examples (padding only up to the longest in each batch),
    in a seeded random order: shuffle, sort by length within pools of `pool` batches, cut, shuffle."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def make_optimizer(cfg: LoopConfig, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimiser over the trainable parameters (torch's own implementations;
    Adafactor with a fixed learning rate, so the schedule drives it as it drives the others)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adafactor":
        return torch.optim.Adafactor(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=cfg.learning_rate, momentum=SGD_MOMENTUM, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when torchrun started us."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class Flag(Protocol):
    """A stop signal: a threading.Event, or (under torchrun) a flag file the parent writes."""

    def is_set(self) -> bool: ...


def _agreed_flags(stop: Flag | None, prune: Flag | None, world: int, device: torch.device) -> tuple[bool, bool]:
    """(stop, prune) as every rank sees them: under DDP the ranks take the maximum, so all of them
    leave at the same step (one rank leaving alone would hang the others' all-reduce)."""
    flags = [bool(stop is not None and stop.is_set()), bool(prune is not None and prune.is_set())]
    if world > 1:
        agreed = torch.tensor(flags, dtype=torch.int32, device=device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        flags = [bool(v) for v in agreed.tolist()]
    return flags[0], flags[1]


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train(
    model: torch.nn.Module,
    lengths: list[int],
    make_batch: Callable[[list[int]], dict[str, torch.Tensor]],
    cfg: LoopConfig,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    checkpoint_key: str = "",
    progress: Callable[[int, int, float], None] | None = None,
    stop: Flag | None = None,
    prune: Flag | None = None,
    epoch_end: Callable[[int], None] | None = None,
) -> LoopResult:
    from transformers import get_scheduler

    rank, world = distributed()
    batches_per_epoch = math.ceil(len(lengths) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulation)
    total = steps_per_epoch * cfg.epochs
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, trainable)
    schedule = get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=int(total * cfg.warmup_ratio),
                             num_training_steps=total)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    autocast = autocast_context(cfg.precision, device)
    ddp_model: Any = model  # the model, or its DistributedDataParallel wrapper (no_sync)
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    result = LoopResult()
    state = checkpoint.load(checkpoint_dir, checkpoint_key) if checkpoint_dir is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        result.steps = result.resumed_from_step = state["step"]
        result.losses = list(state["losses"])
        result.skipped_steps = state["skipped"]
        result.learning_rates = list(state.get("learning_rates", []))

    model.train()
    plan: list[list[int]] = []
    plan_epoch = -1
    while result.steps < total:
        step = result.steps
        stopping, pruning = _agreed_flags(stop, prune, world, device)
        if stopping:
            raise TrialInterrupted(f"stopped at step {step}/{total}")
        if pruning:
            raise TrialPruned(step)
        epoch = step // steps_per_epoch
        if epoch != plan_epoch:
            plan, plan_epoch = length_buckets(lengths, cfg.batch_size, cfg.seed, epoch), epoch
        first = (step % steps_per_epoch) * cfg.accumulation
        micro_batches = plan[first : first + cfg.accumulation]
        step_loss = 0.0
        for i, batch in enumerate(micro_batches):
            shard = batch[rank * len(batch) // world : (rank + 1) * len(batch) // world]
            sync = i == len(micro_batches) - 1 or world == 1
            with (contextlib.nullcontext() if sync else ddp_model.no_sync()), autocast:
                loss = ddp_model(**{k: v.to(device) for k, v in make_batch(shard).items()}).loss / len(micro_batches)
            scaler.scale(loss).backward()
            step_loss += float(loss.detach())
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        scale_before = scaler.get_scale()
        result.learning_rates.append(float(optimizer.param_groups[0]["lr"]))
        scaler.step(optimizer)
        scaler.update()
        if scaler.is_enabled() and scaler.get_scale() < scale_before:
            result.skipped_steps += 1  # inf/NaN gradients: the scaler skipped optimizer.step
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:
            reduced = torch.tensor([step_loss], device=device)
            dist.all_reduce(reduced, op=dist.ReduceOp.AVG if device.type == "cuda" else dist.ReduceOp.SUM)
            step_loss = float(reduced) / (1 if device.type == "cuda" else world)
        result.losses.append(step_loss)
        result.steps = step + 1
        if rank == 0:
            if progress is not None and (result.steps % 10 == 0 or result.steps == total):
                progress(result.steps, total, step_loss)
            if epoch_end is not None and result.steps % steps_per_epoch == 0 and result.steps < total:
                epoch_end(result.steps // steps_per_epoch)
                model.train()
            if checkpoint_dir is not None and (result.steps % cfg.checkpoint_every == 0) and result.steps < total:
                checkpoint.save(checkpoint_dir, {
                    "key": checkpoint_key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "scaler": scaler.state_dict(), "rng": checkpoint.rng_state(),
                    "step": result.steps, "losses": result.losses, "skipped": result.skipped_steps,
                    "learning_rates": result.learning_rates,
                })
    return result
