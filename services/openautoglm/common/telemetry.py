"""Tracing and logging set-up shared by all five services.

Every service calls `setup_telemetry(service_name)` once, before it creates any gRPC server or
channel. Spans go to OTEL_EXPORTER_OTLP_ENDPOINT over OTLP/gRPC when it is set (Jaeger all-in-one
listens on 4317); trace context crosses gRPC in metadata (the instrumentation's interceptors) and
NATS in message headers (`inject_headers` / `extract_context`). Logs are JSON lines that carry the
current trace and span ids, so a log line leads to its trace.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


_provider: TracerProvider | None = None


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the trace and span ids of the span current at log time."""

    def __init__(self, service_name: str):
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        ctx = trace.get_current_span().get_span_context()
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service_name,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        for key in ("study_id", "trial_id", "event"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(service_name: str, level: str | None = None) -> None:
    """Route the root logger to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter(service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("OPENAUTOGLM_LOG_LEVEL", "INFO"))
    for noisy in ("optuna", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup_telemetry(service_name: str) -> TracerProvider:
    """Install the global tracer provider for this process (idempotent).

    With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are batched and exported over OTLP/gRPC;
    without it they are still created (trace ids still flow and appear in logs) but not exported.
    """
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create({"service.name": service_name, "service.namespace": "openautoglm"})
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_telemetry() -> None:
    """Flush and stop exporting (spans still in the batch are sent)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)
        _provider.shutdown()


def tracer(name: str = "openautoglm") -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str] | None = None, ctx=None) -> dict[str, str]:
    """Write the W3C `traceparent` (and `tracestate`) of `ctx` (default: current) into headers."""
    headers = dict(headers or {})
    propagate.inject(headers, context=ctx)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a NATS message carried in its headers (empty context if none)."""
    return propagate.extract(dict(headers or {}))


def traceparent_of(span: trace.Span) -> str:
    """The W3C traceparent header value that makes new spans children of `span`."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def trace_id_hex(span: trace.Span) -> str:
    return format(span.get_span_context().trace_id, "032x")
