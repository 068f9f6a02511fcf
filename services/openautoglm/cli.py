"""`openautoglm`: run a service, the embedded stack, the demo, or work with studies.

    openautoglm serve SERVICE --port PORT     one service (gateway, prompt-generator, gnn-scheduler, trainer, evaluator)
    openautoglm up                            NATS + all five services on loopback, until Ctrl-C
    openautoglm demo [--json]                 a small study end to end (starts a stack if none is up)
    openautoglm study submit|get|list|watch|cancel
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from openautoglm.common.config import SERVICES, ConfigError, ServiceSettings, default_data_dir
from openautoglm.common import catalogue

if TYPE_CHECKING:
    from openautoglm.common.server import ServiceApp

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
study_app = typer.Typer(no_args_is_help=True, help="Create and follow studies through the gateway.")
app.add_typer(study_app, name="study")
keys_app = typer.Typer(no_args_is_help=True, help="Manage the gateway's API keys (needs an admin key).")
app.add_typer(keys_app, name="keys")
data_app = typer.Typer(no_args_is_help=True, help="Upload datasets and base models to the artifact store.")
app.add_typer(data_app, name="data")
models_app = typer.Typer(no_args_is_help=True, help="The model registry and serving: register, download, deploy, predict.")
app.add_typer(models_app, name="models")
DEMO_SPEC = catalogue.DEMO_SPEC
GATEWAY_ENV = "OPENAUTOGLM_GATEWAY"


def _err(message: str, code: int = 2) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


# --- serve -----------------------------------------------------------------------------------
# Thread-pool sizes of the numeric libraries (OpenMP, MKL, OpenBLAS), read when they load.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def build_app(settings: ServiceSettings) -> ServiceApp:
    """The ServiceApp for a service name (imports are lazy: only the trainer loads torch)."""
    if settings.service == "gateway":
        from openautoglm.gateway.app import GatewayApp

        return GatewayApp(settings)
    if settings.service == "prompt-generator":
        from openautoglm.prompt_generator.app import PromptGeneratorApp

        return PromptGeneratorApp(settings)
    if settings.service == "gnn-scheduler":
        from openautoglm.gnn_scheduler.app import SchedulerApp

        return SchedulerApp(settings)
    if settings.service == "trainer":
        from openautoglm.trainer.app import TrainerApp

        return TrainerApp(settings)
    from openautoglm.evaluator.app import EvaluatorApp

    return EvaluatorApp(settings)


@app.command()
def serve(
    service: str = typer.Argument(..., help=f"one of: {', '.join(SERVICES)}"),
    port: int = typer.Option(0, envvar="OPENAUTOGLM_PORT", help="gRPC port (0 = any free port)"),
    host: str = typer.Option("127.0.0.1", envvar="OPENAUTOGLM_HOST", help="address to bind"),
    nats_url: str = typer.Option("", envvar="OPENAUTOGLM_NATS_URL"),
    data_dir: Path = typer.Option(None, envvar="OPENAUTOGLM_DATA_DIR", help="state, artifacts, logs"),
    prompt_generator: str = typer.Option("", envvar="OPENAUTOGLM_PROMPT_GENERATOR_ADDR", help="host:port"),
    scheduler: str = typer.Option("", envvar="OPENAUTOGLM_SCHEDULER_ADDR", help="host:port"),
    evaluator: str = typer.Option("", envvar="OPENAUTOGLM_EVALUATOR_ADDR", help="host:port"),
    trainer: str = typer.Option("", envvar="OPENAUTOGLM_TRAINER_ADDR", help="host:port (gateway: for ExportBest)"),
    trainer_slots: int = typer.Option(1, envvar="OPENAUTOGLM_TRAINER_SLOTS", help="trainer: concurrent jobs"),
    trainer_prefetch: int = typer.Option(1, envvar="OPENAUTOGLM_TRAINER_PREFETCH",
                                         help="trainer: jobs held waiting per slot, ready when one ends"),
    trainer_threads: int = typer.Option(0, envvar="OPENAUTOGLM_TRAINER_THREADS",
                                        help="trainer: CPU threads for training (0 = every core)"),
    trainer_id: str = typer.Option("", envvar="OPENAUTOGLM_TRAINER_ID"),
    trainer_ack_wait: float = typer.Option(30.0, envvar="OPENAUTOGLM_TRAINER_ACK_WAIT",
                                           help="trainer: seconds of silence before a job is redelivered"),
    prompt_generator_storage: str = typer.Option("", envvar="OPENAUTOGLM_PROMPT_GENERATOR_STORAGE",
                                                 help="prompt-generator: where study registrations live for every "
                                                      "replica, a SQLAlchemy URL (default SQLite in the data dir)"),
    prompt_model: str = typer.Option("", envvar="OPENAUTOGLM_PROMPT_MODEL",
                                     help="prompt-generator: a local Hugging Face causal LM directory that writes "
                                          "instructions (APE, OPRO, paraphrase); trainer: the one it hosts for "
                                          "the prompt-generator"),
    prompt_model_seconds: float = typer.Option(20.0, envvar="OPENAUTOGLM_PROMPT_MODEL_SECONDS",
                                               help="prompt-generator: generation time budget per instruction"),
    prompt_model_on: str = typer.Option("local", envvar="OPENAUTOGLM_PROMPT_MODEL_ON",
                                        help="prompt-generator: where its prompt model runs, 'local' or 'trainer' "
                                             "(the one the trainer at --trainer hosts with its own --prompt-model)"),
    database_url: str = typer.Option("", envvar="OPENAUTOGLM_DATABASE_URL",
                                     help="gateway: its database, a SQLAlchemy URL (PostgreSQL for replicas; "
                                          "default SQLite in the data dir)"),
    trainer_processes: int = typer.Option(0, envvar="OPENAUTOGLM_TRAINER_PROCESSES",
                                          help="trainer: DDP processes per trial (0 = one per GPU)"),
    trainer_memory_mb: float = typer.Option(0.0, envvar="OPENAUTOGLM_TRAINER_MEMORY_MB",
                                            help="trainer: MiB per slot to announce (0 = measure free memory)"),
    heartbeat_ttl: float = typer.Option(15.0, envvar="OPENAUTOGLM_HEARTBEAT_TTL",
                                        help="gnn-scheduler: seconds of silence before a trainer counts as failed"),
    scheduler_policy: str = typer.Option("gnn", envvar="OPENAUTOGLM_SCHEDULER_POLICY",
                                         help="gnn-scheduler: default policy (gnn, critical_path, heft or fifo)"),
    grace: float = typer.Option(10.0, envvar="OPENAUTOGLM_GRACE_SECONDS", help="seconds in-flight RPCs get on stop"),
    max_message_bytes: int = typer.Option(64 * 1024 * 1024, envvar="OPENAUTOGLM_MAX_MESSAGE_BYTES",
                                          help="largest request accepted (larger: RESOURCE_EXHAUSTED)"),
    tenant_max_running_studies: int = typer.Option(0, envvar="OPENAUTOGLM_TENANT_MAX_RUNNING_STUDIES",
                                                   help="gateway: running studies per tenant (0 = no limit)"),
    tenant_max_trials_per_study: int = typer.Option(0, envvar="OPENAUTOGLM_TENANT_MAX_TRIALS_PER_STUDY",
                                                    help="gateway: max_trials of one study (0 = no limit)"),
    tenant_max_queued_trials: int = typer.Option(0, envvar="OPENAUTOGLM_TENANT_MAX_QUEUED_TRIALS",
                                                 help="gateway: trials still to run over a tenant's studies (0 = no limit)"),
    tls_dir: Optional[Path] = typer.Option(None, envvar="OPENAUTOGLM_TLS_DIR",
                                           help="the mesh CA and this service's certificate (default <data dir>/tls)"),
    plaintext: bool = typer.Option(False, "--plaintext", envvar="OPENAUTOGLM_PLAINTEXT",
                                   help="no TLS (allowed only when --host is a loopback address)"),
    public_tls_cert: Optional[Path] = typer.Option(None, envvar="OPENAUTOGLM_PUBLIC_TLS_CERT",
                                                   help="gateway: the public port's certificate (default: its mesh one)"),
    public_tls_key: Optional[Path] = typer.Option(None, envvar="OPENAUTOGLM_PUBLIC_TLS_KEY",
                                                  help="gateway: the public port's private key"),
    health_port: int = typer.Option(0, envvar="OPENAUTOGLM_HEALTH_PORT",
                                    help="a plaintext port that answers only the health check (0 = none)"),
    metrics_port: int = typer.Option(0, envvar="OPENAUTOGLM_METRICS_PORT",
                                     help="Prometheus metrics over HTTP at /metrics on this port (0 = none)"),
    http_port: int = typer.Option(0, envvar="OPENAUTOGLM_HTTP_PORT",
                                  help="gateway: the public API as JSON over HTTP on this port (0 = none)"),
    http_plaintext: bool = typer.Option(False, "--http-plaintext", envvar="OPENAUTOGLM_HTTP_PLAINTEXT",
                                        help="gateway: HTTP without TLS (allowed only when --host is a loopback address)"),
    jaeger_url: str = typer.Option("http://localhost:16686", envvar="OPENAUTOGLM_JAEGER_URL",
                                   help="gateway: Jaeger's web UI, where the dashboard links each study's trace"),
    advertise_addr: str = typer.Option("", envvar="OPENAUTOGLM_ADVERTISE_ADDR",
                                       help="trainer: host:port the gateway reaches it at (default: its host name and port)"),
    serving_max_batch: int = typer.Option(32, envvar="OPENAUTOGLM_SERVING_MAX_BATCH",
                                          help="trainer: inputs per forward pass of a served model"),
    serving_max_wait_ms: float = typer.Option(0.0, envvar="OPENAUTOGLM_SERVING_MAX_WAIT_MS",
                                              help="trainer: ms a batch that is not full waits for more (0 = none)"),
    serving_cache_entries: int = typer.Option(10_000, envvar="OPENAUTOGLM_SERVING_CACHE_ENTRIES",
                                              help="trainer: answers cached by (model version, input); 0 = no cache"),
    artifact_max_bytes: int = typer.Option(2 * 1024**3, envvar="OPENAUTOGLM_ARTIFACT_MAX_BYTES",
                                           help="gateway: the largest dataset or model upload, in bytes"),
    artifact_replicas: int = typer.Option(1, envvar="OPENAUTOGLM_ARTIFACT_REPLICAS",
                                          help="gateway: copies of the artifact store a NATS cluster keeps"),
) -> None:
    """Run one service until SIGTERM/SIGINT."""
    from openautoglm.common import telemetry
    from openautoglm.common.server import serve as run
    from openautoglm.common.stack import exit_with_parent
    from openautoglm.common.tls import check_transport

    exit_with_parent()  # when the embedded stack started this service

    try:
        settings = ServiceSettings(
            service=service, host=host, port=port, nats_url=nats_url,
            data_dir=data_dir or default_data_dir(), prompt_generator_addr=prompt_generator,
            scheduler_addr=scheduler, evaluator_addr=evaluator, trainer_addr=trainer, grace_seconds=grace,
            trainer_slots=trainer_slots, trainer_prefetch=trainer_prefetch, trainer_threads=trainer_threads,
            trainer_id=trainer_id,
            trainer_ack_wait=trainer_ack_wait,
            trainer_processes=trainer_processes, prompt_generator_storage=prompt_generator_storage,
            prompt_model=prompt_model, prompt_model_seconds=prompt_model_seconds, prompt_model_on=prompt_model_on,
            database_url=database_url,
            trainer_memory_mb=trainer_memory_mb, heartbeat_ttl=heartbeat_ttl, scheduler_policy=scheduler_policy,
            max_message_bytes=max_message_bytes,
            tenant_max_running_studies=tenant_max_running_studies, tenant_max_trials_per_study=tenant_max_trials_per_study,
            tenant_max_queued_trials=tenant_max_queued_trials, tls_dir=tls_dir, plaintext=plaintext,
            public_tls_cert=public_tls_cert, public_tls_key=public_tls_key, health_port=health_port,
            metrics_port=metrics_port, http_port=http_port, http_plaintext=http_plaintext, jaeger_url=jaeger_url, advertise_addr=advertise_addr, serving_max_batch=serving_max_batch,
            serving_max_wait_ms=serving_max_wait_ms, serving_cache_entries=serving_cache_entries,
            artifact_max_bytes=artifact_max_bytes, artifact_replicas=artifact_replicas,
        ).check_required()
        check_transport(settings)
    except ConfigError as err:
        _err(str(err))
    # The trainer owns the compute. Every other service's tensor work (the scheduler's GNN, the
    # evaluator's BERTScore) is small and latency-bound: one thread each, so their thread pools
    # never spin on the cores training needs. Set before any library that reads them loads.
    threads = settings.trainer_threads if service == "trainer" else 1
    if threads:
        for variable in THREAD_VARIABLES:
            os.environ.setdefault(variable, str(threads))
    telemetry.setup_logging(service)
    telemetry.setup_telemetry(service)
    try:
        try:
            service_app = build_app(settings)
        except ConfigError as err:
            _err(str(err))
        asyncio.run(run(settings, service_app))
    finally:
        telemetry.shutdown_telemetry()


@app.command()
def health(
    address: str = typer.Argument(..., help="host:port of a service's health port (or of its TLS port, with --tls)"),
    timeout: float = typer.Option(3.0, help="seconds to wait for SERVING"),
    tls: Optional[str] = typer.Option(None, "--tls", metavar="SERVICE",
                                      help="the port is SERVICE's TLS port: call it as the operator (mesh certificate)"),
) -> None:
    """Exit 0 if the service's standard gRPC health check answers SERVING (container probes use it)."""
    from openautoglm.common.server import wait_serving

    credentials = _operator().channel_credentials() if tls else None
    try:
        asyncio.run(wait_serving(address, timeout, credentials=credentials, peer=tls or ""))
    except TimeoutError as err:
        _err(str(err), 1)
    Console().print(f"{address}: SERVING")


