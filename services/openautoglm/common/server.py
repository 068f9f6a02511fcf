"""One bootstrap for all five services: gRPC aio server, health, reflection, tracing, SIGTERM.

A service provides a `ServiceApp`: it registers its servicers on the server and may start and
stop background work (NATS consumers, heartbeats). `serve` does the rest, the same way for
every service: health reports SERVING only once the app has started, NOT_SERVING as soon as a
stop is requested; SIGTERM/SIGINT stop accepting RPCs, give in-flight ones `grace_seconds`,
then stop the app (which hands unfinished queue work back) and flush telemetry.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from openautoglm.common.config import ServiceSettings
from openautoglm.common.metrics import RPC_SECONDS, serve_metrics
from openautoglm.common.tls import ALLOWED_CALLERS, ALLOWED_CALLERS_BY_GRPC_SERVICE, peer_identity, public_certificate, public_server_credentials, service_identity

log = logging.getLogger(__name__)

# Messages up to 64 MiB: predictions for a few thousand held-out examples fit easily.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# Calls spread over every address a target resolves to (a Kubernetes headless Service's pods,
# or an `ipv4:a,b` list), instead of sticking to the first connection.
CLIENT_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))]
# Inside the mesh a peer that is restarting is a retry, not an error: gRPC retries a call that
# meets UNAVAILABLE (no connection, or a service still starting: ReadyGate) a few times with
# backoff, and reconnects within a second of the peer's return instead of backing off to
# gRPC's default 120 s. Callers add wait_for_ready and their own deadline-bound retry loop.
MESH_RETRY_POLICY = {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                     "retryableStatusCodes": ["UNAVAILABLE"]}
MESH_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                                        "methodConfig": [{"name": [{}], "retryPolicy": MESH_RETRY_POLICY}]})),
    ("grpc.enable_retries", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# What the app's own stop (consumers, drivers, connections) may take once RPCs have drained.
APP_STOP_SECONDS = 20.0

# Not traced: a probe every few seconds would bury the studies' spans.
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE = reflection.SERVICE_NAME


class ServiceApp(Protocol):
    """What each service plugs into the bootstrap."""

    @property
    def service_names(self) -> tuple[str, ...]:
        """Fully qualified gRPC service names, for health and reflection."""
        ...

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def trace_server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """gRPC server interceptors that continue the caller's trace (health checks excluded)."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return [
        aio_server_interceptor(
            filter_=filters.negate(
                filters.any_of(
                    filters.service_name(HEALTH_SERVICE), filters.service_name(REFLECTION_SERVICE)
                )
            )
        )
    ]


def trace_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """gRPC client interceptors that send the current trace context in the call's metadata."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters

    return aio_client_interceptors(filter_=filters.negate(filters.service_name(HEALTH_SERVICE)))


class ReadyGate(grpc.aio.ServerInterceptor):
    """Answers the app's own RPCs with UNAVAILABLE (retry) until `app.start()` has finished, so a
    call that races start-up never meets a half-built service (health and reflection pass)."""

    def __init__(self, app_services: tuple[str, ...]):
        self._prefixes = tuple(f"/{name}/" for name in app_services)
        self.ready = False

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if self.ready or handler is None or not handler_call_details.method.startswith(self._prefixes):
            return handler
        return _unavailable_like(handler)


async def _refuse_while_starting(context, request) -> None:
    await context.abort(grpc.StatusCode.UNAVAILABLE, "the service is starting; retry shortly")


def _unavailable_like(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that aborts with UNAVAILABLE."""
    return guarded(handler, _refuse_while_starting)


async def handler_result(result):
    """What a wrapped unary handler returns, whether it is a coroutine function or a plain one."""
    return await result if inspect.isawaitable(result) else result


async def stream_replies(result):
    """A wrapped streaming handler's replies, whether it is an async generator or writes them
    with context.write() (then there is nothing to relay)."""
    if hasattr(result, "__aiter__"):
        async for reply in result:
            yield reply
    else:
        await handler_result(result)


Check = Callable[[Any, Any], Awaitable[None]]


Finish = Callable[[Any, BaseException | None], None]


def guarded(handler: grpc.RpcMethodHandler, before: Check, each: Check | None = None,
            request_deserializer: Callable[[bytes], Any] | None = None, after: Finish | None = None) -> grpc.RpcMethodHandler:
    """`handler`, same shape, with `before(context, request)` awaited before any of it runs
    (`request` is None for client-streaming methods) and, for those, `each(context, request)`
    awaited on every request as it arrives; either may abort the call. `after(context, error)`
    is called when the call ends (error None when it returned). The one way the server
    interceptors (start-up gate, undecodable bytes, the gateway's API keys, metrics) wrap a
    handler."""
    codec = {"request_deserializer": request_deserializer or handler.request_deserializer,
             "response_serializer": handler.response_serializer}

    async def checked(requests, context):
        async for request in requests:
            if each is not None:
                await each(context, request)
            yield request

    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request, context):
            with _reporting(after, context):
                await before(context, request)
                return await handler_result(inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request, context):
            with _reporting(after, context):
                await before(context, request)
                async for reply in stream_replies(inner_us(request, context)):
                    yield reply

        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests, context):
            with _reporting(after, context):
                await before(context, None)
                return await handler_result(inner_su(checked(requests, context), context))

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    inner_ss = handler.stream_stream

    async def stream_stream(requests, context):
        with _reporting(after, context):
            await before(context, None)
            async for reply in stream_replies(inner_ss(checked(requests, context), context)):
                yield reply

    return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)


