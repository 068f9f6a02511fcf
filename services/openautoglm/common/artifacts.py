"""The artifact store: uploaded datasets and base models, and registered model files, as objects
in one NATS JetStream Object Store bucket (replicated like any stream in a NATS cluster).

Bulk data travels by reference (an id, a digest), never inside events or through the study
state. Everything here is shared by the gateway (which writes uploads and reads downloads) and
the trainers (which fetch by id, keep what they fetched by digest, and store the files of the
trials they trained); no gRPC here.

What the bytes must be (ids, JSONL, model archives) is artifact_files.py, which needs no NATS.
"""
from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from openautoglm.common.artifact_files import ArtifactError, unpack_model_archive

BUCKET = "autoglm-artifacts"
# Bytes per object-store chunk (NATS messages stay well under the server's 1 MiB default).
CHUNK_BYTES = 128 * 1024
# nats-py's ObjectStore (untyped): what the functions below take as `bucket`.
Bucket = Any


class ArtifactMissing(ArtifactError):
    """No such object in the store (deleted, or never stored)."""


def hex_digest(object_digest: str) -> str:
    """The object store's "SHA-256=<base64url>" digest as hex."""
    encoded = object_digest.split("=", 1)[1] if "=" in object_digest[:8] else object_digest
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()


async def open_bucket(js: Any, create: bool = False, replicas: int = 1) -> Bucket:
    """The artifact bucket; `create` makes it when missing (the gateway does, at start)."""
    from nats.js.api import ObjectStoreConfig
    from nats.js.errors import NotFoundError

    try:
        return await js.object_store(BUCKET)
    except NotFoundError:
        if not create:
            raise
        return await js.create_object_store(BUCKET, config=ObjectStoreConfig(
            bucket=BUCKET, description="Open-AutoGLM datasets, base models and registered model files",
            replicas=replicas))


async def put_file(bucket: Bucket, name: str, path: Path) -> tuple[str, int]:
    """Store `path` as object `name`; (hex sha256, size)."""
    from nats.js.api import ObjectMeta, ObjectMetaOptions

    with path.open("rb") as handle:
        info = await bucket.put(name, handle, meta=ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES)))
    return hex_digest(info.digest), info.size


async def put_bytes(bucket: Bucket, name: str, data: bytes) -> tuple[str, int]:
    """Store `data` as object `name`; (hex sha256, size)."""
    from nats.js.api import ObjectMeta, ObjectMetaOptions

    info = await bucket.put(name, data, meta=ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES)))
    return hex_digest(info.digest), info.size


async def object_digest(bucket: Bucket, name: str) -> tuple[str, int]:
    """(hex sha256, size) of a stored object; ArtifactMissing when there is none."""
    from nats.js.errors import NotFoundError, ObjectNotFoundError

    try:
        info = await bucket.get_info(name)
    except (ObjectNotFoundError, NotFoundError):
        raise ArtifactMissing(f"no object {name!r} in the artifact store") from None
    return hex_digest(info.digest), info.size


async def fetch_file(bucket: Bucket, name: str, target: Path) -> str:
    """Write object `name` to `target` (through a temporary file beside it, renamed when whole);
    the store checks the digest while it streams. Returns the hex sha256."""
    digest, _ = await object_digest(bucket, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part-{secrets.token_hex(4)}")
    try:
        with partial.open("wb") as handle:
            await bucket.get(name, writeinto=handle)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return digest


async def delete_object(bucket: Bucket, name: str) -> None:
    """Remove an object and its chunks (nothing to do when it is already gone)."""
    from nats.js.errors import NotFoundError, ObjectNotFoundError

    try:
        await bucket.delete(name)
    except (ObjectNotFoundError, NotFoundError):
        pass


class ArtifactCache:
    """A trainer's copies of artifacts, kept by digest: a dataset or model fetched once serves
    every later trial (and a new artifact with the same bytes too). `root` is one of the
    trainer's read roots."""

    def __init__(self, root: Path, bucket_opener: Callable[[], Awaitable[Bucket]], max_unpacked_bytes: int):
        self.root = root
        self._open_bucket = bucket_opener
        self.max_unpacked_bytes = max_unpacked_bytes
        self._locks: dict[str, asyncio.Lock] = {}

    async def dataset(self, artifact_id: str) -> Path:
        """The dataset file of `artifact_id`, fetched when this trainer lacks its digest."""
        return await self._blob(artifact_id, ".jsonl")

    async def model_dir(self, artifact_id: str) -> Path:
        """The unpacked model directory of `artifact_id`."""
        archive = await self._blob(artifact_id, ".tar")
        target = self.root / "models" / archive.stem
        if not target.is_dir():
            await asyncio.to_thread(unpack_model_archive, archive, target, self.max_unpacked_bytes)
        return target

    async def file(self, name: str, sha256: str, suffix: str = "") -> Path:
        """Object `name`, whose digest the caller knows (a registered model file)."""
        return await self._blob(name, suffix, sha256)

    async def _blob(self, name: str, suffix: str, sha256: str = "") -> Path:
        bucket = await self._open_bucket()
        digest = sha256 or (await object_digest(bucket, name))[0]
        target = self.root / "blobs" / f"{digest}{suffix}"
        async with self._locks.setdefault(digest, asyncio.Lock()):
            if not target.is_file():
                got = await fetch_file(bucket, name, target)
                if got != digest:
                    target.unlink(missing_ok=True)
                    raise ArtifactError(f"object {name!r}: digest {got} where {digest} was expected")
        return target
