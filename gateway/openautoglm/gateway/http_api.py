"""The public API as JSON over HTTP, from the same contract: every route is a `google.api.http`
option in the protos, and every call is the gRPC call it names.

A request is transcoded (path variables, query parameters and the JSON body, by protobuf's own
`json_format`) into the method's request message and sent to this gateway's own gRPC server over
a private Unix socket, carrying the caller's `Authorization` header as metadata. So the keys,
tenants, validation, quotas, tracing and metrics are the gRPC API's by construction, not a copy
of them. A gRPC status comes back as the HTTP status Google's API design guide maps it to, with
the error body of Google's JSON APIs: {"error": {"code", "message", "status"}}.

Server-streaming methods (WatchStudy, Generate) answer as Server-Sent Events: one `data:` line
of JSON per message; an error after the stream started is one `event: error` with the same error
body. Client-streaming methods (UploadArtifact) and byte streams (DownloadModel) have no route:
they are gRPC only. `/openapi.json` is an OpenAPI 3.1 document generated from the same
descriptors.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
from aiohttp import web
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.message import Message

from openautoglm.v1 import artifacts_pb2, cluster_pb2, keys_pb2, models_pb2, studies_pb2

log = logging.getLogger(__name__)

PUBLIC_SERVICES = tuple(module.DESCRIPTOR.services_by_name[name] for module, name in (
    (studies_pb2, "Studies"), (keys_pb2, "Keys"), (artifacts_pb2, "Artifacts"), (models_pb2, "Models"),
    (cluster_pb2, "Cluster")))

# gRPC status -> HTTP status (Google's API design guide, "Errors": the canonical mapping).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
# The largest JSON body a request may carry: the gRPC server's own limit applies after it.
MAX_BODY_BYTES = 16 * 1024 * 1024
# An SSE stream with nothing to say sends a comment this often, so proxies keep it open.
SSE_KEEPALIVE_SECONDS = 15.0
# A path variable matches one segment; ':' is the custom verb's separator (":watch").
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")


@dataclass(frozen=True)
class Route:
    """One HTTP route of the contract: a gRPC method and how a request maps onto it."""

    verb: str  # "GET", "POST", ...
    template: str  # "/v1/studies/{study_id}:watch"
    pattern: re.Pattern[str]
    path_fields: tuple[str, ...]  # "study_id", "model.name"
    body: str  # "" (no body: every field from the query) or "*" (the whole request)
    method: descriptor.MethodDescriptor

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return None if found is None else {field: unquote(found.group(i + 1)) for i, field in enumerate(self.path_fields)}


def _rule_verb_and_template(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return str(kind).upper(), getattr(rule, str(kind))


def routes(services: Iterable[descriptor.ServiceDescriptor] = PUBLIC_SERVICES) -> list[Route]:
    """Every method with a `google.api.http` option, as a Route (client-streaming ones have none)."""
    out = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            verb, template = _rule_verb_and_template(rule)
            fields = tuple(_VARIABLE.findall(template))
            regex = "".join(re.escape(part) if i % 2 == 0 else "([^/:]+)" for i, part in enumerate(_VARIABLE.split(template)))
            out.append(Route(verb, template, re.compile(regex), fields, rule.body, method))
    return out


# --- request and response bodies -------------------------------------------------------------
class BadRequest(Exception):
    """A request that cannot be transcoded: INVALID_ARGUMENT, naming what is wrong."""


def _message_class(message_descriptor: descriptor.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(message_descriptor)


def _field_at(message_descriptor: descriptor.Descriptor, dotted: str) -> list[descriptor.FieldDescriptor]:
    """The field path `a.b.c` (proto or JSON names) as field descriptors; BadRequest if none."""
    fields = []
    current: descriptor.Descriptor | None = message_descriptor
    for part in dotted.split("."):
        field = None
        if current is not None:
            field = current.fields_by_name.get(part) or next((f for f in current.fields if f.json_name == part), None)
        if field is None:
            raise BadRequest(f"{dotted}: no such field in {message_descriptor.full_name}")
        fields.append(field)
        current = field.message_type
    return fields


def _scalar(field: descriptor.FieldDescriptor, text: str, name: str) -> Any:
    """A query or path value as the JSON value json_format expects for this field."""
    kind = field.type
    if kind == descriptor.FieldDescriptor.TYPE_BOOL:
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise BadRequest(f"{name}: expected true or false, got {text!r}")
    if kind in (descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT):
        try:
            return float(text)
        except ValueError:
            raise BadRequest(f"{name}: expected a number, got {text!r}") from None
    if kind == descriptor.FieldDescriptor.TYPE_MESSAGE:
        raise BadRequest(f"{name}: a message field cannot be set from the URL; send it in the JSON body")
    return text  # strings, enums (by name or number) and integers: json_format checks them


def _set_path(target: dict[str, Any], fields: list[descriptor.FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        target = target.setdefault(field.json_name, {})
    last = fields[-1]
    if last.is_repeated:
        target.setdefault(last.json_name, []).append(value)
    else:
        target[last.json_name] = value


def build_request(route: Route, variables: dict[str, str], query: Iterable[tuple[str, str]], body: bytes) -> Message:
    """The method's request message from the route's path variables, the query string and the
    JSON body (the path wins where they name the same field)."""
    request_descriptor = route.method.input_type
    document: dict[str, Any] = {}
    if route.body == "*" and body.strip():
        try:
            document = json.loads(body)
        except ValueError as err:
            raise BadRequest(f"the request body is not JSON: {err}") from None
        if not isinstance(document, dict):
            raise BadRequest("the request body must be a JSON object")
    elif body.strip() and route.body != "*":
        raise BadRequest(f"{route.verb} {route.template} takes no body; send its fields as query parameters")
    if route.body != "*":
        for name, value in query:
            fields = _field_at(request_descriptor, name)
            _set_path(document, fields, _scalar(fields[-1], value, name))
    for name, value in variables.items():
        fields = _field_at(request_descriptor, name)
        _set_path(document, fields, _scalar(fields[-1], value, name))
    request = _message_class(request_descriptor)()
    try:
        json_format.ParseDict(document, request)
    except json_format.ParseError as err:
        raise BadRequest(str(err)) from None
    return request


def to_json(message: Message) -> dict[str, Any]:
    """A response as the protobuf JSON mapping (lowerCamelCase names; fields at their defaults
    left out, as every protobuf JSON client expects)."""
    return json_format.MessageToDict(message)


def error_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    return {"error": {"code": HTTP_STATUS.get(code, 500), "message": message, "status": code.name}}


def _status_of(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """A failed call's status and message (the status' name when the server gave none)."""
    return err.code(), err.details() or err.code().name


def _error_response(code: grpc.StatusCode, message: str) -> web.Response:
    return web.json_response(error_body(code, message), status=HTTP_STATUS.get(code, 500))


# --- the server ------------------------------------------------------------------------------
class HttpApi:
    """The JSON/HTTP face of the gateway: an aiohttp app calling `grpc_target` (the gateway's own
    gRPC server) for every route, and /openapi.json."""

    def __init__(self, grpc_target: str, routes_: list[Route] | None = None):
        self.routes = routes_ if routes_ is not None else routes()
        self._target = grpc_target
        self._channel: grpc.aio.Channel | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_get("/openapi.json", self._openapi)
        self.app.router.add_route("*", "/v1/{tail:.*}", self._dispatch)
        self._openapi_document: dict[str, Any] | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Serve on host:port (0 = any free port); returns the port."""
        self._channel = grpc.aio.insecure_channel(self._target)
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        self.port = int(self._runner.addresses[0][1])  # port 0 -> the one it got
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._channel is not None:
            await self._channel.close()

    def _route_for(self, verb: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, its path variables, whether the path matched some route at all)."""
        path_matched = False
        for route in self.routes:
            variables = route.match(path)
            if variables is None:
                continue
            path_matched = True
            if route.verb == verb:
                return route, variables, True
        return None, {}, path_matched

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route, variables, path_matched = self._route_for(request.method, request.path)
        if route is None:
            if path_matched:
                return _error_response(grpc.StatusCode.UNIMPLEMENTED, f"{request.method} is not a method of {request.path}")
            return _error_response(grpc.StatusCode.NOT_FOUND, f"no API route {request.path}")
        try:
            message = build_request(route, variables, request.query.items(), await request.read())
        except BadRequest as err:
            return _error_response(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except web.HTTPRequestEntityTooLarge:
            return _error_response(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the request body is over {MAX_BODY_BYTES} bytes")
        metadata = _forwarded_metadata(request)
        if route.streaming:
            return await self._stream(request, route, message, metadata)
        assert self._channel is not None
        call = self._channel.unary_unary(route.grpc_path, request_serializer=_serialize,
                                         response_deserializer=_message_class(route.method.output_type).FromString)
        try:
            reply = await call(message, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            return _error_response(*_status_of(err))
        return web.json_response(to_json(reply))

    async def _stream(self, request: web.Request, route: Route, message: Message,
                      metadata: tuple[tuple[str, str], ...]) -> web.StreamResponse:
        """A server-streaming method as Server-Sent Events. An error before the first message is
        a plain HTTP error (the status tells the client what went wrong); one after is an SSE
        `error` event, and the stream ends."""
        assert self._channel is not None
        call = self._channel.unary_stream(route.grpc_path, request_serializer=_serialize,
                                          response_deserializer=_message_class(route.method.output_type).FromString)(
            message, metadata=metadata)
        response: web.StreamResponse | None = None
        messages = call.__aiter__()
        # The next message, read in a task of its own: a keep-alive waits beside it and never
        # cancels it (cancelling a read cancels the whole call, and the stream would end as if
        # the study had finished).
        reading: asyncio.Future[Message] | None = None
        try:
            while True:
                if reading is None:
                    reading = asyncio.ensure_future(messages.__anext__())
                done, _ = await asyncio.wait({reading}, timeout=SSE_KEEPALIVE_SECONDS)
                if not done:
                    if response is None:
                        response = await _open_sse(request)
                    await response.write(b": keep-alive\n\n")
                    continue
                finished, reading = reading, None
                try:
                    reply = finished.result()
                except StopAsyncIteration:
                    break
                if response is None:
                    response = await _open_sse(request)
                await response.write(b"data: " + json.dumps(to_json(reply)).encode() + b"\n\n")
        except grpc.aio.AioRpcError as err:
            if response is None:
                return _error_response(*_status_of(err))
            body = json.dumps(error_body(*_status_of(err)))
            await response.write(b"event: error\ndata: " + body.encode() + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            if reading is not None:
                reading.cancel()
            call.cancel()  # the client went away: so does the watch
            raise
        if response is None:  # a stream that ended before its first message
            response = await _open_sse(request)
        await response.write_eof()
        return response

    async def _openapi(self, request: web.Request) -> web.Response:
        if self._openapi_document is None:
            self._openapi_document = openapi_document(self.routes)
        return web.json_response(self._openapi_document)


async def _open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    return response


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _forwarded_metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """What the gRPC call carries from the HTTP request: the caller's key, nothing else."""
    authorization = request.headers.get("Authorization", "")
    return (("authorization", authorization),) if authorization else ()


