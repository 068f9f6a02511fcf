"""The gateway's wiring: the Studies servicer, the study store, gRPC clients of the peers, and
NATS (trial events in, study events and jobs out) around the gRPC-free StudyController.

Any number of replicas may share one database: each serves the API at once, and the one that
wins the leader election (leadership.py) also drives the studies: the trial-event consumer, the
cluster's changes, the packer and the trial gauges run on the leader alone."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import uuid
from pathlib import Path

import grpc

from openautoglm.common.tls import public_http_ssl_context, service_identity
from openautoglm.common import artifacts, events, metrics, sandbox, subjects
from openautoglm.common.config import ServiceSettings
from openautoglm.common.credentials import KEY_FILE_NAME
from openautoglm.common.server import mesh_channel
from openautoglm.common.spec.protos import task_name
from openautoglm.gateway.artifacts import ArtifactRecords, ArtifactsServicer, collect, running_references, study_artifacts
from openautoglm.gateway.auth import ApiKeyAuth
from openautoglm.gateway.final import FinalScorer
from openautoglm.gateway.dashboard import add_dashboard
from openautoglm.gateway.http_api import HttpApi
from openautoglm.gateway.models_api import ModelsServicer, TrainerDirectory
from openautoglm.gateway.placement import Export
from openautoglm.gateway.registry import ModelRegistry, Registrar
from openautoglm.gateway.clients import PeerClient
from openautoglm.gateway.controller import StudyController
from openautoglm.gateway.database import database_url, open_database
from openautoglm.gateway.keys import KeyStore
from openautoglm.gateway.leadership import LeaderElection, leader_lock_for
from openautoglm.gateway.peers import PeerError, Peers
from openautoglm.gateway.quotas import Quotas
from openautoglm.gateway.service import ClusterServicer, KeysServicer, StudiesServicer
from openautoglm.gateway.store import StudyStore
from openautoglm.gateway.watchers import ChangeRelay, Watchers
from openautoglm.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    evaluator_pb2,
    evaluator_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    prompt_generator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    studies_pb2,
    studies_pb2_grpc,
    trainer_pb2_grpc,
)

log = logging.getLogger(__name__)
# Seconds before a trial event the gateway took is redelivered: the handler says "in progress"
# every third of it while it works, so only a gateway that died mid-event makes anyone wait.
GATEWAY_ACK_WAIT = 10.0
# How often the trial gauges are counted again.
TRIAL_METRICS_SECONDS = 2.0
# How often the leader removes deleted artifacts that nothing refers to any more.
ARTIFACT_COLLECT_SECONDS = 30.0


class GatewayApp:
    service_names = (studies_pb2.DESCRIPTOR.services_by_name["Studies"].full_name,
                     keys_pb2.DESCRIPTOR.services_by_name["Keys"].full_name,
                     artifacts_pb2.DESCRIPTOR.services_by_name["Artifacts"].full_name,
                     models_pb2.DESCRIPTOR.services_by_name["Models"].full_name,
                     cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        database = open_database(database_url(settings.database_url, settings.data_dir))
        self.store = StudyStore(database)
        self.artifacts = ArtifactRecords(database)
        self._artifact_bucket = None
        self._collect_task: asyncio.Task[None] | None = None
        # The model registry; registrations and serving calls reach trainers at their own addresses.
        self.registry = ModelRegistry(database)
        self.trainers = TrainerDirectory(self._live_workers, lambda address: mesh_channel(settings, address, "trainer"))
        self.registrar = Registrar(self.registry, self.store, self.artifact_bucket, self._live_workers, self.trainers.channel)
        self.models = ModelsServicer(self.registry, self.registrar, self.store, self.artifact_bucket, self.trainers)
        self.read_roots = sandbox.read_roots(settings.data_dir)
        self.quotas = Quotas(settings.tenant_max_running_studies, settings.tenant_max_trials_per_study,
                             settings.tenant_max_queued_trials)
        self.keys = KeyStore(database)
        self.keys.bootstrap(settings.data_dir / KEY_FILE_NAME)
        # Run before the bootstrap's own interceptors: a caller without a key learns nothing more.
        self.interceptors = [ApiKeyAuth(self.keys)]
        self.controller: StudyController | None = None
        self.bus: events.NatsBus | None = None
        self.consumer: events.DurableConsumer | None = None
        self.channels: list[grpc.aio.Channel] = []
        self._metrics_task: asyncio.Task[None] | None = None
        # This process among the gateway replicas (logs, relayed changes).
        self.replica_id = uuid.uuid4().hex[:8]
        self.relay: ChangeRelay | None = None
        self.election = LeaderElection(leader_lock_for(database), self.replica_id, self._lead)
        # The JSON/HTTP API (--http-port) calls this gateway's gRPC server through a private Unix
        # socket (its folder is this user's only), so each HTTP call is the gRPC call.
        self._bridge_dir: Path | None = None
        self.http: HttpApi | None = None

    async def evaluator_metrics(self) -> dict[str, list[str]] | None:
        """Metric names per task that the evaluator serves (its plugins included), for spec
        validation; None (use the built-ins) when the evaluator does not answer."""
        try:
            assert self.controller is not None
            reply = await self.controller.peers.evaluator.ListMetrics(evaluator_pb2.ListMetricsRequest(), timeout=5)
        except PeerError as err:
            log.warning("evaluator ListMetrics failed (%s); validating metrics against the built-ins", err.code)
            return None
        names: dict[str, list[str]] = {"classification": [], "generation": []}
        for metric in reply.metrics:
            for task in metric.tasks:
                if name := task_name(task):
                    names[name].append(metric.name)
        return names

    def register(self, server):
        studies_pb2_grpc.add_StudiesServicer_to_server(StudiesServicer(self), server)
        keys_pb2_grpc.add_KeysServicer_to_server(KeysServicer(self.keys), server)
        artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(
            self.artifacts, self.artifact_bucket, self.settings.service_dir() / "uploads", self.settings.artifact_max_bytes,
            self.studies_referring), server)
        models_pb2_grpc.add_ModelsServicer_to_server(self.models, server)
        cluster_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(self), server)
        if self.settings.http_port:
            self._bridge_dir = Path(tempfile.mkdtemp(prefix="openautoglm-http-"))  # short: socket paths are limited
            if server.add_insecure_port(self._bridge_socket()) == 0:
                raise RuntimeError(f"gateway: cannot bind the HTTP API's socket {self._bridge_socket()}")

    def _may_create(self, secret: str) -> bool:
        """Whether this API key may create studies (the dashboard's spec check needs one)."""
        principal = self.keys.principal(secret)
        return principal is not None and principal.role >= keys_pb2.ROLE_MEMBER

    def _bridge_socket(self) -> str:
        assert self._bridge_dir is not None
        return f"unix:{self._bridge_dir / 'grpc.sock'}"

    async def _live_workers(self) -> list[scheduler_pb2.Worker]:
        assert self.controller is not None
        reply = await self.controller.peers.scheduler.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=5)
        return list(reply.workers)

    def _trainer_client(self, address: str) -> PeerClient:
        """One trainer's peer client (final test scores), over the trainers' shared channels."""
        return PeerClient("trainer", trainer_pb2_grpc.TrainerStub(self.trainers.channel(address)))

    def _register_best(self, study_id: str, change: str, trial_id: str) -> None:
        """Leader: a study that completed registers its best trial as `<study name>` version N."""
        if change != "study.completed" or not self.election.leading:
            return
        study = self.store.study(study_id)
        if study is None or not study.best_trial_id or self.registry.of_study(study.tenant, study.id):
            return
        self.models.register(study, study.best_trial_id)

    async def artifact_bucket(self):
        """The artifact store (created on first use with the configured replicas)."""
        if self._artifact_bucket is None:
            assert self.bus is not None
            self._artifact_bucket = await artifacts.open_bucket(self.bus.js, create=True, replicas=self.settings.artifact_replicas)
        return self._artifact_bucket

    def _artifact_users(self) -> list[tuple[str, common_pb2.StudySpec]]:
        """(who, spec) of everything that still needs the artifacts its spec names: unfinished
        studies (by id) and registered model versions (as name:version, for reproducing them)."""
        users = list(self.store.unfinished_specs())
        versions = self.registry.all_versions()
        specs = self.store.specs({v.study_id for v in versions})
        users += [(f"{v.name}:{v.version}", specs[v.study_id]) for v in versions if v.study_id in specs]
        return users

    def studies_referring(self, artifact_id: str) -> list[str]:
        """What refers to `artifact_id`: unfinished studies and registered model versions."""
        return [who for who, spec in self._artifact_users() if artifact_id in study_artifacts(spec)]

    async def _collect_artifacts(self) -> None:
        """Leader: remove deleted artifacts nothing needs any more (their bytes, then their rows)."""
        while True:
            try:
                in_use = running_references([spec for _, spec in self._artifact_users()])
                await collect(self.artifacts, await self.artifact_bucket(), in_use)
            except Exception as err:  # the store or the database away: next round
                log.warning("artifact collection failed: %r", err)
            await asyncio.sleep(ARTIFACT_COLLECT_SECONDS)

    async def start(self):
        self.bus = await events.NatsBus.connect(self.settings.nats_url, "gateway", service_identity(self.settings),
                                               streams=True)
        self.channels = [mesh_channel(self.settings, address, peer) for address, peer in (
            (self.settings.prompt_generator_addr, "prompt-generator"), (self.settings.scheduler_addr, "gnn-scheduler"),
            (self.settings.evaluator_addr, "evaluator"))]
        trainer = None
        if self.settings.trainer_addr:
            self.channels.append(mesh_channel(self.settings, self.settings.trainer_addr, "trainer"))
            trainer = PeerClient("trainer", trainer_pb2_grpc.TrainerStub(self.channels[-1]))
        peers = Peers(
            PeerClient("prompt-generator", prompt_generator_pb2_grpc.PromptGeneratorStub(self.channels[0])),
            PeerClient("gnn-scheduler", scheduler_pb2_grpc.SchedulerStub(self.channels[1])),
            PeerClient("evaluator", evaluator_pb2_grpc.EvaluatorStub(self.channels[2])),
            trainer,
        )
        self.relay = ChangeRelay(self.bus, self.replica_id)
        self.controller = StudyController(self.store, self.bus, peers, Watchers(self.relay), self._exports_in_flight,
                                          FinalScorer(self._live_workers, self._trainer_client))
        self.registrar.on_done = self.controller.packer.request  # the trainer's place it held is free
        self.relay.start()
        await self.bus.nc.subscribe(subjects.SUBJECT_STUDY_CHANGED, cb=self._on_study_changed)
        # Lead at once if no other replica does (always, with one replica); else follow, and
        # campaign in the background.
        if not await self.election.try_once():
            log.info("gateway replica %s follows: another replica drives the studies", self.replica_id)
        self.election.start()
        if self.settings.http_port:
            self.http = HttpApi(self._bridge_socket())
            add_dashboard(self.http.app, self.settings.jaeger_url, self.read_roots, self._may_create)
            ssl_context = public_http_ssl_context(self.settings)
            port = await self.http.start(self.settings.host, self.settings.http_port, ssl_context)
            log.info("gateway HTTP API on %s://%s:%d", "https" if ssl_context else "http", self.settings.host, port)

    async def _lead(self) -> None:
        """Elected: take the trial events, hear the cluster, place trials and drive every study."""
        assert self.bus is not None and self.controller is not None
        controller = self.controller
        self.consumer = events.DurableConsumer(
            self.bus.js, events.EVENTS_STREAM_NAME, "gateway-trials",
            [subjects.SUBJECT_PROGRESS, subjects.SUBJECT_TRAINED, subjects.SUBJECT_FAILED, subjects.SUBJECT_PRUNED],
            controller.trial_events.on_trial_event, ack_wait=GATEWAY_ACK_WAIT, max_deliver=20, retry_delay=2.0, concurrency=2,
            on_give_up=controller.trial_events.on_give_up,
        )
        await self.consumer.start()
        await self.bus.nc.subscribe(subjects.SUBJECT_CLUSTER, cb=controller.on_cluster_changed)
        controller.start_leading()
        controller.watchers.add_hook(self._register_best)
        for version in self.registry.registering():  # a registration its gateway did not finish
            self.registrar.start(version)
        self._metrics_task = asyncio.create_task(self._refresh_trial_metrics())
        self._collect_task = asyncio.create_task(self._collect_artifacts())

    def _exports_in_flight(self) -> list[Export]:
        """Registrations running now (any replica's: the registry is shared), each on the
        trainer that holds its trial's model."""
        out = []
        for version in self.registry.registering():
            trial = self.store.trial(version.trial_id)
            if trial is not None and trial.trainer_id:
                out.append(Export(f"export/{version.tenant}/{version.name}/v{version.version}", trial.trainer_id,
                                  version.study_id))
        return out

    async def _on_study_changed(self, msg) -> None:
        """Another replica changed a study: tell this replica's watchers and hooks."""
        assert self.relay is not None and self.controller is not None
        event = self.relay.received(msg.data)
        if event is not None:
            self.controller.watchers.deliver(event.meta.study_id, event.change, event.meta.trial_id)

    async def _refresh_trial_metrics(self) -> None:
        """Keep the trial gauges (metrics.py) current: a cheap count every few seconds."""
        while True:
            with contextlib.suppress(Exception):
                counts, unplaced = self.store.running_trial_counts()
                for status in common_pb2.TrialStatus.values():
                    if status != common_pb2.TRIAL_STATUS_UNSPECIFIED:
                        metrics.TRIALS.labels(metrics.status_label(status)).set(counts.get(status, 0))
                metrics.UNPLACED_TRIALS.set(unplaced)
            await asyncio.sleep(TRIAL_METRICS_SECONDS)

    async def stop(self):
        if self.http is not None:
            await self.http.stop()
        if self._bridge_dir is not None:
            shutil.rmtree(self._bridge_dir, ignore_errors=True)
        for task in (self._metrics_task, self._collect_task):
            if task is not None:
                task.cancel()
        await self.registrar.stop()
        await self.trainers.close()
        if self.consumer:
            await self.consumer.stop()
        if self.controller:
            await self.controller.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.election.stop()
        for channel in self.channels:
            await channel.close()
        if self.bus is not None:
            await self.bus.close()
        self.store.close()
