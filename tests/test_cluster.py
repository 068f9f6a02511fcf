"""The cluster view and online packing: trainers joining, leaving and failing, over real NATS
heartbeats, the real Scheduler.Pack RPC, and (last test) real trainer processes in the mesh."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from helpers import small_spec, spec_proto
from openautoglm.common import events, subjects
from openautoglm.common.config import ServiceSettings
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.gnn_scheduler.app import SchedulerApp
from openautoglm.v1 import (
    common_pb2,
    events_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    studies_pb2,
    studies_pb2_grpc,
)


async def _beat(nc, worker_id: str, slots: int, memory_mb: float, leaving: bool = False) -> None:
    beat = events_pb2.TrainerHeartbeat(meta=subjects.new_meta("test"), leaving=leaving,
                                       worker=scheduler_pb2.Worker(id=worker_id, slots=slots, memory_mb=memory_mb, speed=1.0))
    await nc.publish(subjects.SUBJECT_HEARTBEAT, beat.SerializeToString())
    await nc.flush()


async def _next_change(queue: asyncio.Queue, timeout: float = 10.0) -> events_pb2.ClusterChanged:
    return events_pb2.ClusterChanged.FromString((await asyncio.wait_for(queue.get(), timeout)).data)


@pytest.fixture
async def scheduler(nats_url, tmp_path):
    """A gnn-scheduler on its own gRPC port, with a 1 s heartbeat timeout."""
    app = SchedulerApp(ServiceSettings(service="gnn-scheduler", nats_url=nats_url, data_dir=tmp_path, heartbeat_ttl=1.0,
                                       plaintext=True))
    server = grpc.aio.server()
    app.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield scheduler_pb2_grpc.SchedulerStub(channel)
    await channel.close()
    await app.stop()
    await server.stop(None)


async def test_joins_leaves_and_silent_trainers_are_announced_and_packing_follows(scheduler, nats_url):
    nc = await events.connect(nats_url, "test-cluster")
    changes: asyncio.Queue = asyncio.Queue()
    await nc.subscribe(subjects.SUBJECT_CLUSTER, cb=changes.put)
    try:
        await _beat(nc, "big", 1, 8000)
        assert list((await _next_change(changes)).joined) == ["big"]
        await _beat(nc, "small", 2, 1000)
        change = await _next_change(changes)
        assert list(change.joined) == ["small"] and [w.id for w in change.workers] == ["big", "small"]

        pending = [scheduler_pb2.Task(id="large", compute_seconds=9, memory_mb=6000),
                   scheduler_pb2.Task(id="a", compute_seconds=1, memory_mb=500),
                   scheduler_pb2.Task(id="b", compute_seconds=1, memory_mb=500),
                   scheduler_pb2.Task(id="c", compute_seconds=1, memory_mb=500)]
        reply = await scheduler.Pack(scheduler_pb2.PackRequest(pending=pending, policy="critical_path"), timeout=10)
        placed = {p.task_id: p.worker_id for p in reply.placements}
        # The 6000 MiB task only fits "big"; the small ones take the tight 1000 MiB slots first.
        assert placed == {"large": "big", "a": "small", "b": "small"}
        assert list(reply.free_slots) == [0, 0]

        # A graceful leave is announced at once; its running work comes back as orphaned.
        await _beat(nc, "small", 2, 1000, leaving=True)
        assert list((await _next_change(changes)).left) == ["small"]
        running = [scheduler_pb2.Assignment(task_id="a", worker_id="small"),
                   scheduler_pb2.Assignment(task_id="large", worker_id="big")]
        reply = await scheduler.Pack(scheduler_pb2.PackRequest(pending=pending[3:], running=running), timeout=10)
        assert list(reply.orphaned_task_ids) == ["a"] and not reply.placements  # "big" is busy with "large"

        # A trainer that stops beating is declared gone after the timeout (1 s here).
        started = time.monotonic()
        change = await _next_change(changes)
        assert list(change.left) == ["big"] and not change.workers
        assert time.monotonic() - started < 5
        reply = await scheduler.Pack(scheduler_pb2.PackRequest(pending=pending[3:]), timeout=10)
        assert list(reply.unfit_task_ids) == ["c"] and not reply.placements
    finally:
        await events.close(nc)


class _Clock:
    """A monotonic clock the test moves by hand (the registry reads `time.monotonic`)."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_restarted_scheduler_leaves_work_on_trainers_it_has_not_heard_from_until_it_has_settled(monkeypatch):
    from openautoglm.gnn_scheduler import cluster
    from openautoglm.gnn_scheduler.packing import pack
    from openautoglm.gnn_scheduler.service import _worker_slots

    clock = _Clock()
    monkeypatch.setattr(cluster, "time", clock)
    registry = cluster.CapacityRegistry(ttl=10.0)

    def beat(worker_id: str, leaving: bool = False):
        return registry.update(events_pb2.TrainerHeartbeat(
            leaving=leaving, worker=scheduler_pb2.Worker(id=worker_id, slots=1, speed=1.0)))

    beat("a")
    assert beat("c") == (["c"], [])
    assert beat("c", leaving=True) == ([], ["c"])
    running = {"on-a": "a", "on-b": "b", "on-c": "c"}

    def orphaned() -> list[str]:
        return pack([], running, _worker_slots(registry.live(), with_queues=True), "fifo", registry.is_gone).orphaned

    # Just started: "b" may simply not have beaten yet; "c" was seen leaving.
    assert not registry.settled() and orphaned() == ["on-c"]
    clock.now += 9.0
    beat("a")
    clock.now += 2.0  # a heartbeat timeout since start: "b" would have been heard by now
    assert registry.settled() and orphaned() == ["on-b", "on-c"]
    # Without the registry's judgement (workers named in the request), missing means gone.
    assert pack([], running, _worker_slots(registry.live()), "fifo").orphaned == ["on-b", "on-c"]


