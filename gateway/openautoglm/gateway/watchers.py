"""What changed in a study, told to everyone who needs to know.

Every change of a study is put on each of its watchers' queues (WatchStudy streams), with the
trial it concerns (empty for a change of the study itself), so a watcher that asked for changes
only can send just those trials. The controller's hooks hear every change too.

Gateway replicas share one database, and any of them may be asked to watch a study that another
one drives: the replica that makes a change also publishes it (`ChangeRelay`, core NATS), and
every other replica delivers it to its own watchers and hooks. A change published while NATS is
away is not replayed (core NATS); the study's state in the database is unaffected.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from openautoglm.common import subjects
from openautoglm.common.subjects import BusUnavailable
from openautoglm.gateway.peers import Bus
from openautoglm.v1 import events_pb2

log = logging.getLogger(__name__)
# (what changed, the trial id or "")
Change = tuple[str, str]
# Called with (study id, what changed, trial id or "").
ChangeHook = Callable[[str, str, str], None]
# Changes waiting to be published; beyond this (NATS away a long time) the oldest are dropped.
RELAY_BACKLOG = 10_000


class Watchers:
    def __init__(self, relay: ChangeHook | None = None) -> None:
        self._queues: dict[str, set[asyncio.Queue[Change]]] = {}
        self._hooks: list[ChangeHook] = []
        self.relay = relay  # tells the other replicas (ChangeRelay); None: this replica alone

    def add_hook(self, hook: ChangeHook) -> None:
        self._hooks.append(hook)

    def subscribe(self, study_id: str) -> asyncio.Queue[Change]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._queues.setdefault(study_id, set()).add(queue)
        return queue

    def unsubscribe(self, study_id: str, queue: asyncio.Queue[Change]) -> None:
        watching = self._queues.get(study_id)
        if watching is not None:
            watching.discard(queue)
            if not watching:
                del self._queues[study_id]

    def notify(self, study_id: str, change: str, trial_id: str = "") -> None:
        """A change this replica made: its own watchers and hooks, then the other replicas."""
        self.deliver(study_id, change, trial_id)
        if self.relay is not None:
            self.relay(study_id, change, trial_id)

    def deliver(self, study_id: str, change: str, trial_id: str = "") -> None:
        """A change (made here or by another replica) for this replica's watchers and hooks."""
        for queue in self._queues.get(study_id, ()):
            queue.put_nowait((change, trial_id))
        for hook in self._hooks:
            try:
                hook(study_id, change, trial_id)
            except Exception:  # a hook's bug must not lose the change for the others
                log.exception("change hook failed for %s %s", study_id, change)


class ChangeRelay:
    """Publishes this replica's changes on `autoglm.study.changed`, in the order they were made
    (one task sends them all), and reads the other replicas' changes."""

    def __init__(self, bus: Bus, replica_id: str) -> None:
        self.bus = bus
        self.replica_id = replica_id
        self._queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, study_id: str, change: str, trial_id: str) -> None:
        if self._queue.qsize() >= RELAY_BACKLOG:
            self._queue.get_nowait()
        self._queue.put_nowait((study_id, change, trial_id))

    def start(self) -> None:
        self._task = asyncio.create_task(self._send(), name="change-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _send(self) -> None:
        while True:
            study_id, change, trial_id = await self._queue.get()
            event = events_pb2.StudyChanged(meta=subjects.new_meta("gateway", study_id, trial_id), change=change,
                                            replica_id=self.replica_id)
            try:
                await self.bus.notify(subjects.SUBJECT_STUDY_CHANGED, event)
            except BusUnavailable as err:
                log.debug("change %s of %s not relayed: %s", change, study_id, err)

    def received(self, data: bytes) -> events_pb2.StudyChanged | None:
        """Another replica's change, or None (this replica's own, or not a StudyChanged)."""
        try:
            event = events_pb2.StudyChanged.FromString(data)
        except Exception:
            log.warning("an undecodable message on %s was dropped", subjects.SUBJECT_STUDY_CHANGED)
            return None
        if event.replica_id == self.replica_id or not event.meta.study_id:
            return None
        return event
