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
    # The gRPC API and the same API as JSON over HTTPS (gateway/http_api.py).
    assert services["gateway"]["ports"] == ["50051:50051", "8443:8443"]
    assert services["gateway"]["environment"]["OPENAUTOGLM_HTTP_PORT"] == "8443"


def test_compose_gives_each_container_its_own_certificate_and_nats_the_mesh_users():
    from openautoglm.common import nats_auth

    compose = _compose()
    services = compose["services"]
    declared = compose["secrets"]
    for name in SERVICES:
        svc = services[name]
        tls_dir = svc["environment"]["OPENAUTOGLM_TLS_DIR"]
        mounted = {s["target"]: s["source"] for s in svc["secrets"]}
        # Its own certificate and key and the CA's certificate; nobody else's key, never the CA's.
        assert mounted == {f"{tls_dir}/ca.crt": "mesh-ca", f"{tls_dir}/{name}.crt": f"{name}-cert",
                           f"{tls_dir}/{name}.key": f"{name}-key"}
        assert declared[f"{name}-key"]["file"] == f"./deploy/tls/compose/{name}/{name}.key"
        # The healthcheck probes the plaintext health-only port; the API port is TLS.
        assert svc["healthcheck"]["test"][-1] == f"127.0.0.1:{svc['environment']['OPENAUTOGLM_HEALTH_PORT']}"
    assert not any("ca.key" in str(secret) for secret in declared.values())
    nats = services["nats"]
    config_mount = next(v for v in nats["volumes"] if v.endswith(":/etc/nats/nats.conf:ro"))
    config = json.loads((ROOT / config_mount.split(":")[0]).read_text())
    assert config == nats_auth.server_config("0.0.0.0", 4222, Path("/data"), Path("/etc/nats/tls"), http_port=8222)
    assert {s["target"] for s in nats["secrets"]} == {config["tls"][k] for k in ("cert_file", "key_file", "ca_file")}


