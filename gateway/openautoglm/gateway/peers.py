"""The services and the messaging the gateway's core uses, as the core sees them: no gRPC or NATS types.

A call either answers, is refused on purpose (`PeerRefused`: the request itself is wrong, or
the peer cannot do it), or cannot happen now (`PeerUnavailable`: the peer is down, slow or
restarting; retry later). `clients.py` builds these from gRPC stubs and status codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import context as otel_context

from openautoglm.common.subjects import Event


class PeerError(Exception):
    """A call to a peer service did not answer; `code` is the peer's status name."""

    def __init__(self, peer: str, method: str, code: str, details: str):
        super().__init__(f"{peer}.{method}: {code}: {details}")
        self.peer, self.method, self.code, self.details = peer, method, code, details


class PeerRefused(PeerError):
    """A deliberate refusal (bad request, precondition not met): retrying will not help."""


class PeerUnavailable(PeerError):
    """A transient failure (unavailable, deadline exceeded, ...): retry later."""


class Bus(Protocol):
    """The messaging the gateway's core needs (events.NatsBus provides it over NATS)."""

    async def publish(self, subject: str, event: Event, ctx: otel_context.Context | None = None) -> None:
        """A durable event (JetStream), de-duplicated by its event id; raises
        subjects.BusUnavailable when NATS cannot take it now (retry later)."""

    async def notify(self, subject: str, event: Event) -> None:
        """A fire-and-forget message (core NATS)."""

    async def purge_jobs(self, worker_id: str) -> None:
        """Drop every job still queued for one trainer."""


@dataclass
class Peers:
    """Client objects of the services the gateway calls: each has the peer's RPC methods as
    `await peer.Method(request, timeout=...)`, raising PeerRefused / PeerUnavailable."""

    prompt_generator: Any
    scheduler: Any
    evaluator: Any
    trainer: Any = None  # optional: only ExportBest needs it
