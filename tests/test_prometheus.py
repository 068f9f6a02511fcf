"""Prometheus metrics on the embedded stack: every service's /metrics endpoint is scraped (real
HTTP on loopback) before and after a study, and the figures the study must move have moved:
RPCs by method and status code (a refusal counted with its code), trials by status, trainer
slots and trials, JetStream consumer lag, and the metric names the dashboards and alerts use."""
from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import grpc
import yaml

from helpers import Samples, run_study, scrape, spec_proto
from helpers import metric as value
from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
def rpcs(samples: Samples, method: str, code: str = "OK") -> float:
    return value(samples, "grpc_server_handling_seconds_count", grpc_method=method, grpc_code=code)


async def test_every_service_serves_metrics_and_a_study_moves_them(stack):
    processes = stack.process_names()
    before = {name: scrape(stack.metrics_url(name)) for name in processes}
    study = await run_study(stack, spec_proto(budget={"max_trials": 2}))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    async with stack.gateway_channel() as channel:  # a refusal, counted with its code
        try:
            await studies_pb2_grpc.StudiesStub(channel).GetStudy(studies_pb2.GetStudyRequest(study_id="st-nope"), timeout=10)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND

    # Gauges are refreshed every few seconds: wait for the gateway's to show no trial in flight.
    deadline = time.monotonic() + 20
    while True:
        after = {name: scrape(stack.metrics_url(name)) for name in processes}
        settled = value(after["gateway"], "openautoglm_trials", status="training") == 0
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)

    def moved(process: str, counter, at_least: float = 1) -> bool:
        return counter(after[process]) - counter(before[process]) >= at_least

    gateway, trainer = after["gateway"], after["trainer"]
    assert moved("gateway", lambda s: rpcs(s, "CreateStudy"))
    assert moved("gateway", lambda s: rpcs(s, "GetStudy", "NOT_FOUND"))
    assert moved("gateway", lambda s: value(s, "openautoglm_trials_finished_total", status="succeeded"), 2)
    assert value(gateway, "openautoglm_unplaced_trials") >= 0 and ("openautoglm_trials", (("status", "queued"),)) in gateway
    assert value(gateway, "openautoglm_nats_consumer_pending_messages", consumer="gateway-trials") >= 0
    assert ("openautoglm_nats_consumer_ack_pending_messages", (("consumer", "gateway-trials"), ("stream", "AUTOGLM_EVENTS"))) in gateway
    assert moved("prompt-generator", lambda s: rpcs(s, "Propose"))
    assert moved("gnn-scheduler", lambda s: rpcs(s, "Pack"))
    assert moved("evaluator", lambda s: rpcs(s, "Evaluate"), 2)
    assert moved("trainer", lambda s: value(s, "openautoglm_trainer_trials_total", outcome="trained"), 2)
    assert value(trainer, "openautoglm_trainer_slots", state="total") == stack.trainer_slots
    assert ("openautoglm_nats_consumer_pending_messages", (("consumer", "trainer-0"), ("stream", "AUTOGLM_JOBS"))) in trainer
    # Every process shows the RPC histogram with its buckets, and the retry counter's family.
    for name in processes:
        assert any(n == "grpc_server_handling_seconds_bucket" for n, _ in after[name]), name


def _metric_names_in_code() -> set[str]:
    source = (ROOT / "services" / "openautoglm" / "common" / "metrics.py").read_text()
    return set(re.findall(r'^\s+"((?:openautoglm|grpc)_[a-z_]+)", "', source, flags=re.M))


