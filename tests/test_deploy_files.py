"""docker-compose.yml and k8s/ are checked statically (no Docker engine or cluster here):
schemas first (compose-spec, Kubernetes OpenAPI), then the wiring a schema cannot see."""
import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from openautoglm.common.config import REQUIRED, FLAG_AND_ENV, SERVICES

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.30.0"


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_matches_the_compose_spec_schema():
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    jsonschema.validate(_compose(), schema)


def test_compose_runs_nats_jaeger_and_the_five_services_from_one_image():
    services = _compose()["services"]
    assert set(services) == {"nats", *SERVICES, "jaeger"}
    assert "--jetstream" in services["nats"]["command"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "4317:4317" in services["jaeger"]["ports"]
    for name in SERVICES:
        svc = services[name]
        assert svc["image"] == "openautoglm:latest" and svc["build"]["dockerfile"] == "Dockerfile"
        assert svc["command"] == [name]
        env = svc["environment"]
        for setting in REQUIRED[name]:
            assert env.get(FLAG_AND_ENV[setting][1]), (name, setting)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
        assert svc["healthcheck"]["test"][:3] == ["CMD", "openautoglm", "health"]
    # Peer addresses point at services that exist, on the port they listen on.
    env = services["gateway"]["environment"]
    for key in ("OPENAUTOGLM_PROMPT_GENERATOR_ADDR", "OPENAUTOGLM_SCHEDULER_ADDR", "OPENAUTOGLM_EVALUATOR_ADDR"):
        host, port = env[key].split(":")
        assert host in services and port == env["OPENAUTOGLM_PORT"]


def test_dockerfile_installs_the_project_and_serves():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["openautoglm", "serve"\]', text, re.M)
    assert "COPY services ./services" in text and "COPY gateway ./gateway" in text


def _k8s_docs():
    docs = []
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        if path.name in ("kustomization.yaml", "nats-values.yaml"):
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@pytest.mark.parametrize("name,doc", _k8s_docs(), ids=lambda v: v if isinstance(v, str) else v["kind"] + "/" + v["metadata"]["name"])
def test_k8s_manifests_match_the_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_has_deployment_service_and_grpc_probes_per_service():
    docs = [d for _, d in _k8s_docs()]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in SERVICES:
        assert ("Deployment", name) in kinds and ("Service", name) in kinds
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == [name]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == 50051
    trainer = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "trainer")
    limits = trainer["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert hpas == {"evaluator", "prompt-generator"}
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in (ROOT / "k8s").glob("*.yaml")
                                                        if p.name not in ("kustomization.yaml", "nats-values.yaml"))
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    for required in {s for names in REQUIRED.values() for s in names}:
        assert config["data"].get(FLAG_AND_ENV[required][1])


def test_k8s_containers_are_locked_down_and_only_the_gateway_is_reachable_from_outside():
    docs = [d for _, d in _k8s_docs()]
    for name in SERVICES:
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = pod["containers"][0]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"] and context["seccompProfile"]["type"] == "RuntimeDefault"
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["HOME"] == "/tmp"
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    open_to_all = [spec["podSelector"] for spec in policies.values()
                   if any("from" not in rule for rule in spec.get("ingress", []))]
    assert open_to_all == [{"matchLabels": {"app.kubernetes.io/name": "gateway"}}]
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway")
    env = gateway["spec"]["template"]["spec"]["containers"][0]["env"]
    bootstrap = next(e for e in env if e["name"] == "OPENAUTOGLM_BOOTSTRAP_API_KEY")
    assert bootstrap["valueFrom"]["secretKeyRef"]["optional"] is True


def test_compose_publishes_no_service_port_but_the_gateways():
    services = _compose()["services"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    # Jaeger's OTLP and UI ports stay published for local tracing (see the test above).
    assert published == {"gateway", "jaeger"}
    assert services["gateway"]["ports"] == ["50051:50051"]