def _operator():
    """The operator's mesh identity (the certificate `up` created) for direct calls to services."""
    from openautoglm.common.tls import OPERATOR_IDENTITY, MeshIdentity, MissingCertificates

    directory = Path(os.environ.get("OPENAUTOGLM_TLS_DIR") or default_data_dir() / "tls")
    try:
        return MeshIdentity(directory, OPERATOR_IDENTITY).check()
    except MissingCertificates as err:
        _err(str(err))


certs_app = typer.Typer(no_args_is_help=True, help="The mesh's TLS certificates (a local CA).")
app.add_typer(certs_app, name="certs")


@certs_app.command("create")
def certs_create(
    directory: Path = typer.Argument(..., help="where to write ca.crt and <identity>.crt/.key (kept if present)"),
    host: list[str] = typer.Option([], "--host", help="an extra DNS name or address the gateway's certificate is "
                                                      "valid for (its public name); repeatable"),
    export: Optional[Path] = typer.Option(None, "--export", help="also copy each identity's own files (no CA key) "
                                                                 "to EXPORT/<identity>/, one mount per container"),
    container_readable: bool = typer.Option(False, "--container-readable",
                                            help="exported keys 0644 inside 0700 folders, for docker compose's "
                                                 "file secrets (which keep the host's owner and mode)"),
) -> None:
    """Create the mesh's CA and a certificate per service, the NATS server and the operator, for
    docker compose or Kubernetes Secrets (`openautoglm up` does this by itself)."""
    from openautoglm.common.tls import IDENTITIES, OPERATOR_IDENTITY, create_mesh_certificates, export_identity

    issued = create_mesh_certificates(directory, tuple(host))
    if export is not None:
        for identity in IDENTITIES:
            if identity != OPERATOR_IDENTITY:
                export_identity(directory, identity, export / identity, container_readable)
        export.chmod(0o700)
    Console().print(f"{directory}: issued {', '.join(issued) if issued else 'nothing (all present)'}; "
                    "its keys are readable by their owner only")


