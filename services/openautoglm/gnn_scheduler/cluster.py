"""The cluster view: which trainers are live, from their heartbeats (no gRPC, no NATS here).

A trainer is live from its first heartbeat until it says it is leaving, stops beating for `ttl`
seconds, or is found disconnected (`depart`, from the scheduler's pings). A scheduler that has
just started knows no trainer yet, so for its first `ttl` seconds it cannot tell "not heard yet"
from "gone": until then (`settled()` false) only trainers it saw depart are gone, and work placed
on a trainer it has not heard from yet is left where it is.
"""
from __future__ import annotations

import time

from openautoglm.v1 import events_pb2, scheduler_pb2


class CapacityRegistry:
    """Latest heartbeat per trainer; a trainer that stops beating for `ttl` seconds is gone."""

    def __init__(self, ttl: float = 15.0):
        self.ttl = ttl
        self._started = time.monotonic()
        self._beats: dict[str, tuple[float, scheduler_pb2.Worker]] = {}
        self._busy: dict[str, int] = {}  # slots running work, per trainer, at its latest beat
        self._ping_subjects: dict[str, str] = {}
        # Trainers seen to go (and not back since): gone even before the registry has settled.
        self._departed: set[str] = set()
        # Trainers asked about before settling and not heard from: judged once settled.
        self.undecided: set[str] = set()

    def update(self, beat: events_pb2.TrainerHeartbeat) -> tuple[list[str], list[str]]:
        """Record a beat; returns (joined, left) trainer ids."""
        worker_id = beat.worker.id
        if beat.leaving:
            return ([], [worker_id]) if self.depart(worker_id) else ([], [])
        known = worker_id in self._beats
        self._beats[worker_id] = (time.monotonic(), beat.worker)
        self._busy[worker_id] = beat.busy_slots
        self._departed.discard(worker_id)
        if beat.ping_subject:
            self._ping_subjects[worker_id] = beat.ping_subject
        return ([] if known else [worker_id]), []

    def depart(self, worker_id: str) -> bool:
        """Forget a trainer now (it left, or it is disconnected); False if it was not live."""
        self._ping_subjects.pop(worker_id, None)
        self._busy.pop(worker_id, None)
        if self._beats.pop(worker_id, None) is None:
            return False
        self._departed.add(worker_id)
        return True

    def expire(self) -> list[str]:
        """Forget trainers silent for longer than the ttl; returns their ids."""
        now = time.monotonic()
        gone = sorted(k for k, (seen, _) in self._beats.items() if now - seen > self.ttl)
        for worker_id in gone:
            self.depart(worker_id)
        return gone

    def settled(self) -> bool:
        """Whether a full heartbeat timeout has passed since start: every live trainer is known."""
        return time.monotonic() - self._started > self.ttl

    def is_gone(self, worker_id: str) -> bool:
        """Whether work placed on `worker_id` must be placed again."""
        if worker_id in self._beats:
            return False
        if self.settled() or worker_id in self._departed:
            return True
        self.undecided.add(worker_id)
        return False

    def ping_subjects(self) -> dict[str, str]:
        """Live trainers that answer liveness pings, and where."""
        return {w: s for w, s in self._ping_subjects.items() if w in self._beats}

    def busy_slots(self) -> dict[str, int]:
        """Slots running work per live trainer, as its latest heartbeat said."""
        return {w: n for w, n in self._busy.items() if w in self._beats}

    def live(self) -> list[scheduler_pb2.Worker]:
        self.expire()
        return [w for _, w in sorted(self._beats.values(), key=lambda v: v[1].id)]
