"""Callers have identities: every public method needs `authorization: Bearer <key>`; keys map to
a tenant and a role; another tenant's studies do not exist for a key; keys are created, listed
and revoked through the Keys API (and the CLI), revocation taking effect on the next call.
Real gateway over real sockets (the embedded stack, whose first start wrote an admin key)."""
from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

import grpc
import pytest

from helpers import spec_proto
from openautoglm.common.credentials import gateway_channel
from openautoglm.common.server import channel
from openautoglm.v1 import keys_pb2, keys_pb2_grpc, studies_pb2, studies_pb2_grpc


async def _new_key(stack, tenant: str, role: int) -> str:
    async with stack.gateway_channel() as channel:
        reply = await keys_pb2_grpc.KeysStub(channel).CreateKey(
            keys_pb2.CreateKeyRequest(tenant=tenant, role=role, name=f"test {tenant}"), timeout=10)
    assert reply.secret.startswith("oag_") and reply.key.id.startswith("key-")
    return reply.secret


async def _code(call) -> grpc.StatusCode:
    try:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                break
        else:
            await result
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_up_wrote_an_admin_key_only_its_owner_can_read(stack):
    key_file = stack.data_dir / "api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == stack.api_key and stack.api_key.startswith("oag_")


def test_no_key_or_a_wrong_key_is_unauthenticated_on_every_public_method(stack):
    async def probe(channel) -> dict[str, grpc.StatusCode]:
        studies, keys = studies_pb2_grpc.StudiesStub(channel), keys_pb2_grpc.KeysStub(channel)
        calls = {
            "CreateStudy": lambda: studies.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_proto()), timeout=10),
            "GetStudy": lambda: studies.GetStudy(studies_pb2.GetStudyRequest(study_id="st-x"), timeout=10),
            "ListStudies": lambda: studies.ListStudies(studies_pb2.ListStudiesRequest(), timeout=10),
            "WatchStudy": lambda: studies.WatchStudy(studies_pb2.WatchStudyRequest(study_id="st-x"), timeout=10),
            "CancelStudy": lambda: studies.CancelStudy(studies_pb2.CancelStudyRequest(study_id="st-x"), timeout=10),
            "ExportBest": lambda: studies.ExportBest(studies_pb2.ExportBestRequest(study_id="st-x"), timeout=10),
            "CreateKey": lambda: keys.CreateKey(keys_pb2.CreateKeyRequest(tenant="x", role=3), timeout=10),
            "ListKeys": lambda: keys.ListKeys(keys_pb2.ListKeysRequest(), timeout=10),
            "RevokeKey": lambda: keys.RevokeKey(keys_pb2.RevokeKeyRequest(key_id="key-x"), timeout=10),
        }
        return {name: await _code(call) for name, call in calls.items()}

    async def run():
        async with channel(stack.address("gateway"), stack.gateway_credentials()) as bare:
            without = await probe(bare)
        async with gateway_channel(stack.address("gateway"), "oag_not-a-key", stack.gateway_credentials()) as wrong:
            with_wrong = await probe(wrong)
        return without, with_wrong

    without, with_wrong = asyncio.run(run())
    assert set(without.values()) == {grpc.StatusCode.UNAUTHENTICATED}, without
    assert set(with_wrong.values()) == {grpc.StatusCode.UNAUTHENTICATED}, with_wrong


