"""Uploaded datasets and base models: the `Artifacts` API, their rows, and their collection.

An upload is spooled to a private temporary file while its digest and size are checked (the
client's name for it is a label, never a path), checked for its kind (JSONL objects; a tar of a
model directory), then stored in the artifact store under a fresh id (common/artifacts.py) and
recorded. Any refusal removes the temporary file, and nothing was stored: an upload is whole or
absent. Rows are per tenant; another tenant's artifact is "not found".

DeleteArtifact hides an artifact at once; `collect` (run by the leading gateway) removes the
bytes and the row of deleted artifacts that no running study refers to any more.
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp

from openautoglm.common import artifact_files
from openautoglm.common import artifacts as store
from openautoglm.common.spec.protos import spec_models
from openautoglm.gateway import auth
from openautoglm.gateway.database import artifacts as table
from openautoglm.gateway.paging import page_of, requested_page
from openautoglm.v1 import artifacts_pb2, artifacts_pb2_grpc, common_pb2

log = logging.getLogger(__name__)
HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME = 128
PREFIX = {artifacts_pb2.ARTIFACT_KIND_DATASET: artifact_files.DATASET_PREFIX, artifacts_pb2.ARTIFACT_KIND_MODEL: artifact_files.MODEL_PREFIX}
BucketOpener = Callable[[], Awaitable[Any]]


class UploadRefused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def study_artifacts(spec: common_pb2.StudySpec) -> set[str]:
    """The artifact ids a study's spec names."""
    return {a for a in (spec.dataset.artifact, *(m.artifact for m in spec_models(spec))) if a}


