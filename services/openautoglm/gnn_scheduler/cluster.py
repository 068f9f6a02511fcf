"""The cluster view: which trainers are live, from their heartbeats (no gRPC, no NATS here)."""
from __future__ import annotations

import time

from openautoglm.v1 import events_pb2, scheduler_pb2


class CapacityRegistry:
    """Latest heartbeat per trainer; a trainer that stops beating for `ttl` seconds is gone."""

    def __init__(self, ttl: float = 15.0):
        self.ttl = ttl
        self._beats: dict[str, tuple[float, scheduler_pb2.Worker]] = {}

    def update(self, beat: events_pb2.TrainerHeartbeat) -> tuple[list[str], list[str]]:
        """Record a beat; returns (joined, left) trainer ids."""
        worker_id = beat.worker.id
        if beat.leaving:
            return ([], [worker_id]) if self._beats.pop(worker_id, None) else ([], [])
        known = worker_id in self._beats
        self._beats[worker_id] = (time.monotonic(), beat.worker)
        return ([] if known else [worker_id]), []

    def expire(self) -> list[str]:
        """Forget trainers silent for longer than the ttl; returns their ids."""
        now = time.monotonic()
        gone = sorted(k for k, (seen, _) in self._beats.items() if now - seen > self.ttl)
        for worker_id in gone:
            del self._beats[worker_id]
        return gone

    def live(self) -> list[scheduler_pb2.Worker]:
        self.expire()
        return [w for _, w in sorted(self._beats.values(), key=lambda v: v[1].id)]