# --- OpenAPI ---------------------------------------------------------------------------------
_INT32 = {descriptor.FieldDescriptor.TYPE_INT32, descriptor.FieldDescriptor.TYPE_SINT32,
          descriptor.FieldDescriptor.TYPE_SFIXED32, descriptor.FieldDescriptor.TYPE_UINT32,
          descriptor.FieldDescriptor.TYPE_FIXED32}
_INT64 = {descriptor.FieldDescriptor.TYPE_INT64, descriptor.FieldDescriptor.TYPE_SINT64,
          descriptor.FieldDescriptor.TYPE_SFIXED64, descriptor.FieldDescriptor.TYPE_UINT64,
          descriptor.FieldDescriptor.TYPE_FIXED64}
# Well-known types have their own JSON forms (the protobuf JSON mapping).
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
}


def _field_schema(field: descriptor.FieldDescriptor, needed: set[str]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single_schema(value, needed)}
    schema = _single_schema(field, needed)
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _single_schema(field: descriptor.FieldDescriptor, needed: set[str]) -> dict[str, Any]:
    kind = field.type
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        needed.add(name)
        return {"$ref": f"#/components/schemas/{name}"}
    if field.enum_type is not None:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if kind == descriptor.FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in _INT32:
        return {"type": "integer", "format": "int32"}
    if kind in _INT64:  # 64-bit integers are JSON strings in the protobuf mapping
        return {"type": "string", "format": "int64"}
    if kind == descriptor.FieldDescriptor.TYPE_DOUBLE:
        return {"type": "number", "format": "double"}
    if kind == descriptor.FieldDescriptor.TYPE_FLOAT:
        return {"type": "number", "format": "float"}
    if kind == descriptor.FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "format": "byte"}
    return {"type": "string"}


