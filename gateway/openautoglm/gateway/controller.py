"""The study controller: drives each study from creation to its best candidate.

A driver task per running study keeps up to `slots` trials in flight: it asks the
prompt-generator for candidates and records them as queued trials; the packer (placement.py)
places them on trainers; trial events (trial_events.py) move them to their end. State lives in
the StudyStore after every step, so a restarted gateway resumes running studies. With several
gateway replicas, only the leader's controller drives (leadership.py); every replica's creates
and cancels studies for the API.

This is the gateway's gRPC-free core: it speaks to its peers through the client objects in
`Peers` (errors: PeerRefused / PeerUnavailable) and to NATS through the `bus` it is given.

Tracing: CreateStudy opens the study's root span; its context is stored with the study and is
the parent of every dispatch, so all five services' spans for a study share one trace id.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from openautoglm.common.metrics import TRIALS_FINISHED
from openautoglm.common.subjects import BusUnavailable
from openautoglm.common import telemetry
from openautoglm.gateway.cost_model import TrialCosts
from openautoglm.gateway.estimates import trial_memory_mb
from openautoglm.gateway.peers import Bus, PeerError, PeerRefused, PeerUnavailable, Peers
from openautoglm.gateway.final import FinalScorer, TestScoresUnavailable
from openautoglm.gateway.placement import Export, Packer, job_for
from openautoglm.gateway.results import best_trial, final_report, is_repeat, pareto_front, repeats_of, search_trials
from openautoglm.gateway.records import proposals_due, window_for
from openautoglm.gateway.search_client import SearchClient
from openautoglm.gateway.states import IN_FLIGHT, STATE_NAME, TERMINAL_STUDY
from openautoglm.gateway.store import DEFAULT_TENANT, StudyStore, now_ts, request_key
from openautoglm.gateway.trial_cache import StudyTrialCache
from openautoglm.gateway.trial_events import TrialEvents
from openautoglm.gateway.watchers import Watchers
from openautoglm.v1 import common_pb2, events_pb2, prompt_generator_pb2, scheduler_pb2, trainer_pb2

log = logging.getLogger(__name__)
S = common_pb2
# The leader looks for running studies it does not drive yet this often (a lost "created" change).
ADOPT_SECONDS = 2.0
FINISHED_CHANGES = frozenset(f"study.{STATE_NAME[state]}" for state in TERMINAL_STUDY)


class StudyController:
    """Every gateway replica has one: it creates and cancels studies for the API; the leader's
    (leadership.py) also drives them, from `start_leading()` on."""

    def __init__(self, store: StudyStore, bus: Bus, peers: Peers, watchers: Watchers | None = None,
                 exports: Callable[[], list[Export]] | None = None, final: FinalScorer | None = None):
        self.store = store
        self.final = final  # the test scores of a completed study's winner (None: not scored)
        self.bus = bus
        self.peers = peers
        self.tracer = telemetry.tracer("openautoglm.gateway")
        self.watchers = watchers or Watchers()
        self.watchers.add_hook(self._on_change)
        self.costs = TrialCosts(store)
        self.packer = Packer(store, bus, peers, self.study_context, self.watchers.notify, self.costs, exports)
        self.search = SearchClient(peers, store)
        self.trial_events = TrialEvents(store, self.search, self.watchers, self.packer, self.wake, self.costs)
        self.leading = False
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        # The root spans of the studies this replica created; each ends when its study does.
        self._root_spans: dict[str, trace.Span] = {}
        self._adopter: asyncio.Task[None] | None = None

    async def create(self, spec: common_pb2.StudySpec, request_id: str, priors: common_pb2.PriorTrials | None = None,
                     workers: list[scheduler_pb2.Worker] | None = None, tenant: str = DEFAULT_TENANT) -> common_pb2.Study:
        """Record and start a study for `tenant`; `workers` (the live trainers, None if unknown)
        size its window. A repeated `request_id` (per tenant) returns the study it created."""
        if request_id:
            request_id = request_key(tenant, request_id)
            existing = self.store.study_by_request(request_id)
            if existing:
                return self.store.existing_study(existing)
        study_id = "st-" + uuid.uuid4().hex[:12]
        root = self.tracer.start_span("study", attributes={"openautoglm.study_id": study_id, "openautoglm.strategy": spec.strategy})
        study = common_pb2.Study(
            id=study_id, spec=spec, state=S.STUDY_STATE_RUNNING, trace_id=telemetry.trace_id_hex(root),
            created_at=now_ts(), updated_at=now_ts(), window=window_for(spec, workers), tenant=tenant,
        )
        self.store.insert_study(study, request_id, telemetry.traceparent_of(root), priors)
        self._root_spans[study_id] = root
        log.info("study %s created (%s, %d trials)", study_id, spec.strategy, spec.budget.max_trials, extra={"study_id": study_id})
        self.watchers.notify(study_id, "study.created")  # the leader, this replica or another, drives it
        return study

    async def on_cluster_changed(self, msg: Any) -> None:
        with contextlib.suppress(Exception):
            change = events_pb2.ClusterChanged.FromString(msg.data)
            log.info("cluster changed: joined %s, left %s; %d trainers live", list(change.joined),
                     list(change.left), len(change.workers))
        self.packer.request(check_placements=True)

    def start_leading(self) -> None:
        """This replica was elected (leadership.py): drive every running study, now and as they
        are created, and place their trials."""
        self.leading = True
        self.packer.start()
        self.adopt_running()
        self._adopter = asyncio.create_task(self._adopt_new(), name="adopt-studies")

    def adopt_running(self) -> None:
        """Drive every study the store says is running that no driver here drives yet: all of
        them after a restart or a takeover, then those other replicas create."""
        for study_id in self.store.studies_in_state(S.STUDY_STATE_RUNNING):
            if not self._driving(study_id):
                log.info("resuming study %s", study_id, extra={"study_id": study_id})
                self._start_driver(study_id, resumed=True)

    async def _adopt_new(self) -> None:
        """A study another replica created is adopted when its change arrives; this look at the
        store catches one whose change was lost (NATS away)."""
        while True:
            await asyncio.sleep(ADOPT_SECONDS)
            with contextlib.suppress(Exception):  # the database away: look again next time
                self.adopt_running()

    def _on_change(self, study_id: str, change: str, trial_id: str) -> None:
        """Every change of every study, from this replica or another (watchers.py)."""
        if change == "study.created":
            if self.leading and not self._driving(study_id):
                self._start_driver(study_id)
        elif change in FINISHED_CHANGES:
            self._end_root_span(study_id)
            if self.leading:
                self.wake(study_id)  # cancelled elsewhere: its driver sees it at once
                self.packer.request()  # its trainer slots are free for other studies

    async def cancel(self, study_id: str) -> common_pb2.Study | None:
        study = self.store.study(study_id)
        if study is None or study.state in TERMINAL_STUDY:
            return study
        await self._cancel_in_flight(study, "study cancelled")
        await self._finish(study_id, S.STUDY_STATE_CANCELLED, "cancelled by request")
        self.packer.request()
        return self.store.study(study_id)

    async def _cancel_in_flight(self, study: common_pb2.Study, reason: str) -> None:
        """Cancel the study's trials still in flight, stopping those a trainer holds."""
        for trial in study.trials:
            if trial.status in IN_FLIGHT:
                placed = bool(trial.assigned_worker_id)
                trial.status = S.TRIAL_STATUS_CANCELLED
                trial.finished_at.CopyFrom(now_ts())
                if not self.store.save_trial(trial):
                    continue  # it finished meanwhile (the leader recorded its result)
                TRIALS_FINISHED.labels("cancelled").inc()
                self.watchers.notify(study.id, "trial.cancelled", trial.id)
                if placed:  # free its trainer slot for other studies' work
                    await self.packer.request_stop(study.id, trial.id, reason)

    async def stop(self) -> None:
        tasks = list(self._drivers.values()) + ([self._adopter] if self._adopter else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.packer.stop()

    def _driving(self, study_id: str) -> bool:
        task = self._drivers.get(study_id)
        return task is not None and not task.done()

    def _start_driver(self, study_id: str, resumed: bool = False) -> None:
        self._wakeups[study_id] = asyncio.Event()
        self._drivers[study_id] = asyncio.create_task(self._drive(study_id, resumed), name=f"drive-{study_id}")

    def wake(self, study_id: str) -> None:
        event = self._wakeups.get(study_id)
        if event is not None:
            event.set()

    def study_context(self, study_id: str) -> otel_context.Context:
        root = self._root_spans.get(study_id)
        if root is not None:
            return trace.set_span_in_context(root)
        traceparent, _ = self.store.trace_info(study_id)
        return telemetry.extract_context({"traceparent": traceparent})

    # --- the driver ---------------------------------------------------------------------------
    async def _drive(self, study_id: str, resumed: bool = False) -> None:
        ctx = self.study_context(study_id)
        _, started = self.store.trace_info(study_id)
        trials = StudyTrialCache(self.store, study_id)  # each look reads only what may have changed
        exhausted = False
        try:
            if resumed:
                # A crash between recording trials and enqueueing their jobs must not strand
                # them: enqueue every still-queued trial again (de-duplicated by job id).
                study = trials.study()
                for trial in study.trials:
                    if trial.status == S.TRIAL_STATUS_QUEUED and trial.assigned_worker_id:
                        with contextlib.suppress(BusUnavailable):  # then it is placed again
                            await self.packer.publish_or_unplace(study, trial)
            while True:
                study = trials.study()
                if study.state in TERMINAL_STUDY:
                    # Finished elsewhere (a cancel on another replica) while this driver recorded
                    # a trial: none is left in flight. From here on this driver records nothing.
                    await self._cancel_in_flight(study, f"study {STATE_NAME[study.state]}")
                    return
                budget = study.spec.budget
                in_flight = any(t.status in IN_FLIGHT for t in study.trials)
                out_of_time = budget.max_wall_seconds > 0 and time.time() - started > budget.max_wall_seconds
                searched = search_trials(study)
                can_propose = (not exhausted and not out_of_time and len(searched) < budget.max_trials
                               and len(searched) == len(study.trials))  # no final repeat queued yet
                if not in_flight and not can_propose:
                    if any(t.status == S.TRIAL_STATUS_SUCCEEDED for t in searched):
                        if not out_of_time and await self._queue_final_repeats(study):
                            continue  # the winner trains again with more seeds first
                        final_error = await self._score_tests(study_id)
                        await self._finish(study_id, S.STUDY_STATE_COMPLETED, final_error=final_error)
                    else:
                        await self._finish(study_id, S.STUDY_STATE_FAILED, "no trial succeeded")
                    return
                count = proposals_due(study) if can_propose else 0
                if count:
                    try:
                        proposed, exhausted = await self._dispatch(study, count, ctx, trials.records)
                    except PeerRefused as err:
                        await self._finish(study_id, S.STUDY_STATE_FAILED, f"{err.code}: {err.details}")
                        return
                    except PeerUnavailable as err:
                        log.warning("dispatch for %s deferred: %s", study_id, err, extra={"study_id": study_id})
                    else:
                        if proposed or exhausted:
                            continue  # look again at once: the next trial may be due already
                wakeup = self._wakeups[study_id]
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=1.0)
                wakeup.clear()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug: fail the study loudly rather than hang it
            log.exception("driver for %s crashed", study_id, extra={"study_id": study_id})
            await self._finish(study_id, S.STUDY_STATE_FAILED, f"internal error: {err}")

    async def _dispatch(self, study: common_pb2.Study, count: int, ctx: otel_context.Context,
                        known: dict[int, prompt_generator_pb2.TrialRecord]) -> tuple[int, bool]:
        """Propose and record the next `count` trials, then pack; returns (trials proposed, whether
        the space is exhausted)."""
        number = len(study.trials)
        with self.tracer.start_as_current_span("dispatch", context=ctx) as span:
            reply = await self.search.propose(study, count, known)
            span.set_attribute("openautoglm.proposed", len(reply.candidates))
            if reply.render_cache_lookups:
                span.set_attribute("openautoglm.render_cache_hit_rate", reply.render_cache_hits / reply.render_cache_lookups)
            for candidate in reply.candidates:
                self._queue_trial(study, number, candidate)
                number += 1
            if reply.candidates:
                await self._pack(study)  # in this span: the scheduler's pack joins the study's trace
            return len(reply.candidates), bool(reply.exhausted)

    def _queue_trial(self, study: common_pb2.Study, number: int, candidate: common_pb2.Candidate,
                     **fields: Any) -> None:
        """Record trial `number` of the study as queued, with its memory and predicted time."""
        predicted = self.costs.predict(study.spec, candidate)
        trial = common_pb2.Trial(
            id=f"{study.id}-t{number:03d}", study_id=study.id, number=number, candidate=candidate,
            status=S.TRIAL_STATUS_QUEUED, created_at=now_ts(), memory_mb=trial_memory_mb(study.spec, candidate),
            predicted_seconds=predicted.seconds, predicted_seconds_sd=predicted.sd, **fields,
        )
        self.store.insert_trial(trial)
        self.watchers.notify(study.id, "trial.queued", trial.id)

    async def _pack(self, study: common_pb2.Study) -> None:
        """Pack the study's new trials now; if a peer is away, the packer tries again shortly."""
        try:
            await self.packer.pack()
        except (PeerError, BusUnavailable) as err:
            log.warning("packing %s's new trials deferred: %s", study.id, err, extra={"study_id": study.id})
            self.packer.request()

    async def _queue_final_repeats(self, study: common_pb2.Study) -> bool:
        """Queue the winner's final repeats (StudySpec.final_repeats: its candidate with the seed
        offset by 1, 2, ...), once; True when they were queued now."""
        best = best_trial(study)
        if study.spec.final_repeats <= 0 or best is None or any(is_repeat(t) for t in study.trials):
            return False
        for offset in range(1, study.spec.final_repeats + 1):
            self._queue_trial(study, len(study.trials) + offset - 1, best.candidate, repeat_of=best.id, seed_offset=offset)
        log.info("study %s: the winner %s trains again with %d more seeds", study.id, best.id,
                 study.spec.final_repeats, extra={"study_id": study.id})
        await self._pack(study)
        return True

    async def _score_tests(self, study_id: str) -> str:
        """Score the winner and its succeeded repeats on the test split, each once (a trial that
        has its test scores keeps them); returns why any is missing ("" when none is)."""
        study = self.store.existing_study(study_id)
        if study.spec.dataset.test_fraction <= 0:
            return "the study's dataset has no test split"
        if self.final is None:
            return "no trainer directory to ask for test scores"
        best = best_trial(study)
        if best is None:
            return ""
        group = [best, *(t for t in repeats_of(study, best.id) if t.status == S.TRIAL_STATUS_SUCCEEDED)]
        errors = []
        with self.tracer.start_as_current_span("final_test", context=self.study_context(study_id)):
            for trial in group:
                if trial.test_metrics:
                    continue
                try:
                    reply = await self.final.score(study, trial, job_for(study, trial))
                except TestScoresUnavailable as err:
                    errors.append(f"{trial.id}: {err}")
                    continue
                trial.test_metrics.update(reply.metrics)
                trial.test_objective_value = reply.objective_value
                trial.test_examples = reply.examples
                self.store.record_test_scores(trial)
                self.watchers.notify(study_id, "trial.tested", trial.id)
        return "; ".join(errors)

    async def _finish(self, study_id: str, state: common_pb2.StudyState, error: str = "", final_error: str = "") -> None:
        study = self.store.existing_study(study_id)
        if study.state in TERMINAL_STUDY:
            return
        study.state = state
        study.error = error
        best = best_trial(study)
        study.best_trial_id = best.id if best else ""
        study.pareto_trial_ids[:] = pareto_front(study) if study.spec.extra_objectives else []
        if state == S.STUDY_STATE_COMPLETED:
            study.final.CopyFrom(final_report(study, final_error))
        if not self.store.finish_study(study):
            return  # another replica finished it first (a cancel): that outcome stands
        name = STATE_NAME[state]
        log.info("study %s %s%s", study_id, name, f": {error}" if error else "", extra={"study_id": study_id})
        self.watchers.notify(study_id, f"study.{name}")

    def _end_root_span(self, study_id: str) -> None:
        """End the study's root span, if this replica opened it, with the study's outcome."""
        root = self._root_spans.pop(study_id, None)
        if root is None:
            return
        study = self.store.header(study_id)
        if study is not None:
            root.set_attribute("openautoglm.state", common_pb2.StudyState.Name(study.state))
            root.set_attribute("openautoglm.best_trial_id", study.best_trial_id)
        root.end()

    async def export_best(self, study: common_pb2.Study) -> tuple[str, list[str]]:
        """Export the best trial's model through a trainer; raises LookupError if there is none."""
        best = next((t for t in study.trials if t.id == study.best_trial_id), None)
        if best is None or not best.artifact_path:
            raise LookupError("the study has no best trial with a saved model yet")
        with self.tracer.start_as_current_span("export_best", context=self.study_context(study.id)):
            reply = await self.peers.trainer.Export(trainer_pb2.ExportRequest(artifact_path=best.artifact_path), timeout=600)
        return best.id, list(reply.files)