def test_roles_and_tenants(stack):
    async def run():
        reader_a = await _new_key(stack, "team-a", keys_pb2.ROLE_READER)
        member_a = await _new_key(stack, "team-a", keys_pb2.ROLE_MEMBER)
        member_b = await _new_key(stack, "team-b", keys_pb2.ROLE_MEMBER)
        async with stack.gateway_channel(member_a) as a, stack.gateway_channel(reader_a) as ra, \
                stack.gateway_channel(member_b) as b:
            sa, sra, sb = (studies_pb2_grpc.StudiesStub(c) for c in (a, ra, b))
            study = (await sa.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_proto(budget={"max_trials": 1}),
                                                                          request_id="same-id"), timeout=30)).study
            assert study.tenant == "team-a"
            # A reader reads but may not create or cancel.
            assert (await sra.GetStudy(studies_pb2.GetStudyRequest(study_id=study.id), timeout=10)).study.id == study.id
            assert await _code(lambda: sra.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_proto()), timeout=10)) \
                == grpc.StatusCode.PERMISSION_DENIED
            assert await _code(lambda: sra.CancelStudy(studies_pb2.CancelStudyRequest(study_id=study.id), timeout=10)) \
                == grpc.StatusCode.PERMISSION_DENIED
            # A member may not manage keys.
            assert await _code(lambda: keys_pb2_grpc.KeysStub(a).ListKeys(keys_pb2.ListKeysRequest(), timeout=10)) \
                == grpc.StatusCode.PERMISSION_DENIED
            # Another tenant: the study does not exist, whatever the method.
            for call in (lambda: sb.GetStudy(studies_pb2.GetStudyRequest(study_id=study.id), timeout=10),
                         lambda: sb.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=10),
                         lambda: sb.CancelStudy(studies_pb2.CancelStudyRequest(study_id=study.id), timeout=10),
                         lambda: sb.ExportBest(studies_pb2.ExportBestRequest(study_id=study.id), timeout=10)):
                assert await _code(call) == grpc.StatusCode.NOT_FOUND
            warm = spec_proto(warm_start={"from_study_id": study.id})
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await sb.CreateStudy(studies_pb2.CreateStudyRequest(spec=warm), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no study" in caught.value.details()
            listed_b = (await sb.ListStudies(studies_pb2.ListStudiesRequest(page_size=500), timeout=10)).studies
            assert study.id not in {s.id for s in listed_b}
            listed_a = (await sa.ListStudies(studies_pb2.ListStudiesRequest(page_size=500), timeout=10)).studies
            assert study.id in {s.id for s in listed_a} and {s.tenant for s in listed_a} == {"team-a"}
            # The same request id from another tenant is another study, not team-a's.
            other = (await sb.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_proto(budget={"max_trials": 1}),
                                                                          request_id="same-id"), timeout=30)).study
            assert other.id != study.id and other.tenant == "team-b"
            for stub, sid in ((sa, study.id), (sb, other.id)):
                await stub.CancelStudy(studies_pb2.CancelStudyRequest(study_id=sid), timeout=10)

    asyncio.run(run())


def test_revocation_takes_effect_on_the_next_call(stack):
    async def run():
        secret = await _new_key(stack, "team-r", keys_pb2.ROLE_READER)
        async with stack.gateway_channel(secret) as channel:
            stub = studies_pb2_grpc.StudiesStub(channel)
            await stub.ListStudies(studies_pb2.ListStudiesRequest(), timeout=10)
            async with stack.gateway_channel() as admin:
                keys = keys_pb2_grpc.KeysStub(admin)
                listed = (await keys.ListKeys(keys_pb2.ListKeysRequest(), timeout=10)).keys
                key_id = next(k.id for k in listed if k.tenant == "team-r")
                revoked = (await keys.RevokeKey(keys_pb2.RevokeKeyRequest(key_id=key_id), timeout=10)).key
                assert revoked.HasField("revoked_at")
            assert await _code(lambda: stub.ListStudies(studies_pb2.ListStudiesRequest(), timeout=10)) \
                == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(run())


def test_bad_key_requests_name_the_field(stack):
    async def run():
        async with stack.gateway_channel() as channel:
            keys = keys_pb2_grpc.KeysStub(channel)
            for request, field in ((keys_pb2.CreateKeyRequest(tenant="", role=2), "tenant"),
                                   (keys_pb2.CreateKeyRequest(tenant="a/b", role=2), "tenant"),
                                   (keys_pb2.CreateKeyRequest(tenant="ok", role=0), "role"),
                                   (keys_pb2.CreateKeyRequest(tenant="ok", role=9), "role")):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await keys.CreateKey(request, timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details().startswith(field + ":")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await keys.RevokeKey(keys_pb2.RevokeKeyRequest(key_id="key-nope"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(run())


def test_the_cli_manages_keys_with_the_key_from_the_environment(stack):
    env = {**os.environ, "OPENAUTOGLM_API_KEY": stack.api_key, "OPENAUTOGLM_GATEWAY": stack.address("gateway"),
           "OPENAUTOGLM_CA_CERT": str(stack.tls_dir / "ca.crt"), "COLUMNS": "200"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "openautoglm.cli", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    created = cli("keys", "create", "--tenant", "team-cli", "--role", "reader", "--name", "from-cli")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("oag_")
    listed = cli("keys", "list")
    assert listed.returncode == 0 and "team-cli" in listed.stdout and secret not in listed.stdout
    key_id = next(line.split()[1] for line in listed.stdout.splitlines() if "team-cli" in line)
    assert cli("keys", "revoke", key_id).returncode == 0
    refused = subprocess.run([sys.executable, "-m", "openautoglm.cli", "study", "list"], capture_output=True, text=True,
                             timeout=60, env={**env, "OPENAUTOGLM_API_KEY": secret})
    assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr
