"""The model registry: versions of a tenant's models, their aliases, and how a trial becomes one.

A registration records the version as REGISTERING at once, then asks the trainer that trained
the trial (found by id among the live workers, at the address it announces) to store the
trial's files in the artifact store (Trainer.PublishModel), writes the manifest beside them and
marks the version READY. A trainer that is away is waited for (a transient, retried with
backoff); a trial whose files cannot be stored fails the version with the reason. A version
still REGISTERING when its gateway died is taken up again by the next leader.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from google.protobuf.json_format import MessageToDict

from openautoglm.common import artifacts
from openautoglm.gateway.database import model_aliases, model_versions
from openautoglm.v1 import common_pb2, models_pb2, scheduler_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MANIFEST = "manifest.json"
# How long a registration waits for the trial's trainer to come back before failing.
REGISTER_PATIENCE_SECONDS = 600.0
PACKAGES = ("openautoglm", "torch", "transformers", "peft", "tokenizers", "safetensors", "onnx", "onnxruntime", "grpcio", "protobuf")
V = models_pb2


def model_name_for(study_name: str) -> str:
    """A study's name as a model name (letters, digits, '.', '_', '-'; the rest become '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", study_name).strip("-._")[:64]
    return name or "model"


def object_prefix(tenant: str, name: str, version: int) -> str:
    return f"models/{tenant}/{name}/{version}"


def source_revision() -> str:
    """The code's revision: $OPENAUTOGLM_SOURCE_REVISION (images set it), else git's, else unknown."""
    if revision := os.environ.get("OPENAUTOGLM_SOURCE_REVISION"):
        return revision
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