def _names_in_expression(expression: str) -> set[str]:
    """Metric names an expression uses (histogram/counter suffixes taken off)."""
    expression = re.sub(r"\{[^}]*\}", "", expression)  # label matchers
    expression = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expression)  # grouping labels
    names = set(re.findall(r"\b((?:openautoglm|grpc)_[a-z_]+)", expression))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_dashboards_and_alerts_use_only_metrics_the_services_export():
    exported = _metric_names_in_code()
    assert {"grpc_server_handling_seconds", "openautoglm_trials", "openautoglm_unplaced_trials",
            "openautoglm_nats_consumer_pending_messages", "openautoglm_peer_retries_total"} <= exported
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "openautoglm.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= _names_in_expression(target["expr"])
    rules = yaml.safe_load((ROOT / "k8s" / "monitoring" / "prometheus-rules.yaml").read_text())
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]
    assert {"OpenAutoGLMServiceDown", "OpenAutoGLMQueueStuck", "OpenAutoGLMTrialFailureRate"} <= {a["alert"] for a in alerts}
    for alert in alerts:
        used |= _names_in_expression(alert["expr"])
    compose_rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert [r["alert"] for g in compose_rules["groups"] for r in g["rules"]] == [a["alert"] for a in alerts]
    unknown = used - exported
    assert not unknown, f"dashboard or alerts use metrics no service exports: {unknown}"
    assert used >= {"grpc_server_handling_seconds", "openautoglm_trials_finished_total", "openautoglm_unplaced_trials"}


def test_every_dashboard_and_alert_expression_is_valid_promql():
    import promql_parser

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "openautoglm.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    expressions += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for expression in expressions:
        promql_parser.parse(expression)  # raises on a syntax error


def test_compose_and_k8s_scrape_the_port_every_service_serves_metrics_on():
    from openautoglm.common.config import SERVICES

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["include"] == ["deploy/monitoring/compose.yaml"]
    monitoring = yaml.safe_load((ROOT / "deploy" / "monitoring" / "compose.yaml").read_text())["services"]
    assert {"prometheus", "grafana"} <= set(monitoring)
    port = int(compose["services"]["gateway"]["environment"]["OPENAUTOGLM_METRICS_PORT"])
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    discovery = scrape["scrape_configs"][0]["dns_sd_configs"][0]
    assert set(discovery["names"]) == set(SERVICES) and discovery["port"] == port
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    for volume in monitoring["prometheus"]["volumes"] + monitoring["grafana"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("."):  # a bind mount of the repository's files
            assert (ROOT / "deploy" / "monitoring" / source).resolve().exists(), volume
    config = yaml.safe_load((ROOT / "k8s" / "config.yaml").read_text())
    k8s_port = int(config["data"]["OPENAUTOGLM_METRICS_PORT"])
    for name in SERVICES:
        deployment = next(d for d in yaml.safe_load_all((ROOT / "k8s" / f"{name}.yaml").read_text())
                          if d and d["kind"] == "Deployment")
        ports = {p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == k8s_port
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(k8s_port)
    monitor = yaml.safe_load((ROOT / "k8s" / "monitoring" / "pod-monitor.yaml").read_text())
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    rules = yaml.safe_load((ROOT / "k8s" / "monitoring" / "prometheus-rules.yaml").read_text())
    assert rules["spec"]["groups"] == yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]


async def test_rpc_metrics_count_each_call_with_the_code_it_ended_with():
    """The bootstrap's interceptor on a real server and socket: an answered call is OK, a
    refused one counts under its code."""
    from prometheus_client import REGISTRY

    from openautoglm.common.server import RpcMetrics
    from openautoglm.gnn_scheduler.cluster import CapacityRegistry
    from openautoglm.gnn_scheduler.service import SchedulerServicer
    from openautoglm.v1 import scheduler_pb2, scheduler_pb2_grpc

    def count(method: str, code: str) -> float:
        return REGISTRY.get_sample_value("grpc_server_handling_seconds_count", {
            "grpc_service": "openautoglm.v1.Scheduler", "grpc_method": method, "grpc_code": code}) or 0.0

    server = grpc.aio.server(interceptors=[RpcMetrics()])
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(CapacityRegistry()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    before = count("ListWorkers", "OK"), count("Pack", "INVALID_ARGUMENT"), count("Plan", "FAILED_PRECONDITION")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            await stub.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10)
            await stub.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10)
            for call, request in ((stub.Pack, scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task()])),
                                  (stub.Plan, scheduler_pb2.PlanRequest())):
                try:
                    await call(request, timeout=10)
                except grpc.aio.AioRpcError:
                    pass
    finally:
        await server.stop(None)
    after = count("ListWorkers", "OK"), count("Pack", "INVALID_ARGUMENT"), count("Plan", "FAILED_PRECONDITION")
    assert [a - b for a, b in zip(after, before)] == [2, 1, 1]
