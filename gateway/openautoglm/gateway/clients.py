"""gRPC clients of the gateway's peers: stub calls whose failures become the core's PeerErrors."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace

from openautoglm.common.metrics import PEER_RETRIES
from openautoglm.gateway.peers import PeerRefused, PeerUnavailable

# Status codes that mean "the request will not succeed as sent"; every other failure is transient.
REFUSALS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
})


class PeerClient:
    """Wraps a generated stub: `await client.Method(request, timeout=...)` calls the RPC, waiting
    for a peer that is away until the call's deadline (wait_for_ready), and raises PeerRefused or
    PeerUnavailable instead of grpc.aio.AioRpcError. A transient failure is an event on the
    current span, so every retry the caller makes shows on the study's trace."""

    def __init__(self, name: str, stub: Any):
        self._name = name
        self._stub = stub

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        rpc = getattr(self._stub, method)

        async def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("wait_for_ready", True)
            try:
                return await rpc(request, **kwargs)
            except grpc.aio.AioRpcError as err:
                if err.code() in REFUSALS:
                    raise PeerRefused(self._name, method, err.code().name, err.details() or "") from err
                trace.get_current_span().add_event("peer.unavailable", {
                    "peer": self._name, "method": method, "code": err.code().name})
                PEER_RETRIES.labels(self._name, err.code().name).inc()  # every caller tries again later
                raise PeerUnavailable(self._name, method, err.code().name, err.details() or "") from err

        return call