class ModelRegistry:
    """The model_versions and model_aliases tables (database.py)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def create(self, version: models_pb2.ModelVersion) -> models_pb2.ModelVersion:
        """Insert `version` as the next number of its name (numbers never repeat while rows exist)."""
        for _ in range(20):
            with self.engine.begin() as conn:
                top = conn.execute(sa.select(sa.func.max(model_versions.c.version)).where(
                    model_versions.c.tenant == version.tenant, model_versions.c.name == version.name)).scalar()
                version.version = (top or 0) + 1
                try:
                    conn.execute(model_versions.insert().values(
                        tenant=version.tenant, name=version.name, version=version.version, state=version.state,
                        created=time.time(), blob=version.SerializeToString()))
                    return version
                except sa.exc.IntegrityError:  # another replica took this number: the next one
                    continue
        raise RuntimeError(f"could not number a new version of {version.name}")

    def save(self, version: models_pb2.ModelVersion) -> None:
        with self.engine.begin() as conn:
            conn.execute(model_versions.update().where(*self._key(version.tenant, version.name, version.version)).values(
                state=version.state, blob=version.SerializeToString()))

    def set_deployed(self, version: models_pb2.ModelVersion, trainer_id: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(model_versions.update().where(*self._key(version.tenant, version.name, version.version)).values(
                deployed_on=trainer_id, blob=version.SerializeToString()))

    @staticmethod
    def _key(tenant: str, name: str, number: int) -> tuple[Any, ...]:
        return (model_versions.c.tenant == tenant, model_versions.c.name == name, model_versions.c.version == number)

    def _rows(self, query) -> list[models_pb2.ModelVersion]:
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            # Every alias of these models in one query, not one per version.
            aliases: dict[tuple[str, str, int], list[str]] = {}
            if rows:
                found = conn.execute(sa.select(model_aliases.c.tenant, model_aliases.c.name, model_aliases.c.version,
                                               model_aliases.c.alias).where(
                    model_aliases.c.tenant.in_(sorted({row.tenant for row in rows})),
                    model_aliases.c.name.in_(sorted({row.name for row in rows})))).all()
                for tenant, name, number, alias in found:
                    aliases.setdefault((tenant, name, number), []).append(alias)
        out = []
        for row in rows:
            version = models_pb2.ModelVersion.FromString(row.blob)
            del version.aliases[:]
            version.aliases.extend(sorted(aliases.get((row.tenant, row.name, row.version), [])))
            out.append(version)
        return out

    def get(self, tenant: str, ref: models_pb2.ModelRef) -> models_pb2.ModelVersion | None:
        """The version `ref` names: by number, else by alias, else the newest READY one."""
        query = model_versions.select().where(model_versions.c.tenant == tenant, model_versions.c.name == ref.name)
        if ref.version:
            query = query.where(model_versions.c.version == ref.version)
        elif ref.alias:
            with self.engine.connect() as conn:
                number = conn.execute(sa.select(model_aliases.c.version).where(
                    model_aliases.c.tenant == tenant, model_aliases.c.name == ref.name, model_aliases.c.alias == ref.alias)).scalar()
            if number is None:
                return None
            query = query.where(model_versions.c.version == number)
        else:
            query = query.where(model_versions.c.state == V.MODEL_VERSION_STATE_READY).order_by(model_versions.c.version.desc()).limit(1)
        found = self._rows(query)
        return found[0] if found else None

    def versions(self, tenant: str, name: str = "", limit: int = 500, before: float | None = None) -> list[models_pb2.ModelVersion]:
        query = model_versions.select().where(model_versions.c.tenant == tenant)
        if name:
            query = query.where(model_versions.c.name == name)
        if before is not None:
            query = query.where(model_versions.c.created < before)
        return self._rows(query.order_by(model_versions.c.created.desc()).limit(limit))

    def all_versions(self) -> list[models_pb2.ModelVersion]:
        """Every tenant's versions (the artifact collector keeps what they were tuned on)."""
        return self._rows(model_versions.select())

    def registering(self) -> list[models_pb2.ModelVersion]:
        return self._rows(model_versions.select().where(model_versions.c.state == V.MODEL_VERSION_STATE_REGISTERING))

    def deployed(self) -> list[models_pb2.ModelVersion]:
        return self._rows(model_versions.select().where(model_versions.c.deployed_on.is_not(None)))

    def of_study(self, tenant: str, study_id: str) -> list[models_pb2.ModelVersion]:
        return [v for v in self.versions(tenant) if v.study_id == study_id]

    def set_alias(self, version: models_pb2.ModelVersion, alias: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(model_aliases.delete().where(model_aliases.c.tenant == version.tenant,
                                                      model_aliases.c.name == version.name, model_aliases.c.alias == alias))
            conn.execute(model_aliases.insert().values(tenant=version.tenant, name=version.name, alias=alias,
                                                       version=version.version))

    def delete(self, version: models_pb2.ModelVersion) -> None:
        with self.engine.begin() as conn:
            conn.execute(model_aliases.delete().where(model_aliases.c.tenant == version.tenant,
                                                      model_aliases.c.name == version.name,
                                                      model_aliases.c.version == version.version))
            conn.execute(model_versions.delete().where(*self._key(version.tenant, version.name, version.version)))


def manifest(version: models_pb2.ModelVersion, study: common_pb2.Study, trial: common_pb2.Trial) -> dict[str, Any]:
    """Enough to reproduce or audit the version: what was searched, what won, with what code."""
    return {
        "name": version.name, "version": version.version, "study_id": study.id, "trial_id": trial.id,
        "task": common_pb2.TaskType.Name(study.spec.task),
        "spec": MessageToDict(study.spec, preserving_proto_field_name=True),
        "candidate": MessageToDict(trial.candidate, preserving_proto_field_name=True),
        "metrics": dict(trial.metrics), "objective_value": trial.objective_value, "seed": study.spec.seed,
        "precision": trial.precision, "packages": package_versions(), "source_revision": source_revision(),
        "files": [{"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256} for f in version.files],
    }


class Registrar:
    """Turns REGISTERING versions into READY ones through the trial's trainer."""

    def __init__(self, registry: ModelRegistry, store, bucket, workers, trainer_channel):
        self.registry = registry
        self.store = store  # StudyStore
        self.bucket = bucket  # async () -> the artifact store
        self.workers = workers  # async () -> live scheduler workers
        self.trainer_channel = trainer_channel  # (address) -> grpc.aio.Channel
        self._tasks: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        # Called when a registration ends: the trainer's place its export held is free again.
        self.on_done: Callable[[], None] | None = None

    def start(self, version: models_pb2.ModelVersion) -> None:
        key = (version.tenant, version.name, version.version)
        if key not in self._tasks or self._tasks[key].done():
            self._tasks[key] = task = asyncio.create_task(self._register(version))
            task.add_done_callback(lambda _: self.on_done() if self.on_done is not None else None)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    async def _register(self, version: models_pb2.ModelVersion) -> None:
        study = self.store.study(version.study_id)
        trial = next((t for t in study.trials if t.id == version.trial_id), None) if study else None
        if study is None or trial is None:
            return self._fail(version, f"trial {version.trial_id} not found")
        deadline = time.monotonic() + REGISTER_PATIENCE_SECONDS
        pause = 0.5
        prefix = object_prefix(version.tenant, version.name, version.version)
        while True:
            try:
                reply = await self._publish(trial, prefix)
                break
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return self._fail(version, f"{err.code().name}: {err.details()}")
                reason = f"the trainer is away ({err.code().name})"
            except LookupError as err:
                reason = str(err)
            if time.monotonic() > deadline:
                return self._fail(version, f"gave up after {REGISTER_PATIENCE_SECONDS:.0f}s: {reason}")
            log.info("registration of %s v%d waits: %s", version.name, version.version, reason)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)
        if self.registry.get(version.tenant, models_pb2.ModelRef(name=version.name, version=version.version)) is None:
            # Deleted while it registered: its files go too.
            bucket = await self.bucket()
            for f in reply.files:
                await artifacts.delete_object(bucket, f"{prefix}/{f.path}")
            return None
        version.files.extend(reply.files)
        recorded = manifest(version, study, trial)
        if reply.onnx_error:
            recorded["onnx_error"] = reply.onnx_error
        text = json.dumps(recorded, indent=1, sort_keys=True)
        bucket = await self.bucket()
        digest, size = await artifacts.put_bytes(bucket, f"{prefix}/{MANIFEST}", text.encode())
        version.files.add(path=MANIFEST, size_bytes=size, sha256=digest)
        version.manifest_json = text
        version.state = V.MODEL_VERSION_STATE_READY
        self.registry.save(version)
        log.info("%s version %d registered from trial %s (%d files)", version.name, version.version, trial.id, len(version.files))

    async def _publish(self, trial: common_pb2.Trial, prefix: str) -> trainer_pb2.PublishModelResponse:
        workers: list[scheduler_pb2.Worker] = await self.workers()
        worker = next((w for w in workers if w.id == trial.trainer_id and w.address), None)
        if worker is None:
            raise LookupError(f"trainer {trial.trainer_id} (which holds the trial's model) is not live")
        stub = trainer_pb2_grpc.TrainerStub(self.trainer_channel(worker.address))
        return await stub.PublishModel(trainer_pb2.PublishModelRequest(
            study_id=trial.study_id, trial_id=trial.id, artifact_path=trial.artifact_path, object_prefix=prefix), timeout=600)

    def _fail(self, version: models_pb2.ModelVersion, error: str) -> None:
        version.state = V.MODEL_VERSION_STATE_FAILED
        version.error = error
        self.registry.save(version)
        log.warning("%s version %d not registered: %s", version.name, version.version, error)
