"""Artifacts through the API: a dataset uploaded over gRPC (client streaming, chunked, with its
sha256) is stored in the artifact store (the stack's real NATS JetStream Object Store), a
study names it by id and its trainer fetches it; refused uploads leave nothing behind; an
artifact is listed, scoped to its tenant, deleted, and collected once no study needs it."""
from __future__ import annotations

import hashlib
import json

import grpc
import pytest

from helpers import create_key, run_study, small_spec
from openautoglm import Client, ClientError
from openautoglm.common import artifacts
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.v1 import artifacts_pb2, artifacts_pb2_grpc, common_pb2


def _dataset(path, rows: int = 60):
    labels = ["positive", "negative"]
    with path.open("w") as out:
        for i in range(rows):
            label = labels[i % 2]
            word = "great fine lovely" if label == "positive" else "awful bad dull"
            out.write(json.dumps({"text": f"item {i} was {word}", "label": label}) + "\n")
    return path


async def _objects(stack) -> set[str]:
    """The names of the objects in the artifact store now (deleted ones left out)."""
    from nats.js.errors import NotFoundError

    nc = await stack.nats_connect("test-objects")
    try:
        bucket = await artifacts.open_bucket(nc.jetstream())
        try:
            return {info.name for info in await bucket.list(ignore_deletes=True)}
        except NotFoundError:
            return set()
    finally:
        await nc.close()


async def test_an_uploaded_dataset_trains_a_study(stack, tmp_path):
    data = _dataset(tmp_path / "reviews.jsonl")
    async with Client(channel=stack.gateway_channel()) as client:
        artifact = await client.upload_dataset(data)
        assert artifact.id.startswith("ds-") and artifact.sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
        assert artifact.size_bytes == data.stat().st_size and artifact.tenant == "default"
        assert artifact.id in {a.id for a in await client.list_artifacts()}
    spec = small_spec(dataset={"artifact": artifact.id}, budget={"max_trials": 2})
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, [t.error for t in study.trials]
    assert all(t.status == common_pb2.TRIAL_STATUS_SUCCEEDED for t in study.trials)
    # The trainer kept it by digest.
    assert (stack.data_dir / "trainer" / "cache" / "blobs" / f"{artifact.sha256}.jsonl").is_file()


async def _upload(stack, header: artifacts_pb2.UploadArtifactHeader, chunks: list[bytes]):
    async def parts():
        yield artifacts_pb2.UploadArtifactRequest(header=header)
        for chunk in chunks:
            yield artifacts_pb2.UploadArtifactRequest(chunk=chunk)

    async with stack.gateway_channel() as channel:
        return await artifacts_pb2_grpc.ArtifactsStub(channel).UploadArtifact(parts(), timeout=30)


