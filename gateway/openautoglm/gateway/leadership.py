"""Which gateway replica drives the studies.

Every replica serves the public API from the shared database. Exactly one, the leader, drives
the running studies: it proposes their trials, consumes the trainers' results and places every
study's trials on the one pool of trainers. Placement needs a single author (two packers would
put one trial on two trainers), so leadership is one lock for the whole fleet, not a lease per
study; the followers' API calls write only what cannot collide (a new study's row, a cancel,
which the store's final-state rule makes safe against the leader's writes).

The leader is whoever holds a lock that its holder's death releases by itself:
- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a connection the leader
  keeps open. PostgreSQL releases it when that session ends; a killed process's socket is closed
  by its kernel, so a follower takes over within one election interval. No lease to time out,
  no clocks to trust.
- SQLite (replicas on one machine): an exclusive `flock` on a file beside the database, which
  the kernel releases when the process dies.

Why not a lease in NATS KV: the lock lives with the state it guards. A replica that cannot
reach the database could not drive a study anyway, whereas a NATS lease would move leadership
whenever NATS restarts (the chaos tests restart it mid-study) while the database is fine, and a
lease's TTL makes every takeover wait it out.

A leader that finds its lock gone (its lock connection broke: the database restarted, or the
network between them) exits at once, as Kubernetes' controller-runtime does: it may no longer
write, and its supervisor (`openautoglm up`, the kubelet) starts it again as a follower.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from openautoglm.common.metrics import GATEWAY_LEADER

log = logging.getLogger(__name__)
# The advisory-lock key of gateway leadership (database.py's MIGRATION_LOCK is another).
LEADER_LOCK_KEY = 0x6F6167_6C6472
# A follower tries for the lock this often; a leader checks that it still holds it this often.
ELECTION_SECONDS = 1.0
CHECK_SECONDS = 1.0
# A check that does not answer within this long counts as the lock lost.
CHECK_TIMEOUT_SECONDS = 10.0
# The exit code of a leader that lost its lock (EX_TEMPFAIL: start it again).
LEADERSHIP_LOST_EXIT_CODE = 75
# TCP keepalives on the lock's connection: a leader cut off from PostgreSQL notices in ~20 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3}


class LeaderLock(Protocol):
    """A lock that at most one replica holds, released by itself when its holder dies."""

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this replica holds it now."""

    def still_held(self) -> bool:
        """False once the lock is known lost (it cannot be regained: the holder must exit)."""

    def release(self) -> None: ...


class PostgresLeaderLock:
    """A session-level advisory lock on a connection of its own (not the pool's: this one
    connection is the lock)."""

    def __init__(self, url: str, key: int = LEADER_LOCK_KEY):
        self.key = key
        self._engine = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=KEEPALIVES)
        self._connection: Connection | None = None
        self._held = False

    def try_acquire(self) -> bool:
        try:
            if self._connection is None:
                self._connection = self._engine.connect()
            got = self._connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar_one()
        except sa.exc.SQLAlchemyError as err:
            log.warning("leader election: the database did not answer (%s); trying again", err.__class__.__name__)
            self._drop_connection()
            return False
        self._held = bool(got)
        return self._held

    def still_held(self) -> bool:
        if not self._held or self._connection is None:
            return False
        try:
            self._connection.execute(sa.text("SELECT 1")).scalar_one()
        except sa.exc.SQLAlchemyError:
            self._held = False  # the session is gone, and the lock with it
        return self._held

    def release(self) -> None:
        self._held = False
        self._drop_connection()  # ending the session releases its locks
        self._engine.dispose()

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


class FileLeaderLock:
    """An exclusive flock on a file (replicas sharing one SQLite database on one machine)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] | None = None

    def try_acquire(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")  # who leads, for a person looking
        handle.flush()
        self._file = handle
        return True

    def still_held(self) -> bool:
        return self._file is not None  # the kernel holds it for as long as this process lives

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None


def leader_lock_for(engine: Engine) -> LeaderLock:
    """The lock for the gateway's database: an advisory lock on PostgreSQL, a file lock beside a
    SQLite file."""
    if engine.dialect.name == "postgresql":
        return PostgresLeaderLock(engine.url.render_as_string(hide_password=False))
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        raise ValueError(f"no leader lock for a {engine.dialect.name} database at {database!r}")
    return FileLeaderLock(Path(database).with_name(Path(database).name + ".leader"))


def exit_deposed() -> None:
    """A leader that lost its lock must stop writing now: exit, to be started again as a follower."""
    log.critical("gateway leadership lost (the lock's database session ended); exiting so as to restart as a follower")
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    sys.stderr.flush()
    os._exit(LEADERSHIP_LOST_EXIT_CODE)


class LeaderElection:
    """Tries for the lock until it has it, then leads (`on_elected`) until the lock is lost
    (`on_lost`, which by default ends the process) or the election is stopped."""

    def __init__(self, lock: LeaderLock, replica_id: str, on_elected: Callable[[], Awaitable[None]],
                 on_lost: Callable[[], None] = exit_deposed):
        self.lock = lock
        self.replica_id = replica_id
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.leading = False
        self._task: asyncio.Task[None] | None = None
        GATEWAY_LEADER.set(0)

    async def try_once(self) -> bool:
        """One try for the lock; on success, lead. Returns whether this replica leads."""
        if not self.leading and await asyncio.to_thread(self.lock.try_acquire):
            self.leading = True
            GATEWAY_LEADER.set(1)
            log.info("gateway replica %s is the leader: it drives the running studies", self.replica_id)
            await self.on_elected()
        return self.leading

    def start(self) -> None:
        """Campaign (a follower) or keep watch over the lock (the leader), in the background."""
        self._task = asyncio.create_task(self._run(), name="leader-election")

    async def _run(self) -> None:
        while not self.leading:
            await asyncio.sleep(ELECTION_SECONDS)
            try:
                await self.try_once()
            except Exception:  # elected, but could not take the work up: let a fresh start try
                log.exception("gateway replica %s could not start leading", self.replica_id)
                self.on_lost()
                return
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                held = await asyncio.wait_for(asyncio.to_thread(self.lock.still_held), CHECK_TIMEOUT_SECONDS)
            except asyncio.TimeoutError:
                held = False
            if not held:
                self.leading = False
                GATEWAY_LEADER.set(0)
                self.on_lost()
                return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.lock.release)
        self.leading = False
        GATEWAY_LEADER.set(0)
