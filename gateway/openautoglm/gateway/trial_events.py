"""Trial events from the trainers (progress, trained, pruned, failed), handled idempotently.

A trained event carries the trial's scores (the trainer had the evaluator score its predictions),
so recording it is all there is to do; the search learns of it from the study's trials at its next
proposal. A progress report with an intermediate score goes to the study's pruner, whose "stop"
reaches the trainer as a stop request. An event for a trial or study that is already finished is
acknowledged and ignored, so redeliveries are harmless.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context

from openautoglm.common.metrics import TRIALS_FINISHED, status_label
from openautoglm.common import subjects, telemetry
from openautoglm.gateway.peers import PeerError
from openautoglm.gateway.cost_model import TrialCosts
from openautoglm.gateway.placement import Packer
from openautoglm.gateway.search_client import SearchClient
from openautoglm.gateway.states import TERMINAL_STUDY, TERMINAL_TRIAL
from openautoglm.gateway.store import StudyStore, now_ts
from openautoglm.gateway.watchers import Watchers
from openautoglm.v1 import common_pb2, events_pb2, trainer_pb2

log = logging.getLogger(__name__)
S = common_pb2


class TrialEvents:
    """Handler of the gateway's durable consumer of trial events."""

    def __init__(self, store: StudyStore, search: SearchClient, watchers: Watchers, packer: Packer,
                 wake: Callable[[str], None], costs: TrialCosts):
        self.store = store
        self.costs = costs  # learns from every trial's actual training time
        self.search = search
        self.watchers = watchers
        self.packer = packer
        self.wake = wake  # the study's driver: a slot or a result is new
        self.tracer = telemetry.tracer("openautoglm.gateway")

    async def on_trial_event(self, msg: Any, ctx: otel_context.Context) -> None:
        """Handler of the gateway's durable consumer (progress, trained, failed)."""
        if msg.subject == subjects.SUBJECT_PROGRESS:
            await self._on_progress(events_pb2.TrialProgressEvent.FromString(msg.data))
            return
        with self.tracer.start_as_current_span(f"gateway.{msg.subject.rsplit('.', 1)[-1]}", context=ctx):
            if msg.subject == subjects.SUBJECT_TRAINED:
                await self._on_trained(events_pb2.TrialTrainedEvent.FromString(msg.data))
            elif msg.subject == subjects.SUBJECT_PRUNED:
                await self._on_pruned(events_pb2.TrialPrunedEvent.FromString(msg.data))
            elif msg.subject == subjects.SUBJECT_FAILED:
                await self._on_failed(events_pb2.TrialFailedEvent.FromString(msg.data))

    async def on_give_up(self, msg: Any, err: Exception) -> None:
        """A trial event that could not be handled after every redelivery: fail the trial."""
        if msg.subject == subjects.SUBJECT_PROGRESS:
            return
        decoders: dict[str, Callable[[bytes], subjects.Event]] = {
            subjects.SUBJECT_TRAINED: events_pb2.TrialTrainedEvent.FromString,
            subjects.SUBJECT_PRUNED: events_pb2.TrialPrunedEvent.FromString,
        }
        event = decoders.get(msg.subject, events_pb2.TrialFailedEvent.FromString)(msg.data)
        found = self._live_trial(event.meta.trial_id)
        if found is not None:
            self._fail_trial(*found, f"could not record {msg.subject.rsplit('.', 1)[-1]} result: {err!r}")

    def _live_trial(self, trial_id: str) -> tuple[common_pb2.Study, common_pb2.Trial] | None:
        trial = self.store.trial(trial_id)
        if trial is None or trial.status in TERMINAL_TRIAL:
            return None
        study = self.store.header(trial.study_id)
        if study is None or study.state in TERMINAL_STUDY:
            return None
        return study, trial

    async def _on_progress(self, event: events_pb2.TrialProgressEvent) -> None:
        found = self._live_trial(event.meta.trial_id)
        if found is None:
            return
        study, trial = found
        if not trial.assigned_worker_id or event.progress.trainer_id not in ("", trial.assigned_worker_id):
            return  # from an earlier placement, on a trainer that was given up on
        if event.progress.awaiting_scores:  # trained; the trainer waits for the evaluator to score it
            trial.status = S.TRIAL_STATUS_EVALUATING
            trial.trainer_id = event.progress.trainer_id
            self.store.save_trial(trial)
            self.watchers.notify(study.id, "trial.evaluating", trial.id)
            return
        trial.status = S.TRIAL_STATUS_TRAINING
        trial.trainer_id = event.progress.trainer_id
        if event.progress.step:
            trial.train_loss = event.progress.loss
        if event.progress.has_intermediate:
            trial.intermediate_values[event.progress.epoch] = event.progress.intermediate_value
            trial.metrics["intermediate_score"] = event.progress.intermediate_value
        self.store.save_trial(trial)
        self.watchers.notify(study.id, "trial.progress", trial.id)
        if event.progress.has_intermediate and study.spec.pruner not in ("", "none"):
            await self._maybe_prune(trial, event.progress)

    async def _maybe_prune(self, trial: common_pb2.Trial, progress: trainer_pb2.TrialProgress) -> None:
        """Ask the study's pruner about an epoch's score; tell the trainer to stop if so."""
        study = self.store.existing_study(trial.study_id)
        try:
            reply = await self.search.should_prune(study, trial, progress.epoch)
        except PeerError as err:
            log.warning("pruning decision for %s not made: %s", trial.id, err)
            return
        if reply.search_state != trial.candidate.search_state:
            trial.candidate.search_state = reply.search_state
            self.store.save_trial(trial)
        if reply.should_prune:
            log.info("pruning trial %s after epoch %d (score %.4f)", trial.id, progress.epoch, progress.intermediate_value,
                     extra={"study_id": study.id, "trial_id": trial.id})
            await self.packer.request_stop(study.id, trial.id, f"pruned after epoch {progress.epoch}")

    async def _on_pruned(self, event: events_pb2.TrialPrunedEvent) -> None:
        found = self._live_trial(event.meta.trial_id)
        if found is None:
            return
        study, trial = found
        trial.trainer_id = event.trainer_id
        self._end(study, trial, S.TRIAL_STATUS_PRUNED, "trial.pruned")

    async def _on_trained(self, event: events_pb2.TrialTrainedEvent) -> None:
        found = self._live_trial(event.meta.trial_id)
        if found is None:
            return  # finished already: a duplicate, or a second placement that trained it too
        study, trial = found
        trained = event.trained
        if trial.assigned_worker_id and trained.trainer_id != trial.assigned_worker_id:
            # Trained on a trainer given up on (it came back): use it, and stop the re-run.
            await self.packer.request_stop(study.id, trial.id, f"already trained on {trained.trainer_id}")
        trial.trainer_id, trial.train_loss = trained.trainer_id, trained.train_loss
        trial.artifact_path, trial.precision = trained.artifact_path, trained.precision
        trial.skipped_steps = trained.skipped_steps
        trial.metrics.update(trained.metrics)
        trial.objective_value = trained.objective_value
        trial.extra_objective_values[:] = trained.extra_objective_values
        trial.actual_seconds = trained.train_seconds
        trial.score_seconds = trained.score_seconds
        log.info("trial %s scored %.4f", trial.id, trained.objective_value, extra={"study_id": study.id, "trial_id": trial.id})
        if self._end(study, trial, S.TRIAL_STATUS_SUCCEEDED, "trial.succeeded") and trained.resumed_from_step == 0:
            self.costs.record(study.spec, trial)  # a resumed trial's seconds are only its last part

    async def _on_failed(self, event: events_pb2.TrialFailedEvent) -> None:
        found = self._live_trial(event.meta.trial_id)
        if found is None:
            return
        study, trial = found
        trial.trainer_id = event.trainer_id
        self._fail_trial(study, trial, event.reason)

    def _fail_trial(self, study: common_pb2.Study, trial: common_pb2.Trial, reason: str) -> None:
        trial.error = reason
        log.warning("trial %s failed: %s", trial.id, reason, extra={"study_id": study.id, "trial_id": trial.id})
        self._end(study, trial, S.TRIAL_STATUS_FAILED, "trial.failed")

    def _end(self, study: common_pb2.Study, trial: common_pb2.Trial, status: common_pb2.TrialStatus, change: str) -> bool:
        """Record a trial's final state (False if it had one already). Its study may propose the
        next trial (which packs it), and other studies' queued work may take the place it held."""
        trial.status = status
        trial.finished_at.CopyFrom(now_ts())
        if not self.store.save_trial(trial):
            return False  # it had finished already (cancelled on another replica): that outcome stands
        TRIALS_FINISHED.labels(status_label(status)).inc()
        self.watchers.notify(study.id, change, trial.id)
        self.wake(study.id)
        self.packer.request()
        return True