@contextlib.contextmanager
def _reporting(after: Finish | None, context):
    """Call `after(context, error)` when the block ends, however it ends."""
    if after is None:
        yield
        return
    try:
        yield
    except BaseException as err:
        after(context, err)
        raise
    after(context, None)


class RpcTimer:
    """Observes one RPC into RPC_SECONDS when it ends (`finished`)."""

    __slots__ = ("service", "method", "started")

    def __init__(self, full_method: str):
        _, _, path = full_method.partition("/")
        self.service, _, self.method = path.partition("/")
        self.started = time.perf_counter()

    def finished(self, context, error: BaseException | None) -> None:
        code = _code(context, error)
        RPC_SECONDS.labels(self.service, self.method, code).observe(time.perf_counter() - self.started)


def _code(context, error: BaseException | None) -> str:
    """The status an RPC ended with: the one set on its context (abort, set_code), else OK, or
    CANCELLED / UNKNOWN for an exception that set none."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # grpc.aio keeps the numeric code
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Times every RPC the server handles (the outermost interceptor: refusals by the others
    are counted too, with their codes)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        timer = RpcTimer(handler_call_details.method)  # interceptors run once per call
        return guarded(handler, _nothing, after=timer.finished)


async def _nothing(context, request) -> None:
    return None


class _Undecodable:
    """Stands for request bytes that did not decode, until the handler can refuse them."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Request bytes that do not decode as the method's request message get INVALID_ARGUMENT on
    every method of every service. gRPC itself answers a failing deserializer with UNKNOWN
    ("Unexpected <class 'DecodeError'>"), which tells a client nothing it can act on; here the
    deserializer hands a marker to the handler, which aborts before any servicer code runs."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return _refusing_undecodable(handler)


def _refusing_undecodable(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    decode = handler.request_deserializer
    message = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
    expected = message.full_name if message is not None else "request"

    def tolerant(raw: bytes):
        try:
            return decode(raw)
        except Exception as err:  # protobuf's DecodeError (and anything else a decoder raises)
            return _Undecodable(type(err).__name__)

    async def refuse_undecodable(context, request) -> None:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"request: the bytes are not a valid {expected} message ({request.reason})")

    return guarded(handler, refuse_undecodable, each=refuse_undecodable, request_deserializer=tolerant)


class CallerCheck(grpc.aio.ServerInterceptor):
    """An internal service's own methods answer only the mesh identities allowed to call them
    (`tls.ALLOWED_CALLERS`, with per gRPC service exceptions): any other certificate from the
    mesh's CA gets PERMISSION_DENIED.
    TLS has already refused callers without one."""

    def __init__(self, app_services: tuple[str, ...], allowed: frozenset[str],
                 by_grpc_service: Mapping[str, frozenset[str]] | None = None):
        exceptions = by_grpc_service or {}
        self._allowed = {f"/{name}/": exceptions.get(name, allowed) for name in app_services}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        prefix = "/" + handler_call_details.method.lstrip("/").split("/", 1)[0] + "/"
        allowed = self._allowed.get(prefix)
        if allowed is None:
            return handler
        return guarded(handler, functools.partial(self._check, allowed))

    @staticmethod
    async def _check(allowed: frozenset[str], context, request) -> None:
        caller = peer_identity(context)
        if caller not in allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"caller {caller or '(no certificate)'} may not call this service; "
                                f"allowed: {', '.join(sorted(allowed))}")


def channel(address: str, credentials: grpc.ChannelCredentials | None = None, peer: str = "",
            interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
            options: Sequence[tuple[str, Any]] = CLIENT_OPTIONS) -> grpc.aio.Channel:
    """A client channel that carries the current trace context to `address` (after `interceptors`,
    such as the API key's): TLS with `credentials`, checking that the server's certificate is
    `peer`'s (when given) whatever address it was reached at; plaintext without credentials."""
    hooks = [*interceptors, *trace_client_interceptors()]
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=list(options), interceptors=hooks)
    return grpc.aio.secure_channel(address, credentials, options=_named(options, peer), interceptors=hooks)


def blocking_channel(address: str, credentials: grpc.ChannelCredentials | None = None, peer: str = "",
                     options: Sequence[tuple[str, Any]] = CLIENT_OPTIONS) -> grpc.Channel:
    """`channel`'s blocking twin, for callers that run in worker threads (same TLS and peer-name
    rules; the caller sends the trace context in each call's metadata)."""
    if credentials is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, credentials, options=_named(options, peer))