def test_k8s_mounts_each_services_certificate_probes_the_health_port_and_nats_has_the_mesh_users():
    from openautoglm.common import nats_auth
    from openautoglm.common.tls import ORGANISATION

    docs = [d for _, d in _k8s_docs()]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    api_port, health_port = int(config["OPENAUTOGLM_PORT"]), int(config["OPENAUTOGLM_HEALTH_PORT"])
    assert api_port != health_port
    http_port = 0
    for name in SERVICES:
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        expected = {"grpc": api_port, "health": health_port, "metrics": int(config["OPENAUTOGLM_METRICS_PORT"])}
        if name == "gateway":  # and the JSON/HTTP API, on the port its container's env sets
            http_port = int(next(e["value"] for e in container["env"] if e["name"] == "OPENAUTOGLM_HTTP_PORT"))
            expected["https"] = http_port
        assert ports == expected
        assert all(container[probe]["grpc"]["port"] == health_port for probe in ("startupProbe", "readinessProbe", "livenessProbe"))
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == config["OPENAUTOGLM_TLS_DIR"])
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert mount["readOnly"] is True and volume["secret"]["secretName"] == f"openautoglm-tls-{name}"
        assert {i["key"]: i["path"] for i in volume["secret"]["items"]} == {
            "ca.crt": "ca.crt", "tls.crt": f"{name}.crt", "tls.key": f"{name}.key"}
        service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name)
        assert service["spec"]["ports"][0]["targetPort"] == "grpc"
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and "ingress" in d["spec"]]
    service_policies = [p for p in policies if not p["metadata"]["name"].startswith(("nats", "metrics", "postgres"))]
    assert {port["port"] for p in service_policies for rule in p["spec"]["ingress"] for port in rule["ports"]} == {api_port, http_port}
    # The metrics port is open to Prometheus' namespace alone, and nothing else is.
    metrics = next(p for p in policies if p["metadata"]["name"] == "metrics-from-monitoring")["spec"]["ingress"]
    assert [[port["port"] for port in rule["ports"]] for rule in metrics] == [[int(config["OPENAUTOGLM_METRICS_PORT"])]]
    assert all(list(source) == ["namespaceSelector"] for rule in metrics for source in rule["from"])
    # Headless Services resolve to the pods themselves: their addresses carry the pods' API port.
    for key in ("OPENAUTOGLM_PROMPT_GENERATOR_ADDR", "OPENAUTOGLM_EVALUATOR_ADDR"):
        assert config[key].startswith("dns:///") and config[key].endswith(f":{api_port}")

    values = yaml.safe_load((ROOT / "k8s" / "nats-values.yaml").read_text())
    assert values["config"]["merge"]["authorization"]["users"] == nats_auth.users()
    assert values["config"]["nats"]["tls"]["merge"]["verify_and_map"] is True
    assert values["config"]["nats"]["tls"]["secretName"] == values["tlsCA"]["secretName"] == "openautoglm-tls-nats"

    # cert-manager's certificates carry the subjects NATS maps to its users and the names peers check.
    certificates = {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(
        (ROOT / "k8s" / "cert-manager" / "mesh-certificates.yaml").read_text()) if d["kind"] == "Certificate"}
    for identity in (*SERVICES, "nats"):
        spec = certificates[f"openautoglm-tls-{identity}"]
        assert spec["secretName"] == f"openautoglm-tls-{identity}" and spec["commonName"] == identity
        assert spec["subject"]["organizations"] == [ORGANISATION] and identity in spec["dnsNames"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert nats_auth.user_name(identity) == f"CN={identity},O={ORGANISATION}"


def test_compose_restarts_every_long_running_container_and_checks_its_health():
    services = _compose()["services"]
    for name, svc in services.items():
        assert svc.get("restart") == "unless-stopped", name
    for name in (*SERVICES, "nats"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and check["retries"] >= 3, name


def test_k8s_runs_two_gateways_and_the_prompt_generators_on_postgresql():
    """Two gateway replicas on PostgreSQL (one leads, gateway/leadership.py), with nothing
    per-pod in their way (no ReadWriteOnce volume); the prompt-generators share their own
    database on the same server; only those two reach it."""
    docs = [d for _, d in _k8s_docs()]

    def find(kind: str, name: str) -> dict:
        return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)

    postgres = find("StatefulSet", "postgres")
    server = postgres["spec"]["template"]["spec"]["containers"][0]
    server_env = {e["name"]: e for e in server["env"]}
    assert server_env["POSTGRES_DB"]["value"] == "openautoglm"
    user = server_env["POSTGRES_USER"]["value"]
    secret = server_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert "tcp_keepalives_idle=10" in server["args"]  # a cut-off leader's lock is freed
    assert "CREATE DATABASE optuna" in find("ConfigMap", "postgres-init")["data"]["10-optuna.sql"]
    assert find("Service", "postgres")["spec"]["ports"][0]["port"] == 5432

    def database_url(deployment: str, variable: str) -> str:
        env = {e["name"]: e for e in find("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == secret
        names = list(env)
        assert names.index("POSTGRES_PASSWORD") < names.index(variable)  # $(...) sees only earlier variables
        return env[variable]["value"]

    prefix = f"postgresql://{user}:$(POSTGRES_PASSWORD)@postgres.openautoglm.svc:5432/"
    assert database_url("gateway", "OPENAUTOGLM_DATABASE_URL") == prefix + "openautoglm"
    assert database_url("prompt-generator", "OPENAUTOGLM_PROMPT_GENERATOR_STORAGE") == prefix + "optuna"

    gateway = find("Deployment", "gateway")
    assert gateway["spec"]["replicas"] == 2
    claims = {v["persistentVolumeClaim"]["claimName"] for v in gateway["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    modes = {find("PersistentVolumeClaim", c)["spec"]["accessModes"][0] for c in claims}
    assert modes <= {"ReadWriteMany", "ReadOnlyMany"}, modes
    assert find("PodDisruptionBudget", "gateway")["spec"]["minAvailable"] == 1

    allowed = find("NetworkPolicy", "postgres-from-its-clients")["spec"]["ingress"]
    assert [rule["from"][0]["podSelector"]["matchExpressions"][0]["values"] for rule in allowed] == [["gateway", "prompt-generator"]]
