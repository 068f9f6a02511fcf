"""Serving deployed model versions inside a trainer process, with no gRPC in sight.

A `ServedModel` is a registered version's files (weights, tokenizer, `serving.json`) loaded
once: it answers raw inputs the way its trial predicted its held-out split (core.classify /
core.generate, the same prompt, demonstrations and labels). `Batcher` groups the single inputs
of concurrent requests into one forward pass on one inference thread: whatever queued while the
previous batch ran, up to `max_batch` inputs, and (when `max_wait_ms` > 0) whatever else
arrives within that many ms of the first. `Serving` holds the loaded versions, a
cache of answers keyed by hash(model version, input), and the list of what is deployed on disk,
so a restarted trainer loads it again.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openautoglm.common.datasets import Example
from openautoglm.trainer import core, export

log = logging.getLogger(__name__)
Answer = tuple[str, dict[str, float]]  # classification: (label, scores); generation: (text, {})


class InputTooLong(ValueError):
    """An input over the model's token limit (the message names the limit)."""


class ServingError(RuntimeError):
    """A model that cannot be served as asked (no such deployment, unreadable files)."""


class ServedModel:
    """One model version, loaded for inference on this trainer's device."""

    def __init__(self, key: str, directory: Path, device: torch.device | None = None):
        recipe = json.loads((directory / core.SERVING_RECIPE).read_text())
        self.key = key
        self.task: str = recipe["task"]
        self.labels: list[str] = recipe["labels"]
        self.device = device or core.pick_device()
        # Serve in the trial's precision where this device supports it (fp16 needs CUDA).
        self.precision = recipe["precision"] if not (recipe["precision"] == "fp16" and self.device.type != "cuda") else "fp32"
        self.tokenizer, self.model = export.load_artifact(directory)
        self.model.to(self.device)
        self.job = core.TrialJob(study_id="", trial_id=key, task=self.task, prompt=recipe["prompt"], hyperparameters={},
                                 max_length=recipe["max_length"], precision=self.precision)
        demos = [Example(d["text"], d["label"]) for d in recipe["demonstrations"]]
        self.encoder = core.Encoder(self.tokenizer, self.job, self.labels, demos)
        self.max_input_tokens: int = recipe["max_length"]
        self.memory_mb: float = sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20

    def check(self, texts: list[str]) -> None:
        """InputTooLong naming the first input over the limit (counted without the prompt)."""
        for i, text in enumerate(texts):
            tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if tokens > self.max_input_tokens:
                raise InputTooLong(f"inputs[{i}]: {tokens} tokens, over this model's limit of {self.max_input_tokens} "
                                   "(max_input_tokens)")

    def predict(self, texts: list[str]) -> list[Answer]:
        if self.task == "classification":
            return core.classify(self.model, self.encoder, texts, self.labels, self.device, self.precision)
        return [(core.generate(self.model, self.tokenizer, self.encoder, t, self.device, self.precision), {}) for t in texts]

    def generate(self, text: str, max_new_tokens: int, on_text: Callable[[str], None]) -> str:
        """Greedy generation, calling `on_text` with each new piece of text as it is decoded."""
        from transformers import TextStreamer

        class _Pieces(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    on_text(text)

        streamer = _Pieces(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        return core.generate(self.model, self.tokenizer, self.encoder, text, self.device, self.precision, max_new_tokens, streamer)


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[Answer]


@dataclass
class Batcher:
    """Dynamic batching for one served model: inputs queue up; a batch leaves when it holds
    `max_batch` inputs or `max_wait_ms` after its first arrived, and runs on `executor`."""

    model: ServedModel
    executor: ThreadPoolExecutor
    max_batch: int
    max_wait_ms: float
    _queue: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ServingError(f"{self.model.key} was undeployed"))

    async def submit(self, texts: list[str]) -> list[Answer]:
        loop = asyncio.get_running_loop()
        pending = [_Pending(text, loop.create_future()) for text in texts]
        for item in pending:
            self._queue.put_nowait(item)
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Batch while busy: everything that queued up while the last batch ran leaves now,
            # so a lone request never waits and a loaded server runs full batches. With
            # max_wait_ms > 0 a batch that is not full also waits that long for more.
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_ms / 1000
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            try:
                answers = await loop.run_in_executor(self.executor, self.model.predict, [p.text for p in batch])
            except Exception as err:  # one bad batch fails its requests, not the batcher
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            for p, answer in zip(batch, answers):
                if not p.future.done():
                    p.future.set_result(answer)


@dataclass
class Deployed:
    model: ServedModel
    batcher: Batcher
    # What the gateway sent (kept on disk, so a restart loads the same thing).
    record: dict[str, Any]


class Serving:
    """The model versions this trainer serves, their batchers, and the answer cache."""

    def __init__(self, state_file: Path, max_batch: int, max_wait_ms: float, cache_entries: int):
        self.state_file = state_file
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.cache_entries = cache_entries
        self.deployed: dict[str, Deployed] = {}
        self._cache: OrderedDict[str, Answer] = OrderedDict()
        self._cache_lock = threading.Lock()
        # One inference thread: batches of different models take turns, as they would on one GPU.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve")
        self._loading: dict[str, asyncio.Lock] = {}

    def saved_records(self) -> list[dict[str, Any]]:
        """What was deployed here before a restart."""
        try:
            return list(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return []

    def _save_records(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(".part")
        partial.write_text(json.dumps([d.record for d in self.deployed.values()]))
        partial.replace(self.state_file)

    async def load(self, key: str, directory: Path, record: dict[str, Any], max_batch: int = 0, max_wait_ms: float = 0) -> ServedModel:
        """Load (or keep) version `key` from `directory`; remembered across restarts."""
        async with self._loading.setdefault(key, asyncio.Lock()):
            if key in self.deployed:
                return self.deployed[key].model
            model = await asyncio.get_running_loop().run_in_executor(self.executor, ServedModel, key, directory)
            batcher = Batcher(model, self.executor, max_batch or self.max_batch, max_wait_ms or self.max_wait_ms)
            batcher.start()
            self.deployed[key] = Deployed(model, batcher, {**record, "max_batch": max_batch, "max_wait_ms": max_wait_ms})
            self._save_records()
            log.info("serving %s (%.1f MiB, batches of up to %d within %.1f ms)", key, model.memory_mb, batcher.max_batch,
                     batcher.max_wait_ms)
            return model

    async def unload(self, key: str) -> bool:
        deployed = self.deployed.pop(key, None)
        if deployed is None:
            return False
        await deployed.batcher.stop()
        self._save_records()
        with self._cache_lock:
            for cached in [k for k in self._cache if k.startswith(f"{key}\n")]:
                del self._cache[cached]
        return True

    def model(self, key: str) -> Deployed:
        deployed = self.deployed.get(key)
        if deployed is None:
            raise ServingError(f"{key} is not deployed on this trainer")
        return deployed

    @staticmethod
    def cache_key(key: str, text: str) -> str:
        return f"{key}\n{hashlib.sha256(text.encode()).hexdigest()}"

    async def predict(self, key: str, texts: list[str]) -> list[tuple[Answer, bool]]:
        """(answer, from the cache) per input; InputTooLong for an input over the limit."""
        deployed = self.model(key)
        deployed.model.check(texts)
        answers: list[tuple[Answer, bool] | None] = [None] * len(texts)
        missing: list[int] = []
        with self._cache_lock:
            for i, text in enumerate(texts):
                hit = self._cache.get(self.cache_key(key, text))
                if hit is not None:
                    self._cache.move_to_end(self.cache_key(key, text))
                    answers[i] = (hit, True)
                else:
                    missing.append(i)
        if missing:
            computed = await deployed.batcher.submit([texts[i] for i in missing])
            with self._cache_lock:
                for i, answer in zip(missing, computed):
                    answers[i] = (answer, False)
                    if self.cache_entries:
                        self._cache[self.cache_key(key, texts[i])] = answer
                while len(self._cache) > self.cache_entries:
                    self._cache.popitem(last=False)
        return [a for a in answers if a is not None]

    def memory_mb(self) -> float:
        return sum(d.model.memory_mb for d in self.deployed.values())

    async def close(self) -> None:
        for deployed in self.deployed.values():
            await deployed.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
