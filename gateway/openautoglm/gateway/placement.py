"""Placement: every running study's queued trials onto the trainers' free slots.

One packer serves all studies. It asks the scheduler to pack the queued trials (each with the
memory it needs, as the chain of its stages: `trial_stages`) around the trials already holding places (a trainer's slots plus the jobs it
holds waiting), records each placement, then publishes the trial's job on that trainer's own
subject. Packing is driven by events: trials queued, a place freed, a trainer joined or left
(which also checks every placement: trials placed on a trainer that is gone are re-queued, their
attempt counting up, and placed again). A slow timer repeats the full check in case an event was
lost.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import context as otel_context

from openautoglm.common import subjects, telemetry
from openautoglm.common.spec.protos import trial_model
from openautoglm.common.subjects import POOL_EVALUATOR, BusUnavailable
from openautoglm.gateway.cost_model import TrialCosts, trial_shape
from openautoglm.gateway.peers import Bus, PeerError, Peers
from openautoglm.gateway.store import StudyStore
from openautoglm.v1 import common_pb2, events_pb2, scheduler_pb2, trainer_pb2

log = logging.getLogger(__name__)
S = common_pb2
RPC_DEADLINE = 30.0
# The full check runs at least this often, so a lost event only delays placement.
SAFETY_INTERVAL_SECONDS = 30.0
# After a failed pack (the scheduler unreachable, say), the next try comes this soon.
RETRY_SECONDS = 1.0
# Seconds an export (a registration's model files and ONNX) holds its trainer, until measured.
EXPORT_SECONDS = 10.0
# A trial's training is split into at most this many stages (one per pruner rung, an epoch each).
MAX_RUNGS = 16


@dataclass(frozen=True)
class Export:
    """The export of a study's best (a model registration) running on the trainer that holds the
    model: it holds a place there until it ends, so no trial is packed into it meanwhile."""

    task_id: str
    trainer_id: str
    study_id: str


def trial_stages(trial: common_pb2.Trial, spec: common_pb2.StudySpec, seconds: float,
                 score_seconds: float) -> tuple[list[scheduler_pb2.Task], list[scheduler_pb2.Dependency]]:
    """A queued trial as the scheduler should see it: its training split at the pruner's rungs
    (one per epoch when the study prunes; the first stage, under the trial's own id, also
    prepares and tokenises the data, and is what a placement dispatches), then its scoring on
    the evaluator pool. The later stages follow the first: the trainer runs the rungs back to
    back on the slot it got (the pruner may stop it at one), then sends its predictions to an
    evaluator while that slot takes the next trial."""
    rungs = 1
    if spec.pruner not in ("", "none"):
        rungs = max(1, min(MAX_RUNGS, round(trial_shape(spec, trial.candidate).epochs)))
    tasks = [scheduler_pb2.Task(id=trial.id if r == 0 else f"{trial.id}#r{r + 1}", kind="train", study_id=trial.study_id,
                                trial_id=trial.id, compute_seconds=seconds / rungs, memory_mb=trial.memory_mb)
             for r in range(rungs)]
    tasks.append(scoring_stage(trial, score_seconds))
    return tasks, [scheduler_pb2.Dependency(from_task=a.id, to_task=b.id) for a, b in zip(tasks, tasks[1:])]


def scoring_stage(trial: common_pb2.Trial, score_seconds: float) -> scheduler_pb2.Task:
    """A trial's last stage: its predictions scored on the evaluator pool."""
    return scheduler_pb2.Task(id=f"{trial.id}#score", kind="evaluate", pool=POOL_EVALUATOR, study_id=trial.study_id,
                              trial_id=trial.id, compute_seconds=score_seconds)


def job_for(study: common_pb2.Study, trial: common_pb2.Trial) -> trainer_pb2.TrainJob:
    """The trainer's job for a trial: the study's data, model and objective with the trial's
    candidate, and its seed (a final repeat's is offset; it reports no intermediate scores, as
    no pruner judges it)."""
    return trainer_pb2.TrainJob(
        study_id=study.id, trial_id=trial.id, task=study.spec.task, dataset=study.spec.dataset,
        model=trial_model(study.spec, trial.candidate), candidate=trial.candidate,
        seed=study.spec.seed + trial.seed_offset,
        training=study.spec.training,
        report_intermediate=study.spec.pruner not in ("", "none") and not trial.repeat_of,
        objective=study.spec.objective, extra_objectives=study.spec.extra_objectives,
    )