def _named(options: Sequence[tuple[str, Any]], peer: str) -> list[tuple[str, Any]]:
    """Channel options that check the server's certificate names `peer` (when given), whatever
    address it was reached at."""
    return [*options, *([("grpc.ssl_target_name_override", peer)] if peer else [])]


def mesh_channel(settings: ServiceSettings, address: str, peer: str) -> grpc.aio.Channel:
    """This service calling the internal service `peer` at `address`: mutual TLS with its own
    certificate (plaintext when the service runs with --plaintext)."""
    identity = service_identity(settings)
    return channel(address, identity.channel_credentials() if identity else None, peer, options=MESH_OPTIONS)


def _bind(server: grpc.aio.Server, settings: ServiceSettings) -> int:
    """Bind the service's port: plaintext when asked (loopback only, checked with the settings),
    the gateway's public TLS, or an internal service's mutual TLS."""
    address = f"{settings.host}:{settings.port}"
    identity = service_identity(settings)
    if identity is None:
        return server.add_insecure_port(address)
    if settings.service == "gateway":
        return server.add_secure_port(address, public_server_credentials(*public_certificate(settings, identity)))
    return server.add_secure_port(address, identity.server_credentials())


async def serve(settings: ServiceSettings, app: ServiceApp, stop_requested: asyncio.Event | None = None) -> None:
    """Run `app` until SIGTERM/SIGINT (or until `stop_requested` is set, when given); returns after
    a clean stop."""
    gate = ReadyGate(app.service_names)
    limits = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
              ("grpc.max_receive_message_length", settings.max_message_bytes)]
    # Who may call: mesh identities for an internal service (when it runs TLS), else an app's own
    # interceptors (the gateway's API keys); then the shared ones.
    callers = ([CallerCheck(app.service_names, ALLOWED_CALLERS[settings.service], ALLOWED_CALLERS_BY_GRPC_SERVICE)]
               if settings.service in ALLOWED_CALLERS and not settings.plaintext else [])
    interceptors = [RpcMetrics(), *callers, *getattr(app, "interceptors", ()), DecodeGuard(), gate,
                    *trace_server_interceptors()]
    server = grpc.aio.server(interceptors=interceptors, options=limits)
    app.register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (*app.service_names, reflection.SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    reflection.enable_server_reflection(names, server)
    bound = _bind(server, settings)
    if bound == 0:
        raise RuntimeError(f"{settings.service}: cannot bind {settings.host}:{settings.port}")
    if not settings.port:  # "any free port": the app announces the one it got (the trainer's address)
        settings.port = bound
    probe_server = None
    if settings.health_port:
        probe_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, probe_server)
        if probe_server.add_insecure_port(f"{settings.host}:{settings.health_port}") == 0:
            raise RuntimeError(f"{settings.service}: cannot bind the health port {settings.host}:{settings.health_port}")
    for name in ("", *app.service_names):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    if probe_server is not None:
        await probe_server.start()
    serve_metrics(settings.host, settings.metrics_port)

    if stop_requested is None:
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        loop.add_signal_handler(signal.SIGUSR1, log_task_stacks)

    try:
        await app.start()
    except BaseException:
        await server.stop(0)
        if probe_server is not None:
            await probe_server.stop(0)
        raise
    gate.ready = True
    for name in ("", *app.service_names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s:%d", settings.service, settings.host, bound)

    await stop_requested.wait()
    log.info("%s stopping (grace %.1fs)", settings.service, settings.grace_seconds)
    await health.enter_graceful_shutdown()
    await server.stop(settings.grace_seconds)
    if probe_server is not None:
        await probe_server.stop(0)
    try:  # bounded: a stop that hangs must not keep the process (and its port) alive
        await asyncio.wait_for(app.stop(), timeout=APP_STOP_SECONDS)
    except asyncio.TimeoutError:
        log.warning("%s: stopping its background work took over %.0fs; exiting anyway (where each task waited "
                    "follows; unacknowledged queue work is redelivered)", settings.service, APP_STOP_SECONDS)
        log_task_stacks()
    log.info("%s stopped", settings.service)


def log_task_stacks() -> None:
    """Log where every asyncio task of this process is waiting (SIGUSR1: for a service that hangs)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack()
        where = " <- ".join(f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}" for f in reversed(frames))
        log.warning("task %s: %s", task.get_name(), where or "(not started)")


async def wait_serving(address: str, timeout: float = 60.0, service: str = "",
                       credentials: grpc.ChannelCredentials | None = None, peer: str = "") -> None:
    """Poll the standard health service at `address` until it answers SERVING (over TLS with
    `credentials`, expecting `peer`'s certificate, when given)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last_error = "no answer"
    # The mesh's short reconnect backoff: a service that comes back is seen within a second.
    async with channel(address, credentials, peer, options=MESH_OPTIONS) as health_channel:
        stub = health_pb2_grpc.HealthStub(health_channel)
        while asyncio.get_running_loop().time() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as err:
                last_error = err.code().name
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{address} not SERVING after {timeout:.0f}s (last: {last_error})")
