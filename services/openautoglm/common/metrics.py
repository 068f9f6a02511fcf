"""Prometheus metrics: every metric the services export is defined here, in one place.

Each service serves them in Prometheus' text format on its metrics port
(`OPENAUTOGLM_METRICS_PORT`, plain HTTP at `/metrics`; 0 = none), which Prometheus scrapes
(deploy/prometheus, k8s/monitoring). The series a process does not use stay empty.

- every service: `grpc_server_handling_seconds` (a histogram by gRPC service, method and status
  code, the names go-grpc-prometheus made conventional, so its count is the RPCs handled; the
  bootstrap's `RpcMetrics` interceptor in server.py observes it) and
  `openautoglm_peer_retries_total` (calls to a peer that were retried, and why);
- services that consume JetStream: consumer lag (`..._pending_messages`), messages delivered
  but not acknowledged yet, and redeliveries;
- the gateway: whether this replica leads (drives the studies), trials of running studies by
  status, those waiting for a trainer, and trials finished by status;
- a trainer: its slots (busy and total), trials it ran by outcome, GPU memory when it has GPUs.
"""
from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# RPC durations from 1 ms to 5 min (a WatchStudy stream lasts as long as its study).
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds", "Time to handle an RPC, by method and the status code it ended with.",
    ["grpc_service", "grpc_method", "grpc_code"], buckets=RPC_BUCKETS)
PEER_RETRIES = Counter(
    "openautoglm_peer_retries_total", "Calls to another service of the mesh that were tried again.",
    ["peer", "reason"])
CONSUMER_PENDING = Gauge(
    "openautoglm_nats_consumer_pending_messages", "Messages in the stream not yet delivered to this consumer (lag).",
    ["stream", "consumer"])
CONSUMER_ACK_PENDING = Gauge(
    "openautoglm_nats_consumer_ack_pending_messages", "Messages delivered to this consumer and not yet acknowledged.",
    ["stream", "consumer"])
CONSUMER_REDELIVERIES = Counter(
    "openautoglm_nats_redeliveries_total", "Messages this consumer received again (a handler failed, or a consumer died).",
    ["stream", "consumer"])
GATEWAY_LEADER = Gauge(
    "openautoglm_gateway_leader", "1 while this gateway replica is the leader (drives the running studies), else 0.")
TRIALS = Gauge(
    "openautoglm_trials", "Trials of running studies, by status.", ["status"])
UNPLACED_TRIALS = Gauge(
    "openautoglm_unplaced_trials", "Queued trials of running studies that no trainer holds yet (waiting for a slot).")
TRIALS_FINISHED = Counter(
    "openautoglm_trials_finished_total", "Trials that reached a final status, by that status.", ["status"])
TRAINER_SLOTS = Gauge(
    "openautoglm_trainer_slots", "This trainer's training slots, busy and total.", ["state"])
TRAINER_TRIALS = Counter(
    "openautoglm_trainer_trials_total", "Trials this trainer ran, by outcome.", ["outcome"])
GPU_MEMORY = Gauge(
    "openautoglm_gpu_memory_bytes", "GPU memory on this trainer's devices: allocated by tensors, reserved by the allocator, free and total.",
    ["device", "kind"])


def serve_metrics(host: str, port: int) -> int:
    """Serve /metrics on `host:port` from a background thread; returns the port (0 = none)."""
    if not port:
        return 0
    server, _ = start_http_server(port, addr=host)
    bound: int = server.server_port
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def status_label(status: int) -> str:
    """A trial status as a label value: `TRIAL_STATUS_SUCCEEDED` -> `succeeded`."""
    from openautoglm.v1 import common_pb2

    return common_pb2.TrialStatus.Name(status).removeprefix("TRIAL_STATUS_").lower()