# --- up / demo -------------------------------------------------------------------------------


@app.command()
def up(
    data_dir: Path = typer.Option(None, envvar="OPENAUTOGLM_DATA_DIR", help="NATS store, state, logs"),
    trainer_slots: int = typer.Option(1, help="concurrent jobs of the trainer"),
) -> None:
    """Start NATS and the five services on loopback, restart any that exits unexpectedly, and
    stop them all on Ctrl-C (or SIGTERM)."""
    from openautoglm.common.stack import EmbeddedStack, dashboard_url

    stack = EmbeddedStack(data_dir or default_data_dir(), trainer_slots=trainer_slots)
    console = Console()
    # The stack's own record (restarts, slow stops) beside its children's logs.
    import logging

    stack.log_dir.mkdir(parents=True, exist_ok=True)
    up_log = logging.FileHandler(stack.log_dir / "up.log")
    up_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("openautoglm.common.stack").addHandler(up_log)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stack.start()
        table = Table(title="Open-AutoGLM is up", show_header=True)
        table.add_column("service")
        table.add_column("endpoint")
        table.add_column("metrics")
        for name, endpoint in stack.endpoints().items():
            table.add_row(name, endpoint, stack.metrics_url(name) if name in stack.metrics_ports else "")
        console.print(table)
        console.print(f"logs: {stack.log_dir}   export {GATEWAY_ENV}={stack.address('gateway')}   Ctrl-C stops")
        console.print(f"TLS everywhere: the mesh CA is {stack.tls_dir / 'ca.crt'}; your admin API key is in "
                      f"{stack.data_dir / 'api-key'}")
        console.print(f"JSON over HTTP (loopback only): {stack.http_url()}/v1/studies, described at "
                      f"{stack.http_url()}/openapi.json")
        console.print(f"dashboard: {dashboard_url(stack.http_url())}  (sign in with the key in "
                      f"{stack.data_dir / 'api-key'}; the browser keeps it for that tab only)", highlight=False)

        def report(name: str, code: int, delay: float) -> None:
            console.print(f"[yellow]{name} exited with code {code}; restarting it in {delay:.1f}s[/] "
                          f"(log: {stack.log_dir / (name + '.log')})", highlight=False)

        supervisor = asyncio.create_task(stack.supervise(report))
        await stop.wait()
        supervisor.cancel()

    try:
        asyncio.run(main())
    except RuntimeError as err:
        _err(str(err), 1)
    finally:
        codes = stack.stop()
        if codes:
            console.print("stopped: " + ", ".join(f"{k}={v}" for k, v in codes.items()))