def _message_schema(message: descriptor.Descriptor, needed: set[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {f.json_name: _field_schema(f, needed) for f in message.fields}}


def _query_parameters(route: Route) -> Iterator[dict[str, Any]]:
    """The request's scalar fields, one level of nested messages deep, as query parameters."""
    for field in route.method.input_type.fields:
        if field.name in route.path_fields:
            continue
        if field.message_type is None:
            yield {"name": field.json_name, "in": "query", "required": False, "schema": _field_schema(field, set())}
            continue
        for inner in field.message_type.fields:
            dotted = f"{field.name}.{inner.name}"
            if inner.message_type is None and dotted not in route.path_fields:
                yield {"name": f"{field.json_name}.{inner.json_name}", "in": "query", "required": False,
                       "schema": _field_schema(inner, set())}


def openapi_document(routes_: list[Route]) -> dict[str, Any]:
    """OpenAPI 3.1 for the routes: paths, parameters, bodies, responses and every message schema."""
    paths: dict[str, dict[str, Any]] = {}
    needed: set[str] = set()
    for route in routes_:
        method = route.method
        needed.update((method.input_type.full_name, method.output_type.full_name))
        operation: dict[str, Any] = {
            "operationId": f"{method.containing_service.name}_{method.name}",
            "tags": [method.containing_service.name],
            "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                           for name in route.path_fields],
            "responses": {
                "200": {"description": "OK", "content": {
                    ("text/event-stream" if route.streaming else "application/json"): {
                        "schema": {"$ref": f"#/components/schemas/{method.output_type.full_name}"},
                        **({"description": "one JSON message per SSE `data:` line; an `error` event carries an Error"}
                           if route.streaming else {})}}},
                "default": {"description": "an error (gRPC status as HTTP status)",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
            "security": [{"bearer": []}],
        }
        if route.body == "*":
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{method.input_type.full_name}"}}}}
        else:
            operation["parameters"] += list(_query_parameters(route))
        # OpenAPI path templates name the variable as written in the template.
        paths.setdefault(route.template, {})[route.verb.lower()] = operation
    schemas: dict[str, Any] = {}
    pending = set(needed)
    pool = studies_pb2.DESCRIPTOR.pool
    while pending:
        name = pending.pop()
        if name in schemas:
            continue
        found: set[str] = set()
        schemas[name] = _message_schema(pool.FindMessageTypeByName(name), found)
        pending |= found - set(schemas)
    schemas["Error"] = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "integer"}, "message": {"type": "string"}, "status": {"type": "string"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Open-AutoGLM public API", "version": "v1",
                 "description": "The gRPC API of protos/openautoglm/v1 as JSON over HTTP (google.api.http mapping)."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