class ArtifactRecords:
    """The artifacts table (database.py) and the questions asked of it."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def insert(self, artifact: artifacts_pb2.Artifact, created: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.insert().values(
                id=artifact.id, tenant=artifact.tenant, kind=artifact.kind, name=artifact.name,
                sha256=artifact.sha256, size=artifact.size_bytes, created=created))

    def get(self, artifact_id: str, tenant: str | None = None, deleted: bool = False) -> artifacts_pb2.Artifact | None:
        query = table.select().where(table.c.id == artifact_id)
        if tenant is not None:
            query = query.where(table.c.tenant == tenant)
        if not deleted:
            query = query.where(table.c.deleted.is_(None))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _artifact(row) if row is not None else None

    def page(self, tenant: str, limit: int, before: float | None) -> list[tuple[float, artifacts_pb2.Artifact]]:
        query = table.select().where(table.c.tenant == tenant, table.c.deleted.is_(None))
        if before is not None:
            query = query.where(table.c.created < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(table.c.created.desc()).limit(limit)).all()
        return [(row.created, _artifact(row)) for row in rows]

    def mark_deleted(self, artifact_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == artifact_id, table.c.deleted.is_(None)).values(deleted=time.time()))

    def deleted(self) -> list[artifacts_pb2.Artifact]:
        with self.engine.connect() as conn:
            return [_artifact(row) for row in conn.execute(table.select().where(table.c.deleted.is_not(None)))]

    def remove(self, artifact_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.delete().where(table.c.id == artifact_id))


def _artifact(row) -> artifacts_pb2.Artifact:
    return artifacts_pb2.Artifact(id=row.id, kind=row.kind, name=row.name, sha256=row.sha256, size_bytes=row.size,
                                  created_at=_stamp(row.created), tenant=row.tenant, deleted=row.deleted is not None)


def check_header(header: artifacts_pb2.UploadArtifactHeader, max_bytes: int) -> None:
    """UploadRefused naming the header field that is wrong."""
    bad = grpc.StatusCode.INVALID_ARGUMENT
    if header.kind not in PREFIX:
        raise UploadRefused(bad, "header.kind: ARTIFACT_KIND_DATASET or ARTIFACT_KIND_MODEL")
    if len(header.name) > MAX_NAME or not header.name.isprintable():
        raise UploadRefused(bad, f"header.name: printable, at most {MAX_NAME} characters")
    if not HEX_SHA256.match(header.sha256):
        raise UploadRefused(bad, "header.sha256: 64 lower-case hex digits (the SHA-256 of the bytes)")
    if header.size_bytes <= 0:
        raise UploadRefused(bad, "header.size_bytes: must be > 0")
    if header.size_bytes > max_bytes:
        raise UploadRefused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"header.size_bytes: {header.size_bytes} bytes is over the upload limit of {max_bytes} bytes")


class ArtifactsServicer(artifacts_pb2_grpc.ArtifactsServicer):
    def __init__(self, records: ArtifactRecords, bucket: BucketOpener, spool_dir: Path, max_bytes: int,
                 studies_referring: Callable[[str], list[str]]):
        self.records = records
        self.bucket = bucket
        self.spool_dir = spool_dir
        for leftover in spool_dir.glob("upload-*"):  # a gateway killed mid-upload
            leftover.unlink(missing_ok=True)
        self.max_bytes = max_bytes
        # The running studies whose spec names an artifact (for Get's `referenced_by`).
        self.studies_referring = studies_referring

    async def UploadArtifact(self, request_iterator, context):
        spooled = self.spool_dir / f"upload-{secrets.token_hex(8)}"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        try:
            artifact = await self._receive(request_iterator, spooled)
            artifact.id = artifact_files.new_artifact_id(PREFIX[artifact.kind])
            artifact.tenant = auth.current().tenant
            try:
                await store.put_file(await self.bucket(), artifact.id, spooled)
            except Exception as err:  # NATS away or refusing: nothing was recorded
                log.warning("upload not stored: %r", err)
                raise UploadRefused(grpc.StatusCode.UNAVAILABLE, "the artifact store is not available; retry") from None
            created = time.time()
            self.records.insert(artifact, created)
            artifact.created_at.CopyFrom(_stamp(created))
            log.info("artifact %s stored (%d bytes) for tenant %s", artifact.id, artifact.size_bytes, artifact.tenant)
            return artifacts_pb2.UploadArtifactResponse(artifact=artifact)
        except UploadRefused as err:
            await context.abort(err.code, str(err))
        finally:
            spooled.unlink(missing_ok=True)

    async def _receive(self, requests, spooled: Path) -> artifacts_pb2.Artifact:
        """The upload's bytes into `spooled`, checked against its header; the artifact (no id yet)."""
        header = None
        digest, size = hashlib.sha256(), 0
        with spooled.open("wb") as out:
            async for request in requests:
                if header is None:
                    if not request.HasField("header"):
                        raise UploadRefused(grpc.StatusCode.INVALID_ARGUMENT, "header: the first message must be the header")
                    header = request.header
                    check_header(header, self.max_bytes)
                    continue
                if request.HasField("header"):
                    raise UploadRefused(grpc.StatusCode.INVALID_ARGUMENT, "header: only the first message may be a header")
                size += len(request.chunk)
                if size > header.size_bytes:
                    raise UploadRefused(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"chunk: more bytes than header.size_bytes ({header.size_bytes})")
                digest.update(request.chunk)
                out.write(request.chunk)
        if header is None:
            raise UploadRefused(grpc.StatusCode.INVALID_ARGUMENT, "header: required")
        if size != header.size_bytes:
            raise UploadRefused(grpc.StatusCode.INVALID_ARGUMENT, f"header.size_bytes: {header.size_bytes} announced, {size} sent")
        if digest.hexdigest() != header.sha256:
            raise UploadRefused(grpc.StatusCode.INVALID_ARGUMENT,
                                f"header.sha256: the bytes sent hash to {digest.hexdigest()}, not {header.sha256}")
        try:
            if header.kind == artifacts_pb2.ARTIFACT_KIND_DATASET:
                artifact_files.check_jsonl(spooled)
            else:
                artifact_files.check_model_archive(spooled, self.max_bytes * 4)
        except artifact_files.ArtifactError as err:
            raise UploadRefused(grpc.StatusCode.INVALID_ARGUMENT, f"chunk: {err}") from None
        return artifacts_pb2.Artifact(kind=header.kind, name=header.name, sha256=header.sha256, size_bytes=size)

    async def _own(self, artifact_id: str, context) -> artifacts_pb2.Artifact:
        if not artifact_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "artifact_id: required")
        artifact = self.records.get(artifact_id, auth.current().tenant)
        if artifact is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"artifact_id: no artifact {artifact_id!r}")
        assert artifact is not None
        artifact.referenced_by.extend(self.studies_referring(artifact.id))
        return artifact

    async def GetArtifact(self, request, context):
        return artifacts_pb2.GetArtifactResponse(artifact=await self._own(request.artifact_id, context))

    async def ListArtifacts(self, request, context):
        size, before = await requested_page(request, context, "ListArtifacts")
        page, token = page_of(self.records.page(auth.current().tenant, size + 1, before), size, lambda row: row[0])
        return artifacts_pb2.ListArtifactsResponse(artifacts=[a for _, a in page], next_page_token=token)

    async def DeleteArtifact(self, request, context):
        artifact = await self._own(request.artifact_id, context)
        self.records.mark_deleted(artifact.id)
        artifact.deleted = True
        log.info("artifact %s deleted by %s (%d running studies still use it)", artifact.id, auth.current().key_id,
                 len(artifact.referenced_by))
        return artifacts_pb2.DeleteArtifactResponse(artifact=artifact)


async def collect(records: ArtifactRecords, bucket: Any, running_references: set[str]) -> list[str]:
    """Remove the bytes and rows of deleted artifacts no running study refers to; their ids."""
    removed = []
    for artifact in records.deleted():
        if artifact.id in running_references:
            continue
        await store.delete_object(bucket, artifact.id)
        records.remove(artifact.id)
        removed.append(artifact.id)
    if removed:
        log.info("collected %d deleted artifacts: %s", len(removed), ", ".join(removed))
    return removed


def running_references(specs: list[common_pb2.StudySpec]) -> set[str]:
    return set().union(*(study_artifacts(spec) for spec in specs)) if specs else set()


__all__ = ["ArtifactRecords", "ArtifactsServicer", "collect", "running_references", "study_artifacts"]