@app.command()
def demo(
    json_output: bool = typer.Option(False, "--json", help="print one JSON object as the last line"),
    gateway: Optional[str] = typer.Option(None, envvar=GATEWAY_ENV, help="gateway host:port (default: a running `up`, else a new stack)"),
    spec: Path = typer.Option(DEMO_SPEC, help="study spec to run"),
) -> None:
    """Run a small study end to end on CPU and print the trials, the best candidate and the trace id."""
    from openautoglm.common.spec.files import load_spec_file
    from openautoglm.common.spec.protos import spec_to_proto
    from openautoglm.common.spec.schema import SpecError
    from openautoglm.common.stack import EmbeddedStack, dashboard_url, running_stack_endpoint, running_stack_gateway

    try:
        spec_proto = spec_to_proto(load_spec_file(spec))
    except SpecError as err:
        _err(str(err))
    console = Console(stderr=json_output)
    started = time.monotonic()
    address = gateway or running_stack_gateway(default_data_dir())
    stack = None
    key = None
    data_dir = None
    if address is None:
        stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="openautoglm-demo-")))
        console.print("starting the embedded stack (NATS + 5 services)...")
        try:
            asyncio.run(stack.start())
        except (RuntimeError, TimeoutError) as err:
            stack.stop()
            _err(str(err), 1)
        address = stack.address("gateway")
        key = stack.api_key
        data_dir = stack.data_dir
        console.print(f"stack up in {time.monotonic() - started:.1f}s; logs in {stack.log_dir}")
    try:
        study = asyncio.run(_create_and_watch(address, spec_proto, console, key, data_dir))
    finally:
        if stack is not None:
            stack.stop()
    _print_study(study, console)
    console.print(f"wall time: {time.monotonic() - started:.1f}s")
    http = None if stack is not None or gateway else running_stack_endpoint(default_data_dir(), "gateway", "http")
    if http:
        console.print(f"dashboard: {dashboard_url(http, study.id)}", highlight=False)
    else:
        console.print("dashboard: this demo's own stack has stopped; run `openautoglm up` and the demo again to "
                      "follow the study in the dashboard (up prints its URL)", highlight=False)
    if json_output:
        print(json.dumps(study_summary(study)))


@app.command()
def workers(
    scheduler: Optional[str] = typer.Option(None, "--scheduler", envvar="OPENAUTOGLM_SCHEDULER_ADDR",
                                            help="gnn-scheduler host:port (default: the stack `openautoglm up` runs)"),
) -> None:
    """List the live trainers the scheduler packs work onto, with their capacity."""
    import grpc

    from openautoglm.common.server import channel
    from openautoglm.common.stack import running_stack_endpoint
    from openautoglm.v1 import scheduler_pb2, scheduler_pb2_grpc

    address = scheduler or running_stack_endpoint(default_data_dir(), "gnn-scheduler")
    if not address:
        _err("no scheduler: pass --scheduler HOST:PORT, set OPENAUTOGLM_SCHEDULER_ADDR, or run `openautoglm up`")

    async def list_workers():
        async with channel(address, _operator().channel_credentials(), "gnn-scheduler") as scheduler_channel:
            try:
                return await scheduler_pb2_grpc.SchedulerStub(scheduler_channel).ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10)
            except grpc.aio.AioRpcError as err:
                _err(f"ListWorkers: {err.code().name}: {err.details()}", 1)

    reply = asyncio.run(list_workers())
    table = Table("trainer", "slots", "MiB per slot", "device", "speed", title=f"{len(reply.workers)} live trainer(s)")
    for w in reply.workers:
        table.add_row(w.id, str(w.slots), f"{w.memory_mb:.0f}" if w.memory_mb > 0 else "unlimited", w.device_kind, f"{w.speed:g}")
    Console().print(table)