class Packer:
    def __init__(self, store: StudyStore, bus: Bus, peers: Peers, study_context: Callable[[str], otel_context.Context],
                 notify: Callable[[str, str, str], None], costs: TrialCosts,
                 exports: Callable[[], list[Export]] | None = None):
        self.store = store
        self.exports = exports or list  # the exports running now, each holding a trainer's place
        self.costs = costs  # each trial's predicted seconds: what the scheduler orders and places by
        self.bus = bus
        self.peers = peers
        self.study_context = study_context
        self.notify = notify
        self.tracer = telemetry.tracer("openautoglm.gateway")
        self._lock = asyncio.Lock()
        self._repack = asyncio.Event()
        self._check_placements = True
        self._task: asyncio.Task[None] | None = None
        self._unfit_logged: set[str] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="packer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def request(self, check_placements: bool = False) -> None:
        """Something changed (a place freed; with `check_placements`, a trainer joined or left):
        pack again soon."""
        self._check_placements |= check_placements
        self._repack.set()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._repack.wait(), timeout=SAFETY_INTERVAL_SECONDS)
            except asyncio.TimeoutError:
                self._check_placements = True
            self._repack.clear()
            try:
                await self.pack()
            except asyncio.CancelledError:
                raise
            except (PeerError, BusUnavailable) as err:
                log.warning("packing deferred: %s", err)
                self._retry_soon()
            except Exception:
                log.exception("packing failed; trying again shortly")
                self._retry_soon()

    def _retry_soon(self) -> None:
        asyncio.get_running_loop().call_later(RETRY_SECONDS, self._repack.set)

    async def pack(self) -> None:
        """Place what fits now; re-queue trials whose trainer is gone and place them again."""
        async with self._lock:
            for _ in range(2):  # a second round places the trials re-queued by the first
                if not await self._pack_once():
                    return

    async def _pack_once(self) -> bool:
        """One Pack call, when there is work to place or placements to check; returns True when
        trials were re-queued (pack again)."""
        active = self.store.trials_of_running_studies(S.TRIAL_STATUS_QUEUED, S.TRIAL_STATUS_TRAINING)
        pending = [t for t in active if t.status == S.TRIAL_STATUS_QUEUED and not t.assigned_worker_id]
        running = [t for t in active if t.assigned_worker_id]
        checking, self._check_placements = self._check_placements, False
        if not pending and not (checking and running):
            return False
        exporting = [e for e in self.exports() if e.trainer_id]
        specs: dict[str, common_pb2.StudySpec] = {}
        for t in pending:
            if t.study_id not in specs:
                header = self.store.header(t.study_id)
                specs[t.study_id] = header.spec if header is not None else common_pb2.StudySpec()
        stages: list[scheduler_pb2.Task] = []
        dependencies: list[scheduler_pb2.Dependency] = []
        # Each queued trial's predicted seconds on the reference trainer, scaled to its trainer once placed.
        reference = {t.id: self.costs.predict(specs[t.study_id], t.candidate) for t in pending}
        for t in pending:
            tasks, edges = trial_stages(t, specs[t.study_id], reference[t.id].seconds, self.costs.scoring_seconds(t.study_id))
            stages += tasks
            dependencies += edges
        for t in running:  # still to come of a placed trial: its scoring, after its training
            stages.append(scoring_stage(t, self.costs.scoring_seconds(t.study_id)))
            dependencies.append(scheduler_pb2.Dependency(from_task=t.id, to_task=stages[-1].id))
        try:
            reply = await self.peers.scheduler.Pack(scheduler_pb2.PackRequest(
                pending=stages,
                running=[scheduler_pb2.Assignment(task_id=t.id, worker_id=t.assigned_worker_id) for t in running]
                + [scheduler_pb2.Assignment(task_id=e.task_id, worker_id=e.trainer_id) for e in exporting],
                running_work=[scheduler_pb2.Task(id=t.id, kind="train", study_id=t.study_id, trial_id=t.id,
                                                 compute_seconds=t.predicted_seconds * (t.worker_speed or 1.0))
                              for t in running]
                + [scheduler_pb2.Task(id=e.task_id, kind="export", study_id=e.study_id, compute_seconds=EXPORT_SECONDS)
                   for e in exporting],
                dependencies=dependencies,
            ), timeout=RPC_DEADLINE)
        except BaseException:
            self._check_placements |= checking  # not done: the next pack checks them
            raise
        by_id = {t.id: t for t in active}
        for trial_id in reply.unfit_task_ids:
            if trial_id not in self._unfit_logged:
                self._unfit_logged.add(trial_id)
                biggest = max((w.memory_mb for w in reply.workers if w.pool != POOL_EVALUATOR), default=0.0)
                log.warning("trial %s needs %.0f MiB; no live trainer has a slot that large (largest %.0f MiB): it waits",
                            trial_id, by_id[trial_id].memory_mb, biggest, extra={"trial_id": trial_id})
        speeds = {w.id: w.speed or 1.0 for w in reply.workers}
        for placement in reply.placements:
            trial = by_id[placement.task_id]
            trial.assigned_worker_id = placement.worker_id
            trial.worker_speed = speeds.get(placement.worker_id, 1.0)
            predicted = reference[trial.id].on(trial.worker_speed)
            trial.predicted_seconds, trial.predicted_seconds_sd = predicted.seconds, predicted.sd
            self.store.save_trial(trial)  # recorded before published: a crash in between re-publishes
            self._unfit_logged.discard(trial.id)
            study = self.store.header(trial.study_id)
            assert study is not None  # a running study's trial
            with self.tracer.start_as_current_span("place", context=self.study_context(study.id)) as span:
                span.set_attribute("openautoglm.trial_id", trial.id)
                span.set_attribute("openautoglm.worker_id", placement.worker_id)
                span.set_attribute("openautoglm.attempt", trial.attempt)
                span.set_attribute("openautoglm.memory_mb", trial.memory_mb)
                await self.publish_or_unplace(study, trial)
            log.info("trial %s placed on %s", trial.id, placement.worker_id, extra={"study_id": study.id, "trial_id": trial.id})
        gone_workers = set()
        orphaned = [by_id[task_id] for task_id in reply.orphaned_task_ids if task_id in by_id]  # not exports
        for trial in orphaned:
            gone_workers.add(trial.assigned_worker_id)
            log.warning("trial %s: trainer %s is gone; placing it again", trial.id, trial.assigned_worker_id,
                        extra={"study_id": trial.study_id, "trial_id": trial.id})
            trial.status, trial.assigned_worker_id, trial.trainer_id = S.TRIAL_STATUS_QUEUED, "", ""
            trial.attempt += 1
            self.store.save_trial(trial)
            self.notify(trial.study_id, "trial.queued", trial.id)
        for worker_id in gone_workers:
            # Its queue must not replay these jobs if the trainer comes back under the same id.
            with contextlib.suppress(Exception):
                await self.bus.purge_jobs(worker_id)
        return bool(orphaned)

    async def publish_or_unplace(self, study: common_pb2.Study, trial: common_pb2.Trial) -> None:
        """Publish a placed trial's job; if NATS cannot take it now, take the placement back (the
        trial waits for the next pack, which comes soon) and raise BusUnavailable."""
        try:
            await self.publish_job(study, trial)
        except BusUnavailable:
            trial.assigned_worker_id = ""
            self.store.save_trial(trial)
            self._retry_soon()
            raise

    async def publish_job(self, study: common_pb2.Study, trial: common_pb2.Trial) -> None:
        """Enqueue a placed trial's job on its trainer's subject (the id, per attempt,
        de-duplicates a repeat within the window)."""
        job = job_for(study, trial)
        await self.bus.publish(subjects.train_subject(trial.assigned_worker_id), events_pb2.TrainJobEvent(
            meta=subjects.new_meta("gateway", study.id, trial.id, event_id=f"train-{trial.id}-a{trial.attempt}"), job=job),
            ctx=self.study_context(study.id))

    async def request_stop(self, study_id: str, trial_id: str, reason: str) -> None:
        """Ask the trainer that has the trial to stop it (now, or as soon as it starts it)."""
        request = events_pb2.TrialStopRequest(meta=subjects.new_meta("gateway", study_id, trial_id), reason=reason)
        with contextlib.suppress(Exception):
            await self.bus.notify(subjects.SUBJECT_STOP, request)
