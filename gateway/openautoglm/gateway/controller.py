"""The study controller: drives each study from creation to its best candidate.

A driver task per running study keeps up to `slots` trials in flight: it asks the
prompt-generator for candidates and records them as queued trials. One packer, shared by all
studies, then asks the scheduler to pack every study's queued trials onto the trainers' free
slots (memory per slot, concurrent slots) and publishes each placed trial's job on that trainer's
own subject (`autoglm.trial.train.<trainer id>`). It packs again whenever work arrives or leaves a
slot, when the scheduler announces that a trainer joined, left or failed
(`autoglm.cluster.changed`), and every few seconds regardless; trials placed on a trainer that
is gone are re-queued and placed elsewhere (their attempt counts up). Trial events
from the trainers (progress, trained, failed) arrive on a durable JetStream consumer; a trained
trial is scored by the evaluator and its objective fed back to the prompt-generator. State lives
in the StudyStore after every step, so a restarted gateway resumes running studies, and every
handler is idempotent (an event for a finished trial is acknowledged and ignored).

Tracing: CreateStudy opens the study's root span; its context is stored with the study and is
the parent of every dispatch, so all five services' spans for a study share one trace id.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import grpc
from opentelemetry import trace

from openautoglm.common import events, telemetry
from openautoglm.common.resources import estimate_trial_memory_mb
from openautoglm.common.catalogue import DEFAULT_HYPERPARAMETERS
from openautoglm.common.spec.protos import maximize, param_from_proto
from openautoglm.gateway.store import StudyStore, now_ts
from openautoglm.v1 import (
    common_pb2,
    evaluator_pb2,
    events_pb2,
    prompt_generator_pb2,
    scheduler_pb2,
    trainer_pb2,
)

log = logging.getLogger(__name__)
S = common_pb2
IN_FLIGHT = (S.TRIAL_STATUS_QUEUED, S.TRIAL_STATUS_TRAINING, S.TRIAL_STATUS_EVALUATING)
TERMINAL_TRIAL = (S.TRIAL_STATUS_SUCCEEDED, S.TRIAL_STATUS_FAILED, S.TRIAL_STATUS_CANCELLED, S.TRIAL_STATUS_PRUNED)
TERMINAL_STUDY = (S.STUDY_STATE_COMPLETED, S.STUDY_STATE_FAILED, S.STUDY_STATE_CANCELLED)
STATE_SUBJECT = {
    S.STUDY_STATE_RUNNING: "running",
    S.STUDY_STATE_COMPLETED: "completed",
    S.STUDY_STATE_FAILED: "failed",
    S.STUDY_STATE_CANCELLED: "cancelled",
}
RPC_DEADLINE = 30.0
# How long a reading of the trainers' total slots is reused before asking the scheduler again.
CAPACITY_TTL_SECONDS = 5.0
EVALUATE_DEADLINE = 120.0
# The packer runs at least this often, so a lost cluster event only delays placement.
PACK_INTERVAL_SECONDS = 2.0


def trial_memory_mb(spec: common_pb2.StudySpec, candidate: common_pb2.Candidate) -> float:
    """What one trial needs on its trainer: the study's statement, else the estimate."""
    if spec.training.memory_mb > 0:
        return spec.training.memory_mb
    batch = candidate.hyperparameters.get("batch_size")
    batch_size = int(param_from_proto(batch) or 0) if batch is not None else 0
    return estimate_trial_memory_mb(spec.model.builtin, spec.model.path, spec.model.tuning, batch_size,
                                    spec.training.max_length)


def largest_trial_memory_mb(spec: common_pb2.StudySpec) -> float:
    """The need of the study's largest trial (its largest batch size)."""
    largest = 0
    for hp in spec.search_space.hyperparameters:
        if hp.name == "batch_size":
            if hp.WhichOneof("domain") == "choice":
                largest = max(int(param_from_proto(v) or 0) for v in hp.choice.values)
            elif hp.WhichOneof("domain") == "int_range":
                largest = int(hp.int_range.high)
    return trial_memory_mb(spec, common_pb2.Candidate(hyperparameters={"batch_size": common_pb2.ParamValue(integer=largest)}))


def trial_compute_seconds(candidate: common_pb2.Candidate) -> float:
    """A relative cost for the scheduler's ordering: proportional to the epochs trained."""
    epochs = candidate.hyperparameters.get("epochs")
    return 2.0 * max(int(param_from_proto(epochs) or 1) if epochs is not None else DEFAULT_HYPERPARAMETERS["epochs"], 1)


