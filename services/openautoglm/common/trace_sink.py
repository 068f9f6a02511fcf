"""A minimal OTLP/gRPC trace receiver: the protocol Jaeger's collector ingests on 4317.

Tests and benchmarks use it where Jaeger cannot run, to see exactly what the services export.
"""
from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects every exported span as a dict: service, name, trace_id, span_id, parent_id (hex),
    kind (the OTLP SpanKind number), start_ns, end_ns and attributes."""

    def __init__(self):
        self.spans: list[dict] = []
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.endpoint = ""

    def Export(self, request, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append({
                            "service": attrs.get("service.name", ""),
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "start_ns": span.start_time_unix_nano,
                            "end_ns": span.end_time_unix_nano,
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                            "events": [{"name": e.name, "attributes": {a.key: _value(a.value) for a in e.attributes}}
                                       for e in span.events],
                        })
        return trace_service_pb2.ExportTraceServiceResponse()

    def for_trace(self, trace_id: str) -> list[dict]:
        with self._lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def spans_per_service(self, trace_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for span in self.for_trace(trace_id):
            counts[span["service"]] = counts.get(span["service"], 0) + 1
        return dict(sorted(counts.items()))

    def all_spans(self) -> list[dict]:
        with self._lock:
            return list(self.spans)

    def start(self, host: str = "127.0.0.1") -> "OtlpReceiver":
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        port = self._server.add_insecure_port(f"{host}:0")
        self._server.start()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0)


def _value(value: common_pb2.AnyValue) -> object:
    """An OTLP attribute value as plain Python (strings, numbers, booleans)."""
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "int_value", "double_value", "bool_value") else None