# --- study commands --------------------------------------------------------------------------


def _gateway_address(gateway: Optional[str]) -> str:
    from openautoglm.common.stack import running_stack_gateway

    address = gateway or running_stack_gateway(default_data_dir())
    if not address:
        _err(f"no gateway: pass --gateway HOST:PORT, set {GATEWAY_ENV}, or run `openautoglm up`")
    return address


GatewayOpt = typer.Option(None, "--gateway", envvar=GATEWAY_ENV, help="gateway host:port")


@study_app.command("submit")
def study_submit(
    spec_file: Path = typer.Argument(..., help="YAML or JSON study spec"),
    gateway: Optional[str] = GatewayOpt,
    watch: bool = typer.Option(False, "--watch", help="follow the study until it ends"),
) -> None:
    """Validate a spec file and create the study."""
    from openautoglm.common.spec.files import load_spec_file
    from openautoglm.common.spec.protos import spec_to_proto
    from openautoglm.common.spec.schema import SpecError

    try:
        spec_proto = spec_to_proto(load_spec_file(spec_file))
    except SpecError as err:
        _err(str(err))
    address = _gateway_address(gateway)
    console = Console()
    if watch:
        _print_study(asyncio.run(_create_and_watch(address, spec_proto, console)), console)
        return
    study = asyncio.run(_call(address, "CreateStudy", spec=spec_proto)).study
    console.print(f"created study [bold]{study.id}[/] (trace id {study.trace_id})")


@study_app.command("get")
def study_get(study_id: str, gateway: Optional[str] = GatewayOpt) -> None:
    """Print a study with its trials as JSON."""
    from google.protobuf import json_format

    study = asyncio.run(_call(_gateway_address(gateway), "GetStudy", study_id=study_id)).study
    print(json_format.MessageToJson(study, preserving_proto_field_name=True))


@study_app.command("list")
def study_list(gateway: Optional[str] = GatewayOpt, limit: int = typer.Option(20)) -> None:
    """List recent studies."""
    from openautoglm.v1 import common_pb2

    reply = asyncio.run(_call(_gateway_address(gateway), "ListStudies", page_size=limit))
    table = Table("id", "name", "state", "strategy", "created")
    for s in reply.studies:
        table.add_row(s.id, s.spec.name, common_pb2.StudyState.Name(s.state).removeprefix("STUDY_STATE_").lower(),
                      s.spec.strategy, s.created_at.ToDatetime().isoformat(timespec="seconds"))
    Console().print(table)


@study_app.command("watch")
def study_watch(study_id: str, gateway: Optional[str] = GatewayOpt) -> None:
    """Follow a study's progress until it ends, then print its trials."""
    console = Console()
    _print_study(asyncio.run(_watch(_gateway_address(gateway), study_id, console)), console)


@study_app.command("export")
def study_export(study_id: str, gateway: Optional[str] = GatewayOpt) -> None:
    """Export the best trial's model to safetensors and ONNX; prints the files."""
    reply = asyncio.run(_call(_gateway_address(gateway), "ExportBest", study_id=study_id, timeout=600))
    console = Console()
    console.print(f"best trial {reply.trial_id} exported:")
    for path in reply.files:
        console.print(f"  {path}")


@study_app.command("cancel")
def study_cancel(study_id: str, gateway: Optional[str] = GatewayOpt) -> None:
    """Cancel a running study."""
    study = asyncio.run(_call(_gateway_address(gateway), "CancelStudy", study_id=study_id)).study
    Console().print(f"study {study.id}: {study.state}")


def _roles() -> dict[str, int]:
    """keys.proto's roles by their CLI names: reader, member, admin."""
    from openautoglm.v1 import keys_pb2

    return {name.removeprefix("ROLE_").lower(): value for name, value in keys_pb2.Role.items() if value}


def _key_row(key) -> list[str]:
    from openautoglm.v1 import keys_pb2

    revoked = key.revoked_at.ToDatetime().isoformat(timespec="seconds") if key.HasField("revoked_at") else ""
    return [key.id, key.tenant, keys_pb2.Role.Name(key.role).removeprefix("ROLE_").lower(), key.name,
            key.created_at.ToDatetime().isoformat(timespec="seconds"), revoked]


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., "--tenant", help="the tenant the key acts for"),
    role: str = typer.Option("member", "--role", help="reader, member or admin"),
    name: str = typer.Option("", "--name", help="a label for people"),
    gateway: Optional[str] = GatewayOpt,
) -> None:
    """Create a key; its secret is printed once (store it: the gateway keeps only a hash)."""
    roles = _roles()
    if role not in roles:
        _err(f"--role: one of {', '.join(roles)}")
    reply = asyncio.run(_call(_gateway_address(gateway), "CreateKey", service="Keys", tenant=tenant, role=roles[role],
                              name=name))
    Console(stderr=True).print(f"created {reply.key.id} for tenant {reply.key.tenant} ({role}); its secret follows:")
    print(reply.secret)


@keys_app.command("list")
def keys_list(gateway: Optional[str] = GatewayOpt) -> None:
    """Every key (never its secret)."""
    reply = asyncio.run(_call(_gateway_address(gateway), "ListKeys", service="Keys"))
    table = Table("id", "tenant", "role", "name", "created", "revoked")
    for key in reply.keys:
        table.add_row(*_key_row(key))
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, gateway: Optional[str] = GatewayOpt) -> None:
    """Revoke a key; its next call is refused (no restart)."""
    reply = asyncio.run(_call(_gateway_address(gateway), "RevokeKey", service="Keys", key_id=key_id))
    Console().print(f"revoked {reply.key.id} (tenant {reply.key.tenant})")


