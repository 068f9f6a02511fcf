"""The services the gateway's core calls, as the core sees them: no gRPC types.

A call either answers, is refused on purpose (`PeerRefused`: the request itself is wrong, or
the peer cannot do it), or cannot happen now (`PeerUnavailable`: the peer is down, slow or
restarting; retry later). `clients.py` builds these from gRPC stubs and status codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PeerError(Exception):
    """A call to a peer service did not answer; `code` is the peer's status name."""

    def __init__(self, peer: str, method: str, code: str, details: str):
        super().__init__(f"{peer}.{method}: {code}: {details}")
        self.peer, self.method, self.code, self.details = peer, method, code, details


class PeerRefused(PeerError):
    """A deliberate refusal (bad request, precondition not met): retrying will not help."""


class PeerUnavailable(PeerError):
    """A transient failure (unavailable, deadline exceeded, ...): retry later."""


@dataclass
class Peers:
    """Client objects of the services the gateway calls: each has the peer's RPC methods as
    `await peer.Method(request, timeout=...)`, raising PeerRefused / PeerUnavailable."""

    prompt_generator: Any
    scheduler: Any
    evaluator: Any
    trainer: Any = None  # optional: only ExportBest needs it