async def test_a_trainer_whose_connection_drops_is_gone_at_once_and_a_busy_one_is_not(nats_url, tmp_path, monkeypatch):
    """Pings on the subject a trainer's heartbeat names: NATS's "no responders" once its
    connection is closed (as the kernel closes a killed process's socket) makes it gone within
    seconds, not after the 60 s heartbeat timeout; a trainer that answers slowly stays live."""
    from openautoglm.gnn_scheduler import app as scheduler_app

    monkeypatch.setattr(scheduler_app, "RECONNECT_GRACE_SECONDS", 0.5)
    app = SchedulerApp(ServiceSettings(service="gnn-scheduler", nats_url=nats_url, data_dir=tmp_path, heartbeat_ttl=60.0,
                                       plaintext=True))
    await app.start()
    observer = await events.connect(nats_url, "test-observer")
    doomed = await events.connect(nats_url, "test-doomed-trainer")
    busy = await events.connect(nats_url, "test-busy-trainer")
    changes: asyncio.Queue = asyncio.Queue()
    try:
        await observer.subscribe(subjects.SUBJECT_CLUSTER, cb=changes.put)
        async def answer(msg):
            await msg.respond(b"")

        async def ignore(msg):  # too busy to answer
            pass

        await doomed.subscribe(subjects.ping_subject("doomed"), cb=answer)
        await busy.subscribe(subjects.ping_subject("busy"), cb=ignore)
        for nc, worker_id in ((doomed, "doomed"), (busy, "busy")):
            beat = events_pb2.TrainerHeartbeat(meta=subjects.new_meta("test"), ping_subject=subjects.ping_subject(worker_id),
                                               worker=scheduler_pb2.Worker(id=worker_id, slots=1, speed=1.0))
            await nc.publish(subjects.SUBJECT_HEARTBEAT, beat.SerializeToString())
            await nc.flush()
            assert list((await _next_change(changes)).joined) == [worker_id]
        await asyncio.sleep(3.0)  # pinged a few times: both are live
        assert changes.empty() and {w.id for w in app.registry.live()} == {"doomed", "busy"}
        closed = time.monotonic()
        await doomed.close()
        change = await _next_change(changes, timeout=15)
        assert list(change.left) == ["doomed"] and [w.id for w in change.workers] == ["busy"]
        assert time.monotonic() - closed < 10  # far sooner than the 60 s timeout
    finally:
        for nc in (observer, doomed, busy):
            await events.close(nc)
        await app.stop()


@pytest.mark.parametrize("request_, field", [
    (scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task(id="x"), scheduler_pb2.Task(id="x")]), "duplicate"),
    (scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task()]), "pending[0]"),
    (scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task(id="x")], policy="lottery"), "policy"),
    (scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task(id="x", memory_mb=-1)]), "memory_mb"),
    (scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task(id="x", pool="gpu")]), "pending[0].pool"),
    (scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task(id="x")],
                               dependencies=[scheduler_pb2.Dependency(from_task="nowhere", to_task="x")]), "dependencies[0].from_task"),
    (scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task(id="x"), scheduler_pb2.Task(id="y")],
                               dependencies=[scheduler_pb2.Dependency(from_task="x", to_task="y"),
                                             scheduler_pb2.Dependency(from_task="y", to_task="x")]), "cycle"),
])
async def test_bad_pack_requests_are_invalid_argument_naming_the_problem(scheduler, request_, field):
    request_.workers.add(id="w", slots=1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await scheduler.Pack(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()


async def test_a_study_whose_trials_fit_no_trainer_is_refused(stack):
    async with stack.service_channel("gnn-scheduler") as sched_channel:
        await _wait_for_workers(scheduler_pb2_grpc.SchedulerStub(sched_channel), {"trainer-0"})
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_proto(training={"memory_mb": 10**9})), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "training.memory_mb" in info.value.details() and "trainer-0" in info.value.details()


async def test_the_evaluator_announces_its_pool_and_pack_weighs_scoring_stages_against_it(stack):
    """The stack's evaluator joins the scheduler's evaluator pool (its own heartbeat subject, its
    NATS user's only right); Pack lists it beside the trainers, never places a trial on it, and
    a trial's scoring stage is never placed (it follows the trial's training)."""
    async with stack.service_channel("gnn-scheduler") as sched_channel:
        scheduler = scheduler_pb2_grpc.SchedulerStub(sched_channel)
        await _wait_for_workers(scheduler, {"trainer-0"})
        deadline = time.monotonic() + 30
        while True:
            reply = await scheduler.Pack(scheduler_pb2.PackRequest(
                pending=[scheduler_pb2.Task(id="t", study_id="s", compute_seconds=5),
                         scheduler_pb2.Task(id="t#score", study_id="s", kind="evaluate", pool="evaluator", compute_seconds=1)],
                dependencies=[scheduler_pb2.Dependency(from_task="t", to_task="t#score")], policy="critical_path"), timeout=10)
            pools = {w.id: w.pool for w in reply.workers}
            if "evaluator" in pools.values() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    evaluators = [w for w in reply.workers if w.pool == "evaluator"]
    assert len(evaluators) == 1 and evaluators[0].slots >= 1 and evaluators[0].id.startswith("evaluator-")
    assert [(a.task_id, pools[a.worker_id]) for a in reply.placements] == [("t", "")]  # a trainer; never the evaluator
    # ListWorkers stays the trainers' list.
    async with stack.service_channel("gnn-scheduler") as sched_channel:
        listed = (await scheduler_pb2_grpc.SchedulerStub(sched_channel).ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10)).workers
    assert all(w.pool != "evaluator" for w in listed)


