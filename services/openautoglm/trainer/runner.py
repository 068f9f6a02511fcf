"""The trainer's gRPC-free core: runs trial jobs on this machine's slots and remembers them.

One job per slot, each in a worker thread (`core.run_trial`), or, when the trainer has several
GPUs (or `processes` says so), under torchrun with one process per GPU (`ddp.py`). Both paths
behave the same: progress, per-epoch intermediate scores for the pruner, a stop request from
the pruner, and the memory check before training. No gRPC and no NATS here: the servicer and
the app translate at the edge.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from openautoglm.common import sandbox, telemetry
from openautoglm.common.catalogue import REFERENCE_TOKENS_PER_SECOND
from openautoglm.common.net import free_port
from openautoglm.trainer import hardware
from openautoglm.trainer.core import TrialError, TrialJob, TrialResult, run_trial, warm_up
from openautoglm.trainer.loop import TrialInterrupted, TrialPruned

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int, float], None]
IntermediateCallback = Callable[[int, float], None]
# Trials asked to stop before they started here that are remembered (oldest forgotten first).
STOP_EARLY_LIMIT = 1024
# File a torchrun trial's ranks poll for a stop request from the pruner (ddp.py).
PRUNE_FLAG_FILE = "prune"


@dataclass(frozen=True)
class Capacity:
    """What this trainer offers the scheduler, and how much of it is in use."""

    trainer_id: str
    slots: int
    # Jobs held waiting beside the running ones, so the next starts the moment a slot frees.
    queue_slots: int
    memory_per_slot_mb: float
    device_kind: str
    busy: int
    # Training tokens/s of the fixed start-up benchmark per precision (core.measure_throughput);
    # empty until measured.
    tokens_per_second: dict[str, float] = field(default_factory=dict)

    @property
    def speed(self) -> float:
        """fp32 throughput relative to the reference trainer (1.0 until measured)."""
        measured = self.tokens_per_second.get("fp32", 0.0)
        return measured / REFERENCE_TOKENS_PER_SECOND if measured > 0 else 1.0


class TrialRunner:
    """Runs jobs, one per slot (more wait their turn at the slots' gate, so one is always ready
    to start when a slot frees); knows which trials run here and which were asked to stop."""

    def __init__(self, trainer_id: str, slots: int, memory_per_slot_mb: float, processes: int,
                 artifacts: Path, checkpoints: Path, queue_slots: int = 0, read_roots: tuple[Path, ...] = ()):
        self.trainer_id = trainer_id
        self.slots = slots
        self.queue_slots = queue_slots
        self._gate = asyncio.Semaphore(slots)
        # Announced per slot and held steady, so packing does not chase this trainer's own usage.
        self.memory_per_slot_mb = memory_per_slot_mb or hardware.free_memory_mb() / slots
        # Data-parallel processes per trial: every local GPU by default (DDP via torchrun).
        self.processes = processes or max(1, hardware.gpu_count())
        self.artifacts = artifacts
        # Folders a job's dataset and model paths may name (common/sandbox.py); none: built-ins only.
        self.read_roots = read_roots
        # On the shared data volume, so a job redelivered to another replica resumes too.
        self.checkpoints = checkpoints
        self.stop_event = threading.Event()
        # Every trial of a slot trains on the same long-lived thread. OpenMP (torch's CPU
        # threads) keeps one thread team per calling thread: once two live threads have run
        # torch's parallel kernels, every later step on either is about 2x slower (measured with
        # 2 threads on 2 cores), which `asyncio.to_thread`'s rotating pool threads would cause.
        self._training_threads = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="trial")
        self.busy = 0
        # Running trials' prune flags: set when the study's pruner asks to stop one.
        self.prune_flags: dict[str, threading.Event] = {}
        # Trials asked to stop before they started here (most recent last, bounded).
        self.stop_early: dict[str, None] = {}
        self.tokens_per_second: dict[str, float] = {}

    def start_warm_up(self) -> Future[None]:
        """Pay the one-time costs of training (`core.warm_up`) on the training thread, ahead of
        any job submitted after this call: the first trial then runs at full speed."""
        def warm() -> None:
            with tempfile.TemporaryDirectory(prefix="autoglm-warm-up-") as scratch:
                try:
                    self.tokens_per_second = warm_up(Path(scratch), stop=self.stop_event)
                except TrialInterrupted:
                    log.info("trainer %s stopped while warming up", self.trainer_id)
                    return
            log.info("trainer %s measured %s training tokens/s", self.trainer_id,
                     ", ".join(f"{p} {v:.0f}" for p, v in self.tokens_per_second.items()))

        return self._training_threads.submit(warm)

    def close(self) -> None:
        """Let the training threads go (after the running trials stopped)."""
        self._training_threads.shutdown(wait=False, cancel_futures=True)

    def capacity(self) -> Capacity:
        return Capacity(self.trainer_id, self.slots, self.queue_slots, self.memory_per_slot_mb, hardware.device_kind(), self.busy,
                        dict(self.tokens_per_second))

    def request_stop(self, trial_id: str) -> None:
        """Stop a running trial at its next step, or as soon as it starts here."""
        flag = self.prune_flags.get(trial_id)
        if flag is not None:
            flag.set()
            return
        self.stop_early[trial_id] = None
        while len(self.stop_early) > STOP_EARLY_LIMIT:
            self.stop_early.pop(next(iter(self.stop_early)))

    def check_paths(self, job: TrialJob) -> TrialJob:
        """The job with its dataset and model paths resolved inside the read roots; raises
        TrialError naming the field when one lies outside (before anything is opened)."""
        def checked(name: str, value: str) -> str:
            try:
                return str(sandbox.readable(value, self.read_roots)) if value else value
            except sandbox.OutsideRoots as err:
                raise TrialError(f"{name}: {err}") from None

        return replace(job, dataset_path=checked("dataset_path", job.dataset_path),
                       model_path=checked("model_path", job.model_path))

    def export_source(self, artifact_path: str) -> Path:
        """A trial artifact of this trainer's to export: only inside its artifact root."""
        return sandbox.inside(artifact_path, self.artifacts)

    def memory_budget_mb(self) -> float:
        """What one trial may use now: its slot's share of the free memory, at most the announced size."""
        return min(hardware.free_memory_mb() / self.slots, self.memory_per_slot_mb)

    async def run(self, job: TrialJob, on_progress: ProgressCallback,
                  on_intermediate: IntermediateCallback | None = None,
                  on_start: Callable[[], None] | None = None) -> TrialResult:
        """Train one job once a slot is free (`on_start` says when); the callbacks are called on
        the event loop. The slot is free again as soon as training ends. Raises TrialError,
        TrialInterrupted (trainer stopping) or TrialPruned (stopped by its study's pruner)."""
        job = self.check_paths(job)
        prune = self.prune_flags.setdefault(job.trial_id, threading.Event())
        if job.trial_id in self.stop_early:  # stopped while it still waited in this trainer's queue
            prune.set()
        try:
            async with self._gate:
                self.busy += 1
                try:
                    if on_start is not None:
                        on_start()
                    return await self._train(job, on_progress, on_intermediate, prune)
                finally:
                    self.busy -= 1
        finally:
            self.prune_flags.pop(job.trial_id, None)

    async def _train(self, job: TrialJob, on_progress: ProgressCallback, on_intermediate: IntermediateCallback | None,
                     prune: threading.Event) -> TrialResult:
        loop = asyncio.get_running_loop()

        def progress(step: int, total: int, loss: float) -> None:
            loop.call_soon_threadsafe(on_progress, step, total, loss)

        def intermediate(epoch: int, value: float) -> None:
            if on_intermediate is not None:
                loop.call_soon_threadsafe(on_intermediate, epoch, value)

        with telemetry.tracer().start_as_current_span("train") as span:
            span.set_attribute("openautoglm.trial_id", job.trial_id)
            span.set_attribute("openautoglm.processes", self.processes)
            if self.processes > 1:
                result = await self._run_distributed(job, on_progress, on_intermediate, prune)
            else:
                result = await loop.run_in_executor(self._training_threads, functools.partial(
                    run_trial, job, self.artifacts, progress, self.stop_event, self.checkpoints,
                    self.memory_budget_mb(), intermediate, prune,
                ))
            if result.resumed_from_step:
                log.info("trial %s resumed from its checkpoint at step %d", job.trial_id, result.resumed_from_step,
                         extra={"trial_id": job.trial_id})
            span.set_attribute("openautoglm.resumed_from_step", result.resumed_from_step)
            span.set_attribute("openautoglm.skipped_steps", result.skipped_steps)
            span.set_attribute("openautoglm.steps", result.steps)
            span.set_attribute("openautoglm.train_loss", result.train_loss)
            return result

    async def _run_distributed(self, job: TrialJob, on_progress: ProgressCallback,
                               on_intermediate: IntermediateCallback | None, prune: threading.Event) -> TrialResult:
        """Run the trial under torchrun (ddp.py). Rank 0 streams progress and intermediate
        scores as JSON lines on stdout; a prune request reaches every rank through a flag file
        that the ranks agree on each step, so they stop at the same step."""
        log.info("trial %s: data-parallel over %d processes (torchrun)", job.trial_id, self.processes,
                 extra={"trial_id": job.trial_id})
        with tempfile.TemporaryDirectory(prefix="autoglm-ddp-") as tmp:
            job_file, result_file, flag_file = Path(tmp, "job.json"), Path(tmp, "result.json"), Path(tmp, PRUNE_FLAG_FILE)
            job_file.write_text(json.dumps(asdict(job)))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.processes}",
                f"--master_port={free_port()}", "-m", "openautoglm.trainer.ddp", str(job_file), str(result_file),
                str(self.artifacts), str(self.checkpoints), f"{self.memory_budget_mb():.3f}", str(flag_file),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None and proc.stderr is not None
            watcher = asyncio.create_task(self._forward_stop(prune, flag_file))
            try:
                async for line in proc.stdout:
                    if not line.startswith(b"{"):
                        continue
                    report = json.loads(line)
                    if "epoch" in report:
                        if on_intermediate is not None:
                            on_intermediate(report["epoch"], report["value"])
                    else:
                        on_progress(report["step"], report["total"], report["loss"])
                stderr = (await proc.stderr.read()).decode(errors="replace")
                code = await proc.wait()
            except asyncio.CancelledError:
                proc.terminate()  # ranks stop; the checkpoint stays for the redelivered job
                await proc.wait()
                raise
            finally:
                watcher.cancel()
            if code != 0:
                raise _rank_error(stderr, code)
            return TrialResult(**json.loads(result_file.read_text()))

    async def _forward_stop(self, prune: threading.Event, flag_file: Path) -> None:
        """Turn the pruner's request (or this trainer stopping) into the ranks' flag file."""
        while not (prune.is_set() or self.stop_event.is_set()):
            await asyncio.sleep(0.1)
        flag_file.write_text("interrupted" if self.stop_event.is_set() and not prune.is_set() else "pruned")


def _rank_error(stderr: str, code: int) -> Exception:
    """The exception a failed torchrun run stands for: the ranks' own TrialError, TrialPruned or
    TrialInterrupted when one was raised, else a crash."""
    lines = stderr.splitlines()

    def last(name: str) -> str | None:
        found = [ln.split(f"{name}:", 1)[-1].strip() for ln in lines if f"{name}:" in ln]
        return found[-1] if found else None

    if (detail := last("TrialError")) is not None:
        return TrialError(detail)
    if (detail := last("TrialPruned")) is not None:  # "pruned at step N"
        words = detail.split()
        return TrialPruned(int(words[-1]) if words and words[-1].isdigit() else 0)
    if (detail := last("TrialInterrupted")) is not None:
        return TrialInterrupted(detail)
    return RuntimeError(f"torchrun exited with {code}: {stderr[-2000:]}")