class Peers:
    """Client stubs of the services the gateway calls (one channel each, traced)."""

    def __init__(self, prompt_generator, scheduler, evaluator, trainer=None):
        self.prompt_generator = prompt_generator
        self.scheduler = scheduler
        self.evaluator = evaluator
        self.trainer = trainer  # optional: only ExportBest needs it


def pareto_front(study: common_pb2.Study) -> list[str]:
    """Ids of the succeeded trials that no other succeeded trial beats on every objective."""
    objectives = [study.spec.objective, *study.spec.extra_objectives]
    signs = [1.0 if maximize(o) else -1.0 for o in objectives]
    points = [(t.id, [s * v for s, v in zip(signs, [t.objective_value, *t.extra_objective_values])])
              for t in study.trials if t.status == S.TRIAL_STATUS_SUCCEEDED]

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [tid for tid, p in points if not any(dominates(q, p) for other, q in points if other != tid)]


class StudyController:
    def __init__(self, store: StudyStore, js, peers: Peers, nc=None):
        self.store = store
        self.js = js
        self.nc = nc  # core NATS, for stop requests to trainers
        self.peers = peers
        self.tracer = telemetry.tracer("openautoglm.gateway")
        self._drivers: dict[str, asyncio.Task] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, set[asyncio.Queue]] = {}
        self._root_spans: dict[str, trace.Span] = {}
        self._capacity: tuple[float, int] = (0.0, 0)
        self._pack_lock = asyncio.Lock()
        self._repack = asyncio.Event()
        self._packer: asyncio.Task | None = None
        self._unfit_logged: set[str] = set()

    # --- lifecycle -----------------------------------------------------------------------------
    async def create(self, spec: common_pb2.StudySpec, request_id: str,
                     priors: common_pb2.PriorTrials | None = None) -> common_pb2.Study:
        if request_id:
            existing = self.store.study_by_request(request_id)
            if existing:
                return self.store.study(existing)
        study_id = "st-" + uuid.uuid4().hex[:12]
        root = self.tracer.start_span("study", attributes={"openautoglm.study_id": study_id, "openautoglm.strategy": spec.strategy})
        study = common_pb2.Study(
            id=study_id, spec=spec, state=S.STUDY_STATE_RUNNING, trace_id=telemetry.trace_id_hex(root),
            created_at=now_ts(), updated_at=now_ts(),
        )
        self.store.insert_study(study, request_id, telemetry.traceparent_of(root), priors)
        self._root_spans[study_id] = root
        ctx = trace.set_span_in_context(root)
        for state in ("created", "running"):
            await events.publish(self.js, events.study_subject(state), events_pb2.StudyEvent(
                meta=events.new_meta("gateway", study_id, event_id=f"{study_id}-{state}"), state=study.state), ctx=ctx)
        log.info("study %s created (%s, %d trials)", study_id, spec.strategy, spec.budget.max_trials, extra={"study_id": study_id})
        self._start_driver(study_id)
        return study

    def start_packer(self) -> None:
        self._packer = asyncio.create_task(self._pack_loop(), name="packer")

    def request_pack(self) -> None:
        """Something changed (a slot freed, a trainer joined or left): pack again soon."""
        self._repack.set()

    async def on_cluster_changed(self, msg) -> None:
        with contextlib.suppress(Exception):
            change = events_pb2.ClusterChanged.FromString(msg.data)
            log.info("cluster changed: joined %s, left %s; %d trainers live", list(change.joined),
                     list(change.left), len(change.workers))
            self._capacity = (0.0, 0)  # re-read the slot count at the next dispatch
        self.request_pack()

    def resume_running(self) -> None:
        """After a restart: drive every study the store says is still running."""
        for study_id in self.store.studies_in_state(S.STUDY_STATE_RUNNING):
            log.info("resuming study %s", study_id, extra={"study_id": study_id})
            self._start_driver(study_id, resumed=True)

    async def cancel(self, study_id: str) -> common_pb2.Study | None:
        study = self.store.study(study_id)
        if study is None or study.state in TERMINAL_STUDY:
            return study
        for trial in study.trials:
            if trial.status in IN_FLIGHT:
                placed = bool(trial.assigned_worker_id)
                trial.status = S.TRIAL_STATUS_CANCELLED
                trial.finished_at.CopyFrom(now_ts())
                self.store.save_trial(trial)
                if placed:  # free its trainer slot for other studies' work
                    await self._request_stop(study.id, trial.id, "study cancelled")
        await self._finish(study_id, S.STUDY_STATE_CANCELLED, "cancelled by request")
        self.request_pack()
        return self.store.study(study_id)

    async def stop(self) -> None:
        tasks = [*self._drivers.values(), *([self._packer] if self._packer else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start_driver(self, study_id: str, resumed: bool = False) -> None:
        self._wakeups[study_id] = asyncio.Event()
        self._drivers[study_id] = asyncio.create_task(self._drive(study_id, resumed), name=f"drive-{study_id}")

    def _wake(self, study_id: str) -> None:
        event = self._wakeups.get(study_id)
        if event is not None:
            event.set()

    def _study_context(self, study_id: str):
        root = self._root_spans.get(study_id)
        if root is not None:
            return trace.set_span_in_context(root)
        traceparent, _ = self.store.trace_info(study_id)
        return telemetry.extract_context({"traceparent": traceparent})

    # --- the driver ---------------------------------------------------------------------------
    async def _drive(self, study_id: str, resumed: bool = False) -> None:
        ctx = self._study_context(study_id)
        _, started = self.store.trace_info(study_id)
        exhausted = False
        try:
            if resumed:
                # A crash between recording trials and enqueueing their jobs must not strand
                # them: enqueue every still-queued trial again (de-duplicated by job id).
                study = self.store.study(study_id)
                for trial in study.trials:
                    if trial.status == S.TRIAL_STATUS_QUEUED and trial.assigned_worker_id:
                        await self._publish_job(study, trial)
            while True:
                study = self.store.study(study_id)
                if study.state in TERMINAL_STUDY:
                    return
                budget = study.spec.budget
                trials = list(study.trials)
                in_flight = [t for t in trials if t.status in IN_FLIGHT]
                out_of_time = budget.max_wall_seconds > 0 and time.time() - started > budget.max_wall_seconds
                can_propose = not exhausted and not out_of_time and len(trials) < budget.max_trials
                if not in_flight and not can_propose:
                    succeeded = [t for t in trials if t.status == S.TRIAL_STATUS_SUCCEEDED]
                    if succeeded:
                        await self._finish(study_id, S.STUDY_STATE_COMPLETED)
                    else:
                        await self._finish(study_id, S.STUDY_STATE_FAILED, "no trial succeeded")
                    return
                if can_propose:
                    try:
                        exhausted = await self._dispatch(study, len(in_flight), ctx)
                    except grpc.aio.AioRpcError as err:
                        if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                            await self._finish(study_id, S.STUDY_STATE_FAILED, f"{err.code().name}: {err.details()}")
                            return
                        log.warning("dispatch for %s deferred: %s %s", study_id, err.code().name, err.details(), extra={"study_id": study_id})
                wakeup = self._wakeups[study_id]
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=1.0)
                wakeup.clear()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug: fail the study loudly rather than hang it
            log.exception("driver for %s crashed", study_id, extra={"study_id": study_id})
            await self._finish(study_id, S.STUDY_STATE_FAILED, f"internal error: {err}")

    async def _slots(self, study: common_pb2.Study) -> int:
        if study.spec.budget.parallelism > 0:
            return study.spec.budget.parallelism
        read_at, slots = self._capacity
        if time.monotonic() - read_at > CAPACITY_TTL_SECONDS or slots == 0:
            reply = await self.peers.scheduler.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=RPC_DEADLINE)
            slots = sum(w.slots for w in reply.workers)
            self._capacity = (time.monotonic(), slots)
        return slots

    async def _dispatch(self, study: common_pb2.Study, in_flight: int, ctx) -> bool:
        """Propose and record trials for the free slots, then pack; returns True when the space is exhausted."""
        slots = await self._slots(study)
        free = min(slots - in_flight, study.spec.budget.max_trials - len(study.trials))
        if free <= 0:
            return False
        with self.tracer.start_as_current_span("dispatch", context=ctx) as span:
            reply = await self.peers.prompt_generator.Propose(
                prompt_generator_pb2.ProposeRequest(study_id=study.id, spec=study.spec, count=free,
                                                    prior_trials=self.store.priors(study.id).trials,
                                                    known_candidate_ids=[t.candidate.id for t in study.trials]),
                timeout=RPC_DEADLINE
            )
            span.set_attribute("openautoglm.proposed", len(reply.candidates))
            if reply.render_cache_lookups:
                span.set_attribute("openautoglm.render_cache_hit_rate", reply.render_cache_hits / reply.render_cache_lookups)
            if not reply.candidates:
                return reply.exhausted
            number = len(study.trials)
            for candidate in reply.candidates:
                trial = common_pb2.Trial(
                    id=f"{study.id}-t{number:03d}", study_id=study.id, number=number, candidate=candidate,
                    status=S.TRIAL_STATUS_QUEUED, created_at=now_ts(),
                    memory_mb=trial_memory_mb(study.spec, candidate),
                )
                self.store.insert_trial(trial)
                self._notify(study.id, "trial.queued")
                number += 1
            await self.pack()  # in this span: the scheduler's pack joins the study's trace
            return reply.exhausted

    async def _publish_job(self, study: common_pb2.Study, trial: common_pb2.Trial) -> None:
        """Enqueue a placed trial's job on its trainer's subject (the id, per attempt,
        de-duplicates a repeat within the window)."""
        job = trainer_pb2.TrainJob(
            study_id=study.id, trial_id=trial.id, task=study.spec.task, dataset=study.spec.dataset,
            model=study.spec.model, candidate=trial.candidate, seed=study.spec.seed, training=study.spec.training,
            report_intermediate=study.spec.pruner not in ("", "none"),
        )
        await events.publish(self.js, events.train_subject(trial.assigned_worker_id), events_pb2.TrainJobEvent(
            meta=events.new_meta("gateway", study.id, trial.id, event_id=f"train-{trial.id}-a{trial.attempt}"), job=job),
            ctx=self._study_context(study.id))

    # --- packing: every study's queued trials onto the trainers' free slots -------------------
    async def _pack_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._repack.wait(), timeout=PACK_INTERVAL_SECONDS)
            self._repack.clear()
            try:
                await self.pack()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as err:
                log.warning("packing deferred: %s %s", err.code().name, err.details())
            except Exception:
                log.exception("packing failed; trying again shortly")

    async def pack(self) -> None:
        """Place what fits now; re-queue trials whose trainer is gone and place them again."""
        async with self._pack_lock:
            for _ in range(2):  # a second round places the trials re-queued by the first
                if not await self._pack_once():
                    return

    async def _pack_once(self) -> bool:
        """One Pack call; returns True when trials were re-queued (pack again)."""
        active = self.store.trials_of_running_studies(S.TRIAL_STATUS_QUEUED, S.TRIAL_STATUS_TRAINING)
        pending = [t for t in active if t.status == S.TRIAL_STATUS_QUEUED and not t.assigned_worker_id]
        running = [t for t in active if t.assigned_worker_id]
        if not pending and not running:
            return False
        reply = await self.peers.scheduler.Pack(scheduler_pb2.PackRequest(
            pending=[scheduler_pb2.Task(id=t.id, kind="train", compute_seconds=trial_compute_seconds(t.candidate),
                                        memory_mb=t.memory_mb, study_id=t.study_id, trial_id=t.id) for t in pending],
            running=[scheduler_pb2.Assignment(task_id=t.id, worker_id=t.assigned_worker_id) for t in running],
        ), timeout=RPC_DEADLINE)
        by_id = {t.id: t for t in active}
        for trial_id in reply.unfit_task_ids:
            if trial_id not in self._unfit_logged:
                self._unfit_logged.add(trial_id)
                biggest = max((w.memory_mb for w in reply.workers), default=0.0)
                log.warning("trial %s needs %.0f MiB; no live trainer has a slot that large (largest %.0f MiB): it waits",
                            trial_id, by_id[trial_id].memory_mb, biggest, extra={"trial_id": trial_id})
        for placement in reply.placements:
            trial = by_id[placement.task_id]
            trial.assigned_worker_id = placement.worker_id
            self.store.save_trial(trial)  # recorded before published: a crash in between re-publishes
            self._unfit_logged.discard(trial.id)
            study = self.store.study(trial.study_id, with_trials=False)
            with self.tracer.start_as_current_span("place", context=self._study_context(study.id)) as span:
                span.set_attribute("openautoglm.trial_id", trial.id)
                span.set_attribute("openautoglm.worker_id", placement.worker_id)
                span.set_attribute("openautoglm.attempt", trial.attempt)
                span.set_attribute("openautoglm.memory_mb", trial.memory_mb)
                await self._publish_job(study, trial)
            log.info("trial %s placed on %s", trial.id, placement.worker_id, extra={"study_id": study.id, "trial_id": trial.id})
        gone_workers = set()
        for trial_id in reply.orphaned_task_ids:
            trial = by_id[trial_id]
            gone_workers.add(trial.assigned_worker_id)
            log.warning("trial %s: trainer %s is gone; placing it again", trial.id, trial.assigned_worker_id,
                        extra={"study_id": trial.study_id, "trial_id": trial.id})
            trial.status, trial.assigned_worker_id, trial.trainer_id = S.TRIAL_STATUS_QUEUED, "", ""
            trial.attempt += 1
            self.store.save_trial(trial)
            self._notify(trial.study_id, "trial.queued")
        for worker_id in gone_workers:
            # Its queue must not replay these jobs if the trainer comes back under the same id.
            with contextlib.suppress(Exception):
                await self.js.purge_stream(events.JOBS_STREAM.name, subject=events.train_subject(worker_id))
        return bool(reply.orphaned_task_ids)

    async def _finish(self, study_id: str, state: int, error: str = "") -> None:
        study = self.store.study(study_id)
        if study.state in TERMINAL_STUDY:
            return
        study.state = state
        study.error = error
        best = self._best(study)
        study.best_trial_id = best.id if best else ""
        study.pareto_trial_ids[:] = pareto_front(study) if study.spec.extra_objectives else []
        self.store.save_study(study)
        ctx = self._study_context(study_id)
        await events.publish(self.js, events.study_subject(STATE_SUBJECT[state]), events_pb2.StudyEvent(
            meta=events.new_meta("gateway", study_id, event_id=f"{study_id}-{STATE_SUBJECT[state]}"),
            state=state, best_trial_id=study.best_trial_id, error=error), ctx=ctx)
        root = self._root_spans.pop(study_id, None)
        if root is not None:
            root.set_attribute("openautoglm.state", common_pb2.StudyState.Name(state))
            root.set_attribute("openautoglm.best_trial_id", study.best_trial_id)
            root.end()
        log.info("study %s %s%s", study_id, STATE_SUBJECT[state], f": {error}" if error else "", extra={"study_id": study_id})
        self._notify(study_id, f"study.{STATE_SUBJECT[state]}")

    @staticmethod
    def _best(study: common_pb2.Study) -> common_pb2.Trial | None:
        done = [t for t in study.trials if t.status == S.TRIAL_STATUS_SUCCEEDED]
        if not done:
            return None
        key = (lambda t: t.objective_value) if maximize(study.spec.objective) else (lambda t: -t.objective_value)
        return max(done, key=key)

    # --- trial events -------------------------------------------------------------------------
    async def on_trial_event(self, msg, ctx) -> None:
        """Handler of the gateway's durable consumer (progress, trained, failed)."""
        if msg.subject == events.SUBJECT_PROGRESS:
            await self._on_progress(events_pb2.TrialProgressEvent.FromString(msg.data))
            return
        with self.tracer.start_as_current_span(f"gateway.{msg.subject.rsplit('.', 1)[-1]}", context=ctx):
            if msg.subject == events.SUBJECT_TRAINED:
                await self._on_trained(events_pb2.TrialTrainedEvent.FromString(msg.data))
            elif msg.subject == events.SUBJECT_PRUNED:
                await self._on_pruned(events_pb2.TrialPrunedEvent.FromString(msg.data))
            elif msg.subject == events.SUBJECT_FAILED:
                await self._on_failed(events_pb2.TrialFailedEvent.FromString(msg.data))

    async def on_give_up(self, msg, err: Exception) -> None:
        """A trial event that could not be handled after every redelivery: fail the trial."""
        if msg.subject == events.SUBJECT_PROGRESS:
            return
        decoder = {events.SUBJECT_TRAINED: events_pb2.TrialTrainedEvent, events.SUBJECT_PRUNED: events_pb2.TrialPrunedEvent}
        event = decoder.get(msg.subject, events_pb2.TrialFailedEvent).FromString(msg.data)
        found = self._live_trial(event.meta.trial_id)
        if found is not None:
            await self._fail_trial(*found, f"could not record {msg.subject.rsplit('.', 1)[-1]} result: {err!r}", announce=True)

    def _live_trial(self, trial_id: str) -> tuple[common_pb2.Study, common_pb2.Trial] | None:
        trial = self.store.trial(trial_id)
        if trial is None or trial.status in TERMINAL_TRIAL:
            return None
        study = self.store.study(trial.study_id, with_trials=False)
        if study is None or study.state in TERMINAL_STUDY:
            return None
        return study, trial

    async def _on_progress(self, event: events_pb2.TrialProgressEvent) -> None:
        found = self._live_trial(event.meta.trial_id)
        if found is None:
            return
        study, trial = found
        if trial.status == S.TRIAL_STATUS_EVALUATING:
            return
        if not trial.assigned_worker_id or event.progress.trainer_id not in ("", trial.assigned_worker_id):
            return  # from an earlier placement, on a trainer that was given up on
        trial.status = S.TRIAL_STATUS_TRAINING
        trial.trainer_id = event.progress.trainer_id
        if event.progress.step:
            trial.train_loss = event.progress.loss
        if event.progress.has_intermediate:
            trial.metrics["intermediate_score"] = event.progress.intermediate_value
        self.store.save_trial(trial)
        self._notify(study.id, "trial.progress")
        if event.progress.has_intermediate and study.spec.pruner not in ("", "none"):
            await self._maybe_prune(study, trial, event.progress)

    async def _maybe_prune(self, study, trial, progress) -> None:
        """Ask the study's pruner about an epoch's score; tell the trainer to stop if so."""
        try:
            reply = await self.peers.prompt_generator.ReportIntermediate(prompt_generator_pb2.ReportIntermediateRequest(
                study_id=study.id, candidate_id=trial.candidate.id, step=progress.epoch, value=progress.intermediate_value,
            ), timeout=RPC_DEADLINE)
        except grpc.aio.AioRpcError as err:
            log.warning("intermediate report for %s not delivered: %s", trial.id, err.code().name)
            return
        if reply.should_prune and self.nc is not None:
            log.info("pruning trial %s after epoch %d (score %.4f)", trial.id, progress.epoch, progress.intermediate_value,
                     extra={"study_id": study.id, "trial_id": trial.id})
            await self._request_stop(study.id, trial.id, f"pruned after epoch {progress.epoch}")

    async def _request_stop(self, study_id: str, trial_id: str, reason: str) -> None:
        """Ask the trainer that has the trial to stop it (now, or as soon as it starts it)."""
        if self.nc is None:
            return
        request = events_pb2.TrialStopRequest(meta=events.new_meta("gateway", study_id, trial_id), reason=reason)
        with contextlib.suppress(Exception):
            await self.nc.publish(events.SUBJECT_STOP, request.SerializeToString(), headers=telemetry.inject_headers())

    async def _on_pruned(self, event: events_pb2.TrialPrunedEvent) -> None:
        found = self._live_trial(event.meta.trial_id)
        if found is None:
            return
        study, trial = found
        if trial.status == S.TRIAL_STATUS_EVALUATING:
            return  # a duplicate run stopped because another placement already trained it
        trial.status = S.TRIAL_STATUS_PRUNED
        trial.trainer_id = event.trainer_id
        trial.finished_at.CopyFrom(now_ts())
        self.store.save_trial(trial)
        self.request_pack()
        await self._feedback(study.id, trial, 0.0, failed=False, pruned=True)
        self._notify(study.id, "trial.pruned")
        self._wake(study.id)

    async def _on_trained(self, event: events_pb2.TrialTrainedEvent) -> None:
        found = self._live_trial(event.meta.trial_id)
        if found is None:
            return
        study, trial = found
        trained = event.trained
        if trial.status == S.TRIAL_STATUS_EVALUATING and trained.trainer_id != trial.trainer_id:
            return  # a second placement finished too; the first result is being scored
        if trial.assigned_worker_id and trained.trainer_id != trial.assigned_worker_id:
            # Trained on a trainer given up on (it came back): use it, and stop the re-run.
            await self._request_stop(study.id, trial.id, f"already trained on {trained.trainer_id}")
        trial.status = S.TRIAL_STATUS_EVALUATING
        trial.trainer_id, trial.train_loss = trained.trainer_id, trained.train_loss
        trial.artifact_path, trial.precision = trained.artifact_path, trained.precision
        trial.skipped_steps = trained.skipped_steps
        self.store.save_trial(trial)
        self.request_pack()  # its trainer slot is free
        self._notify(study.id, "trial.evaluating")
        try:
            reply = await self.peers.evaluator.Evaluate(evaluator_pb2.EvaluateRequest(
                study_id=study.id, trial_id=trial.id, task=trained.task, predictions=trained.predictions,
                references=trained.references, objective=study.spec.objective, candidate_id=trial.candidate.id,
                model_metrics=trained.model_metrics, extra_objectives=study.spec.extra_objectives,
            ), timeout=EVALUATE_DEADLINE)
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                raise  # evaluator unavailable: the event is redelivered and tried again
            await self._fail_trial(study, trial, f"evaluation refused: {err.details()}", announce=True)
            return
        trial.metrics.update(reply.metrics)
        trial.objective_value = reply.objective_value
        trial.extra_objective_values[:] = reply.extra_objective_values
        trial.status = S.TRIAL_STATUS_SUCCEEDED
        trial.finished_at.CopyFrom(now_ts())
        self.store.save_trial(trial)
        await self._feedback(study.id, trial, reply.objective_value, failed=False)
        log.info("trial %s scored %.4f", trial.id, reply.objective_value, extra={"study_id": study.id, "trial_id": trial.id})
        self._notify(study.id, "trial.succeeded")
        self._wake(study.id)

    async def _on_failed(self, event: events_pb2.TrialFailedEvent) -> None:
        found = self._live_trial(event.meta.trial_id)
        if found is None:
            return
        study, trial = found
        trial.trainer_id = event.trainer_id
        await self._fail_trial(study, trial, event.reason)

    async def _fail_trial(self, study, trial, reason: str, announce: bool = False) -> None:
        """Record a failed trial; `announce` publishes autoglm.trial.failed (when the gateway,
        not a trainer, found the failure) so every consumer of trial events sees it."""
        trial.status = S.TRIAL_STATUS_FAILED
        trial.error = reason
        trial.finished_at.CopyFrom(now_ts())
        self.store.save_trial(trial)
        self.request_pack()
        if announce:
            await events.publish(self.js, events.SUBJECT_FAILED, events_pb2.TrialFailedEvent(
                meta=events.new_meta("gateway", study.id, trial.id, f"failed-{trial.id}"), reason=reason))
        await self._feedback(study.id, trial, 0.0, failed=True)
        log.warning("trial %s failed: %s", trial.id, reason, extra={"study_id": study.id, "trial_id": trial.id})
        self._notify(study.id, "trial.failed")
        self._wake(study.id)

    async def _feedback(self, study_id: str, trial, value: float, failed: bool, pruned: bool = False) -> None:
        try:
            await self.peers.prompt_generator.Feedback(prompt_generator_pb2.FeedbackRequest(
                study_id=study_id, candidate_id=trial.candidate.id, objective_value=value, failed=failed, pruned=pruned,
                extra_objective_values=[] if failed or pruned else list(trial.extra_objective_values),
            ), timeout=RPC_DEADLINE)
        except grpc.aio.AioRpcError as err:
            # The evaluated event carries the reward too; a lost call only delays learning.
            log.warning("feedback for %s not delivered: %s", trial.id, err.code().name)

    async def export_best(self, study: common_pb2.Study) -> tuple[str, list[str]]:
        """Export the best trial's model through a trainer; raises LookupError if there is none."""
        best = next((t for t in study.trials if t.id == study.best_trial_id), None)
        if best is None or not best.artifact_path:
            raise LookupError("the study has no best trial with a saved model yet")
        with self.tracer.start_as_current_span("export_best", context=self._study_context(study.id)):
            reply = await self.peers.trainer.Export(trainer_pb2.ExportRequest(artifact_path=best.artifact_path), timeout=600)
        return best.id, list(reply.files)

    # --- watchers -----------------------------------------------------------------------------
    def subscribe(self, study_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.setdefault(study_id, set()).add(queue)
        return queue

    def unsubscribe(self, study_id: str, queue: asyncio.Queue) -> None:
        self._watchers.get(study_id, set()).discard(queue)

    def _notify(self, study_id: str, change: str) -> None:
        for queue in self._watchers.get(study_id, ()):
            queue.put_nowait(change)