def _start_trainer(stack, trainer_id: str, memory_mb: float) -> subprocess.Popen:
    log = open(stack.log_dir / f"{trainer_id}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "openautoglm.cli", "serve", "trainer", "--port", "0", "--trainer-id", trainer_id,
         "--trainer-memory-mb", str(memory_mb), "--nats-url", stack.nats_url, "--evaluator", stack.address("evaluator"),
         "--data-dir", str(stack.data_dir)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
    )


async def _wait_for_workers(stub, ids: set[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {w.id for w in (await stub.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10)).workers}
        if ids <= live:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"trainers {ids} never reported (see their logs)")


async def test_trials_are_packed_onto_trainers_that_hold_them_and_placed_again_when_one_leaves(stack):
    """Real trainer processes join the stack's trainer-0: "roomy" takes work, "cramped" (1 MiB
    per slot) is never given any; SIGTERM to "roomy" mid-trial re-places its trial on trainer-0."""
    roomy, cramped = _start_trainer(stack, "roomy", 200_000), _start_trainer(stack, "cramped", 1)
    try:
        async with stack.service_channel("gnn-scheduler") as sched_channel, \
                stack.gateway_channel() as channel:
            await _wait_for_workers(scheduler_pb2_grpc.SchedulerStub(sched_channel), {"trainer-0", "roomy", "cramped"})
            stub = studies_pb2_grpc.StudiesStub(channel)
            spec = small_spec(budget={"max_trials": 4, "parallelism": 3},
                              dataset={"builtin": "sentiment-demo", "max_examples": 400})
            spec["search_space"]["hyperparameters"]["epochs"] = {"type": "choice", "values": [6, 8]}
            study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_to_proto(validate_dict(spec))),
                                            timeout=30)).study
            # Wait until a trial is training on "roomy", then take "roomy" away.
            deadline, victim = time.monotonic() + 120, None
            while victim is None and time.monotonic() < deadline:
                current = (await stub.GetStudy(studies_pb2.GetStudyRequest(study_id=study.id), timeout=10)).study
                victim = next((t.id for t in current.trials if t.assigned_worker_id == "roomy"
                               and t.status == common_pb2.TRIAL_STATUS_TRAINING), None)
                await asyncio.sleep(0.2)
            assert victim, "no trial was ever placed on the roomy trainer"
            roomy.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(roomy.wait, 60) == 0
            async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=400):
                study = update.study
    finally:
        for proc in (roomy, cramped):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 60)
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    assert all(t.status == common_pb2.TRIAL_STATUS_SUCCEEDED for t in study.trials)
    assert not any("cramped" in (t.assigned_worker_id, t.trainer_id) for t in study.trials)
    moved = next(t for t in study.trials if t.id == victim)
    assert moved.attempt >= 1 and moved.trainer_id == moved.assigned_worker_id == "trainer-0"


def test_workers_command_lists_the_live_trainers_with_their_capacity(stack):
    # The CLI calls the scheduler as the operator, with the certificate `up` created.
    env = {**os.environ, "COLUMNS": "200", "OPENAUTOGLM_TLS_DIR": str(stack.tls_dir)}
    result = subprocess.run([sys.executable, "-m", "openautoglm.cli", "workers", "--scheduler", stack.address("gnn-scheduler")],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "trainer-0" in result.stdout and "live trainer" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "openautoglm.cli", "workers", "--scheduler", "127.0.0.1:9"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert missing.returncode == 1 and "ListWorkers: UNAVAILABLE" in missing.stderr