# --- data and models commands (over the SDK, openautoglm/client.py) ---------------------------


def _sdk(gateway: Optional[str], work):
    """Run `work(client)` against the gateway; a refusal exits with the gateway's message."""
    from openautoglm.client import Client, ClientError

    address = _gateway_address(gateway)

    async def run():
        async with Client(channel=_open_gateway(address)) as client:
            return await work(client)

    try:
        return asyncio.run(run())
    except ClientError as err:
        _err(str(err), 1)


def _artifact_row(a) -> list[str]:
    from openautoglm.v1 import artifacts_pb2

    return [a.id, artifacts_pb2.ArtifactKind.Name(a.kind).removeprefix("ARTIFACT_KIND_").lower(), a.name,
            f"{a.size_bytes}", a.sha256[:12], a.created_at.ToDatetime().isoformat(timespec="seconds")]


@data_app.command("upload")
def data_upload(
    path: Path = typer.Argument(..., help="a JSONL dataset file, or a Hugging Face model directory (with --model)"),
    model: bool = typer.Option(False, "--model", help="upload a base model directory"),
    name: str = typer.Option("", "--name", help="a label for people (default: the file's name)"),
    gateway: Optional[str] = GatewayOpt,
) -> None:
    """Upload a dataset or a base model; prints its id for a spec (dataset: {artifact: ID})."""
    from openautoglm.common import artifact_files

    if model:
        if not (path / "config.json").is_file():
            _err(f"{path}: not a Hugging Face model directory (no config.json)")
    else:
        if not path.is_file():
            _err(f"{path}: no such file")
        try:
            artifact_files.check_jsonl(path)
        except artifact_files.ArtifactError as err:
            _err(f"{path}: {err}")
    artifact = _sdk(gateway, lambda c: c.upload_model(path, name) if model else c.upload_dataset(path, name))
    Console(stderr=True).print(f"uploaded {path} ({artifact.size_bytes} bytes, sha256 {artifact.sha256[:12]}...); its id:")
    print(artifact.id)


@data_app.command("list")
def data_list(gateway: Optional[str] = GatewayOpt) -> None:
    """Your tenant's artifacts."""
    table = Table("id", "kind", "name", "bytes", "sha256", "created")
    for artifact in _sdk(gateway, lambda c: c.list_artifacts()):
        table.add_row(*_artifact_row(artifact))
    Console().print(table)


@data_app.command("delete")
def data_delete(artifact_id: str, gateway: Optional[str] = GatewayOpt) -> None:
    """Delete an artifact (its bytes go once no running study uses it)."""
    artifact = _sdk(gateway, lambda c: c.delete_artifact(artifact_id))
    still = f"; {len(artifact.referenced_by)} running studies still use it" if artifact.referenced_by else ""
    Console().print(f"deleted {artifact.id}{still}")


def _version_row(v) -> list[str]:
    from openautoglm.v1 import models_pb2

    state = models_pb2.ModelVersionState.Name(v.state).removeprefix("MODEL_VERSION_STATE_").lower()
    deployed = v.deployment.trainer_id if v.HasField("deployment") else ""
    return [v.name, str(v.version), state, ",".join(v.aliases), f"{v.objective_value:.4f}", v.study_id, v.trial_id, deployed]


MODEL_HELP = "NAME, NAME:VERSION or NAME@ALIAS (NAME alone: its newest ready version)"


@models_app.command("list")
def models_list(name: str = typer.Option("", "--name", help="only this model's versions"),
                gateway: Optional[str] = GatewayOpt) -> None:
    """Registered model versions, newest first."""
    table = Table("name", "version", "state", "aliases", "objective", "study", "trial", "deployed on")
    for version in _sdk(gateway, lambda c: c.list_models(name)):
        table.add_row(*_version_row(version))
    Console().print(table)


@models_app.command("get")
def models_get(model: str = typer.Argument(..., help=MODEL_HELP), gateway: Optional[str] = GatewayOpt) -> None:
    """A version with its files and manifest, as JSON."""
    from google.protobuf import json_format

    print(json_format.MessageToJson(_sdk(gateway, lambda c: c.model(model)), preserving_proto_field_name=True))


@models_app.command("register")
def models_register(study_id: str, trial_id: str = typer.Option("", "--trial", help="default: the best trial"),
                    name: str = typer.Option("", "--name", help="default: the study's name"),
                    gateway: Optional[str] = GatewayOpt) -> None:
    """Register a succeeded trial as the next version of a model (waits until it is ready)."""
    version = _sdk(gateway, lambda c: c.register(study_id, trial_id, name))
    Console().print(f"registered {version.name} version {version.version} ({len(version.files)} files)")


@models_app.command("download")
def models_download(model: str = typer.Argument(..., help=MODEL_HELP),
                    directory: Path = typer.Argument(..., help="where to write the files"),
                    gateway: Optional[str] = GatewayOpt) -> None:
    """Download a version's files; every file's sha256 is checked against the manifest."""
    files = _sdk(gateway, lambda c: c.download(model, directory))
    Console().print(f"{len(files)} files in {directory}, every digest checked")


@models_app.command("alias")
def models_alias(model: str = typer.Argument(..., help=MODEL_HELP), alias: str = typer.Argument(...),
                 gateway: Optional[str] = GatewayOpt) -> None:
    """Point an alias (production, say) at a version."""
    version = _sdk(gateway, lambda c: c.set_alias(model, alias))
    Console().print(f"{version.name}@{alias} -> version {version.version}")


@models_app.command("deploy")
def models_deploy(model: str = typer.Argument(..., help=MODEL_HELP), gateway: Optional[str] = GatewayOpt) -> None:
    """Load a version onto serving capacity (a trainer)."""
    version = _sdk(gateway, lambda c: c.deploy(model))
    Console().print(f"{version.name} version {version.version} deployed on {version.deployment.trainer_id}")


@models_app.command("undeploy")
def models_undeploy(model: str = typer.Argument(..., help=MODEL_HELP), gateway: Optional[str] = GatewayOpt) -> None:
    version = _sdk(gateway, lambda c: c.undeploy(model))
    Console().print(f"{version.name} version {version.version} undeployed")


@models_app.command("predict")
def models_predict(model: str = typer.Argument(..., help=MODEL_HELP),
                   inputs: list[str] = typer.Argument(..., help="raw inputs (the prompt is applied by the server)"),
                   gateway: Optional[str] = GatewayOpt) -> None:
    """Predict with a deployed version: one JSON line per input."""
    for text, prediction in zip(inputs, _sdk(gateway, lambda c: c.predict(model, inputs))):
        answer = {"label": prediction.label, "scores": dict(prediction.scores)} if prediction.label else {"text": prediction.text}
        print(json.dumps({"input": text, **answer, "cached": prediction.cached}))


@models_app.command("delete")
def models_delete(model: str = typer.Argument(..., help=MODEL_HELP), gateway: Optional[str] = GatewayOpt) -> None:
    """Delete a version that is not deployed, with its files."""
    version = _sdk(gateway, lambda c: c.delete_model(model))
    Console().print(f"deleted {version.name} version {version.version}")


# --- gRPC client helpers ---------------------------------------------------------------------


def _api_key() -> str:
    """The caller's API key ($OPENAUTOGLM_API_KEY, else the key `up` wrote in the data dir)."""
    from openautoglm.common.credentials import NoApiKey, api_key

    try:
        return api_key(default_data_dir())
    except NoApiKey as err:
        _err(str(err))


def _open_gateway(address: str, key: str | None = None, data_dir: Path | None = None):
    """A channel to the gateway: TLS trusting the stack's CA (in `data_dir`, default the user's
    data dir), authenticating with `key` (default: the caller's)."""
    from openautoglm.common.credentials import gateway_channel, gateway_credentials

    try:
        credentials = gateway_credentials(data_dir or default_data_dir())
    except FileNotFoundError as err:
        _err(str(err))
    return gateway_channel(address, key or _api_key(), credentials)


async def _call(address: str, method: str, timeout: float = 30, key: str | None = None, service: str = "Studies",
                data_dir: Path | None = None, **fields):
    """One call to the gateway's public API (`service`: Studies or Keys); exits on an error."""
    import grpc

    from openautoglm.v1 import keys_pb2, keys_pb2_grpc, studies_pb2, studies_pb2_grpc

    messages, stub_class = {"Studies": (studies_pb2, studies_pb2_grpc.StudiesStub),
                            "Keys": (keys_pb2, keys_pb2_grpc.KeysStub)}[service]
    request = getattr(messages, f"{method}Request")(**fields)
    async with _open_gateway(address, key, data_dir) as channel:
        try:
            return await getattr(stub_class(channel), method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            _err(f"{method}: {err.code().name}: {err.details()}", 1)


async def _create_and_watch(address: str, spec_proto, console: Console, key: str | None = None,
                            data_dir: Path | None = None):
    study = (await _call(address, "CreateStudy", key=key, data_dir=data_dir, spec=spec_proto)).study
    console.print(f"study [bold]{study.id}[/]  trace id [bold]{study.trace_id}[/]")
    return await _watch(address, study.id, console, key, data_dir)


async def _watch(address: str, study_id: str, console: Console, key: str | None = None, data_dir: Path | None = None):
    import grpc

    from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc

    reported: set[str] = set()
    study = None
    async with _open_gateway(address, key, data_dir) as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        try:
            async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study_id)):
                study = update.study
                total = study.spec.budget.max_trials
                for t in study.trials:
                    if t.status in (common_pb2.TRIAL_STATUS_SUCCEEDED, common_pb2.TRIAL_STATUS_FAILED) and t.id not in reported:
                        reported.add(t.id)
                        outcome = (f"objective {t.objective_value:.4f}" if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED
                                   else f"[red]failed[/]: {t.error}")
                        console.print(f"  [{len(reported)}/{total}] trial {t.number} ({t.candidate.template_id}) {outcome}")
        except grpc.aio.AioRpcError as err:
            _err(f"WatchStudy: {err.code().name}: {err.details()}", 1)
    return study


def _hp_plain(candidate) -> dict:
    from openautoglm.common.spec.protos import param_from_proto

    return {k: param_from_proto(v) for k, v in sorted(candidate.hyperparameters.items())}


