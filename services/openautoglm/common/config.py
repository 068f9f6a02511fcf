"""Service configuration from flags and OPENAUTOGLM_* environment variables.

Flags win over environment variables (typer reads both, see cli.py); what a service needs and
was given neither way makes it exit at start-up with a message naming the flag and the variable.
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

SERVICES = ("gateway", "prompt-generator", "gnn-scheduler", "trainer", "evaluator")

# Which peer addresses and infrastructure each service cannot start without.
REQUIRED = {
    "gateway": ("nats_url", "prompt_generator_addr", "scheduler_addr", "evaluator_addr"),
    "prompt-generator": (),
    "gnn-scheduler": ("nats_url",),
    "trainer": ("nats_url", "evaluator_addr"),
    "evaluator": (),
}

FLAG_AND_ENV = {
    "nats_url": ("--nats-url", "OPENAUTOGLM_NATS_URL"),
    "prompt_generator_addr": ("--prompt-generator", "OPENAUTOGLM_PROMPT_GENERATOR_ADDR"),
    "scheduler_addr": ("--scheduler", "OPENAUTOGLM_SCHEDULER_ADDR"),
    "evaluator_addr": ("--evaluator", "OPENAUTOGLM_EVALUATOR_ADDR"),
    "trainer_addr": ("--trainer", "OPENAUTOGLM_TRAINER_ADDR"),
}


def sqlalchemy_url(url: str) -> str:
    """A database URL as SQLAlchemy should open it: plain `postgresql://` means psycopg 3, the
    driver installed (SQLAlchemy's default for it is psycopg2)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


class ConfigError(Exception):
    """A required setting is missing or malformed; the message names the flag and variable."""


def default_data_dir() -> Path:
    return Path(os.environ.get("OPENAUTOGLM_DATA_DIR") or Path.home() / ".openautoglm")


class ServiceSettings(BaseModel):
    service: str
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    nats_url: str = ""
    data_dir: Path = Field(default_factory=default_data_dir)
    prompt_generator_addr: str = ""
    scheduler_addr: str = ""
    evaluator_addr: str = ""
    # Gateway, optional: a trainer (or the trainers' load-balanced Service) for ExportBest.
    # Prompt-generator with prompt_model_on "trainer": the trainer hosting its prompt model.
    trainer_addr: str = ""
    # Seconds a stopping server gives in-flight RPCs before cancelling them.
    grace_seconds: float = 10.0
    # Trainer only: concurrent jobs (slots) this replica takes.
    trainer_slots: int = Field(1, ge=1)
    # Trainer only: jobs held waiting per slot, so the next trial starts the moment one ends.
    trainer_prefetch: int = Field(1, ge=0)
    # Trainer only: CPU threads for training (0 = the libraries' default, every core). Set it below
    # the core count when the trainer shares its machine with the other services.
    trainer_threads: int = Field(0, ge=0)
    trainer_id: str = ""
    # Trainer only: seconds without a sign of life before JetStream redelivers a job elsewhere. A
    # live trainer says "in progress" every third of it, so a dead one's job moves on this soon.
    trainer_ack_wait: float = Field(30.0, gt=0)
    # Trainer only: data-parallel processes per trial (0 = one per local GPU, DDP via torchrun).
    trainer_processes: int = Field(0, ge=0)
    # Trainer only: memory per slot to announce, in MiB (0 = measure: free GPU memory, or free RAM
    # on a CPU trainer, at start-up, divided by the slots). The scheduler packs against it.
    trainer_memory_mb: float = Field(0.0, ge=0)
    # Prompt-generator only: where study registrations live for every replica, any SQLAlchemy URL
    # (PostgreSQL for replicas on several machines); empty = SQLite under the data dir.
    prompt_generator_storage: str = ""
    # Prompt-generator only: a local Hugging Face causal LM directory that writes instructions
    # (APE, OPRO, paraphrase edits); empty = none (studies that ask for one are refused). Its
    # generation gets at most `prompt_model_seconds` per instruction.
    prompt_model: str = ""
    prompt_model_seconds: float = Field(20.0, gt=0)
    # Prompt-generator only: where its prompt model runs, "local" (in its own process, the
    # directory above) or "trainer" (the one the trainer at `trainer_addr` hosts with its own
    # OPENAUTOGLM_PROMPT_MODEL: generation where the GPUs are). Trainer: `prompt_model` is the
    # model it hosts for the prompt-generator.
    prompt_model_on: str = Field("local", pattern="^(local|trainer)$")
    # Gateway only: its database, a SQLAlchemy URL (postgresql://user:password@host/db for more
    # than one replica); empty = SQLite under the data dir.
    database_url: str = ""
    # Scheduler only: seconds without a heartbeat after which a trainer counts as failed and its
    # trials are placed elsewhere.
    heartbeat_ttl: float = Field(15.0, gt=0)
    # Scheduler only: the policy a Pack or Plan that names none gets: "gnn" (the learned one, with
    # critical_path until its weights load), "critical_path", "heft" or "fifo".
    scheduler_policy: str = Field("gnn", pattern="^(gnn|critical_path|heft|fifo)$")
    # Gateway only: per-tenant quotas (0 = no limit), checked at CreateStudy.
    tenant_max_running_studies: int = Field(0, ge=0)
    tenant_max_trials_per_study: int = Field(0, ge=0)
    tenant_max_queued_trials: int = Field(0, ge=0)
    # Trainer only: the host:port the gateway reaches this trainer's gRPC server at (publishing a
    # trial's model, serving deployed ones); empty = this host's name (or the bound host) and port.
    advertise_addr: str = ""
    # Trainer only: dynamic batching of served models (inputs per forward pass; how long a batch
    # that is not full waits for more, in ms: 0 = it takes what queued while the last one ran)
    # and the answer cache's size (entries; 0 = no cache).
    serving_max_batch: int = Field(32, ge=1, le=1024)
    serving_max_wait_ms: float = Field(0.0, ge=0)
    serving_cache_entries: int = Field(10_000, ge=0)
    # Gateway only: the largest artifact (dataset, or model archive) an upload may carry, in bytes.
    artifact_max_bytes: int = Field(2 * 1024**3, ge=1)
    # Gateway only: copies of the artifact store kept by a NATS cluster (1 on a single server).
    artifact_replicas: int = Field(1, ge=1, le=5)
    # Largest request this service accepts, in bytes; a larger one gets RESOURCE_EXHAUSTED.
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=2**31 - 1)
    # The mesh's CA, this service's certificate and key (tls.py); empty = <data dir>/tls.
    tls_dir: Path | None = None
    # Serve and call without TLS. Refused unless the service binds a loopback address.
    plaintext: bool = False
    # Gateway only: the public port's certificate and key (a public CA's, say); empty = the
    # gateway's mesh certificate, which clients verify with the mesh's ca.crt.
    public_tls_cert: Path | None = None
    public_tls_key: Path | None = None
    # A second port that answers only the standard health check, in plaintext (0 = none):
    # Kubernetes' gRPC probes cannot present a certificate.
    health_port: int = Field(0, ge=0, le=65535)
    # Prometheus metrics over plain HTTP at /metrics on this port (0 = none): metrics.py.
    metrics_port: int = Field(0, ge=0, le=65535)
    # Gateway only: the public API as JSON over HTTP (gateway/http_api.py) on this port, over TLS
    # with the public port's certificate unless --plaintext (0 = none).
    http_port: int = Field(0, ge=0, le=65535)
    # Gateway only: the HTTP port without TLS (a browser on this machine trusts no mesh CA);
    # refused unless the gateway binds a loopback address, like --plaintext.
    http_plaintext: bool = False
    # Gateway only: Jaeger's web UI, where the dashboard links a study's trace (<url>/trace/<id>).
    jaeger_url: str = Field("http://localhost:16686", pattern=r"^https?://[^\s\"'<>]+$")

    def check_required(self) -> "ServiceSettings":
        """Raise ConfigError naming every missing required setting of this service."""
        if self.service not in SERVICES:
            raise ConfigError(f"unknown service {self.service!r}; expected one of {', '.join(SERVICES)}")
        missing = [
            f"{FLAG_AND_ENV[name][0]} (or {FLAG_AND_ENV[name][1]})"
            for name in REQUIRED[self.service]
            if not getattr(self, name)
        ]
        if self.service == "prompt-generator" and self.prompt_model_on == "trainer" and not self.trainer_addr:
            name = "trainer_addr"
            missing.append(f"{FLAG_AND_ENV[name][0]} (or {FLAG_AND_ENV[name][1]}), for --prompt-model-on trainer")
        if missing:
            raise ConfigError(f"{self.service}: missing required setting(s): {'; '.join(missing)}")
        return self

    def tls_directory(self) -> Path:
        """Where this service's certificates are (tls.py reads them)."""
        return self.tls_dir or self.data_dir / "tls"

    def service_dir(self) -> Path:
        """This service's own folder under the data dir (created)."""
        path = self.data_dir / self.service
        path.mkdir(parents=True, exist_ok=True)
        return path