@pytest.mark.parametrize("case", ["wrong digest", "short", "long", "not jsonl", "oversized", "not a model archive"])
async def test_a_refused_upload_leaves_nothing_behind(stack, case):
    body = b'{"text": "a", "label": "b"}\n' * 100
    kind = artifacts_pb2.ARTIFACT_KIND_DATASET
    digest, size, chunks = hashlib.sha256(body).hexdigest(), len(body), [body[:1000], body[1000:]]
    expected = (grpc.StatusCode.INVALID_ARGUMENT, "")
    if case == "wrong digest":
        digest = hashlib.sha256(b"other").hexdigest()
        expected = (grpc.StatusCode.INVALID_ARGUMENT, "header.sha256")
    elif case == "short":
        chunks = chunks[:1]
        expected = (grpc.StatusCode.INVALID_ARGUMENT, "header.size_bytes")
    elif case == "long":
        chunks = chunks + [b"more"]
        expected = (grpc.StatusCode.INVALID_ARGUMENT, "chunk: more bytes than header.size_bytes")
    elif case == "not jsonl":
        body = b'{"text": "a"}\n[1, 2]\n'
        digest, size, chunks = hashlib.sha256(body).hexdigest(), len(body), [body]
        expected = (grpc.StatusCode.INVALID_ARGUMENT, "dataset line 2: not a JSON object")
    elif case == "oversized":
        size = 3 * 1024**3
        expected = (grpc.StatusCode.RESOURCE_EXHAUSTED, "header.size_bytes")
    else:
        kind = artifacts_pb2.ARTIFACT_KIND_MODEL
        expected = (grpc.StatusCode.INVALID_ARGUMENT, "not an uncompressed tar archive")
    before = await _objects(stack)
    async with stack.gateway_channel() as channel:
        listed = {a.id for a in (await artifacts_pb2_grpc.ArtifactsStub(channel).ListArtifacts(
            artifacts_pb2.ListArtifactsRequest(page_size=500))).artifacts}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _upload(stack, artifacts_pb2.UploadArtifactHeader(kind=kind, name="x", sha256=digest, size_bytes=size), chunks)
    assert refused.value.code() == expected[0] and expected[1] in refused.value.details(), refused.value.details()
    assert await _objects(stack) == before
    async with stack.gateway_channel() as channel:
        after = {a.id for a in (await artifacts_pb2_grpc.ArtifactsStub(channel).ListArtifacts(
            artifacts_pb2.ListArtifactsRequest(page_size=500))).artifacts}
    assert after == listed
    assert not list((stack.data_dir / "gateway" / "uploads").glob("upload-*"))


async def test_a_model_archive_with_a_link_or_an_escaping_name_is_refused(stack, tmp_path):
    import tarfile

    for name, member in (("link", "config.json"), ("escape", "../config.json")):
        archive = tmp_path / f"{name}.tar"
        with tarfile.open(archive, "w:") as tar:
            info = tarfile.TarInfo(member)
            if name == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                payload = b"{}"
                info.size = len(payload)
                import io
                tar.addfile(info, io.BytesIO(payload))
        body = archive.read_bytes()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _upload(stack, artifacts_pb2.UploadArtifactHeader(
                kind=artifacts_pb2.ARTIFACT_KIND_MODEL, name=name, sha256=hashlib.sha256(body).hexdigest(),
                size_bytes=len(body)), [body])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "archive member" in refused.value.details()


async def test_artifacts_are_per_tenant_and_deleted_ones_are_collected(stack, tmp_path):

    data = _dataset(tmp_path / "mine.jsonl", rows=20)
    async with Client(channel=stack.gateway_channel()) as client:
        artifact = await client.upload_dataset(data, name="mine")
    other_key = await create_key(stack, "other-tenant")
    async with Client(channel=stack.gateway_channel(other_key)) as other:
        assert artifact.id not in {a.id for a in await other.list_artifacts()}
        with pytest.raises(ClientError, match="NOT_FOUND"):
            await other.delete_artifact(artifact.id)
        spec = small_spec(dataset={"artifact": artifact.id})
        with pytest.raises(ClientError, match="spec.dataset.artifact: no artifact"):
            await other.submit(spec)
    assert artifact.id in await _objects(stack)
    async with Client(channel=stack.gateway_channel()) as client:
        deleted = await client.delete_artifact(artifact.id)
        assert deleted.deleted and not deleted.referenced_by
        assert artifact.id not in {a.id for a in await client.list_artifacts()}
        with pytest.raises(ClientError, match="spec.dataset.artifact: no artifact"):
            await client.submit(small_spec(dataset={"artifact": artifact.id}))
    from openautoglm.gateway.artifacts import ArtifactRecords, collect
    from openautoglm.gateway.database import open_database

    # The leader collects every 30 s; run one collection now, the way it does.
    records = ArtifactRecords(open_database(f"sqlite:///{stack.data_dir / 'gateway' / 'studies.sqlite'}"))
    nc = await stack.nats_connect("test-collect")
    try:
        removed = await collect(records, await artifacts.open_bucket(nc.jetstream()), set())
    finally:
        await nc.close()
    assert artifact.id in removed
    assert artifact.id not in await _objects(stack)
    assert records.get(artifact.id, deleted=True) is None