def study_summary(study) -> dict:
    """The demo's --json object: study id, trace id, best trial and every trial."""
    from openautoglm.v1 import common_pb2

    def trial_dict(t):
        return {
            "id": t.id,
            "number": t.number,
            "status": common_pb2.TrialStatus.Name(t.status).removeprefix("TRIAL_STATUS_").lower(),
            "candidate": {"id": t.candidate.id, "template_id": t.candidate.template_id,
                          "variables": dict(t.candidate.variables), "prompt": t.candidate.prompt,
                          "hyperparameters": _hp_plain(t.candidate)},
            "metrics": dict(t.metrics),
            "objective": t.objective_value if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED else None,
            "extra_objectives": list(t.extra_objective_values),
            "error": t.error,
            "predicted_seconds": round(t.predicted_seconds, 3) if t.predicted_seconds else None,
            "actual_seconds": round(t.actual_seconds, 3) if t.actual_seconds else None,
            "lineage": ({"source": t.candidate.lineage.source, "parent_candidate_id": t.candidate.lineage.parent_candidate_id,
                         "edits": list(t.candidate.lineage.edits)} if t.candidate.lineage.source else None),
            "repeat_of": t.repeat_of or None,
            "seed_offset": t.seed_offset,
            "test_metrics": dict(t.test_metrics) or None,
        }

    def spread(values) -> dict:
        return {name: {"mean": v.mean, "sd": v.sd} for name, v in sorted(values.items())}

    best = next((t for t in study.trials if t.id == study.best_trial_id), None)
    return {
        "study_id": study.id,
        "state": common_pb2.StudyState.Name(study.state).removeprefix("STUDY_STATE_").lower(),
        "trace_id": study.trace_id,
        "best": trial_dict(best) if best else None,
        "pareto_trial_ids": list(study.pareto_trial_ids),
        "final": ({"best_trial_id": study.final.best_trial_id, "validation_metrics": dict(study.final.validation_metrics),
                   "test_metrics": dict(study.final.test_metrics), "validation_objective": study.final.validation_objective,
                   "test_objective": study.final.test_objective, "seeds": study.final.seeds,
                   "test_examples": study.final.test_examples, "validation_spread": spread(study.final.validation_spread),
                   "test_spread": spread(study.final.test_spread), "error": study.final.error}
                  if study.HasField("final") else None),
        "trials": [trial_dict(t) for t in study.trials],
    }


def _print_study(study, console: Console) -> None:
    from openautoglm.v1 import common_pb2

    if study is None:
        return
    metric_names = sorted({m for t in study.trials for m in t.metrics})
    table = Table(title=f"study {study.id} ({study.spec.strategy})")
    table.add_column("#", no_wrap=True)
    table.add_column("template", no_wrap=True)
    table.add_column("variables", max_width=34, no_wrap=True, overflow="ellipsis")
    table.add_column("hyper-parameters", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("trainer", no_wrap=True)
    table.add_column("seconds (predicted)", justify="right", no_wrap=True)
    for name in (*metric_names, "objective"):
        table.add_column(name, justify="right", no_wrap=True)
    for t in study.trials:
        status = common_pb2.TrialStatus.Name(t.status).removeprefix("TRIAL_STATUS_").lower()
        mark = "*" if t.id == study.best_trial_id else (f" (repeat, seed +{t.seed_offset})" if t.repeat_of else "")
        hps = " ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in _hp_plain(t.candidate).items())
        trainer = (t.trainer_id or t.assigned_worker_id) + (f" (attempt {t.attempt + 1})" if t.attempt else "")
        seconds = (f"{t.actual_seconds:.1f}" if t.actual_seconds else "") + (f" ({t.predicted_seconds:.1f})" if t.predicted_seconds else "")
        table.add_row(f"{t.number}{mark}", t.candidate.template_id, " / ".join(t.candidate.variables.values()), hps, status, trainer,
                      seconds,
                      *(f"{t.metrics[m]:.3f}" if m in t.metrics else "" for m in metric_names),
                      f"{t.objective_value:.3f}" if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED else "")
    console.print(table)
    state = common_pb2.StudyState.Name(study.state).removeprefix("STUDY_STATE_").lower()
    best = next((t for t in study.trials if t.id == study.best_trial_id), None)
    console.print(f"state: {state}{' (' + study.error + ')' if study.error else ''}")
    if best:
        console.print(f"best: trial {best.number}  objective {best.objective_value:.4f}  prompt: {best.candidate.prompt!r}  "
                      f"hyper-parameters: {_hp_plain(best.candidate)}")
        lineage = best.candidate.lineage
        if lineage.source:
            parent = next((t.number for t in study.trials if t.candidate.id == lineage.parent_candidate_id), None)
            console.print(f"  its instruction was written by the search ({lineage.source}"
                          f"{f' of trial {parent}' if parent is not None else ''}): {'; '.join(lineage.edits)}")
    if study.HasField("final"):
        _print_final(study.final, console)
    if study.pareto_trial_ids:
        numbers = sorted(t.number for t in study.trials if t.id in set(study.pareto_trial_ids))
        console.print(f"Pareto front: trials {', '.join(map(str, numbers))}")
    console.print(f"trace id: {study.trace_id}")


def _print_final(final, console: Console) -> None:
    """The winner's validation metrics (what chose it) beside its test metrics (the estimate to
    quote), with the spread over its seeds when it was trained again."""
    names = sorted(set(final.validation_metrics) | set(final.test_metrics)) + ["objective"]
    validation = {**final.validation_metrics, "objective": final.validation_objective}
    test = {**final.test_metrics, "objective": final.test_objective} if final.test_metrics else {}
    table = Table("metric", "validation", "test", title=f"the winner on {final.test_examples} test examples"
                  if final.test_examples else "the winner")
    if final.seeds > 1:
        table.add_column(f"validation (mean ± sd, {final.seeds} seeds)", justify="right")
        table.add_column(f"test (mean ± sd, {final.seeds} seeds)", justify="right")
    for name in names:
        row = [name, f"{validation[name]:.4f}" if name in validation else "", f"{test[name]:.4f}" if name in test else ""]
        if final.seeds > 1:
            row += [f"{spread.mean:.4f} ± {spread.sd:.4f}" if (spread := spreads.get(name)) is not None else ""
                    for spreads in (final.validation_spread, final.test_spread)]
        table.add_row(*row)
    console.print(table)
    if final.error:
        console.print(f"no test scores: {final.error}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
