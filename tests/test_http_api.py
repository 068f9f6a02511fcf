"""The public API as JSON over HTTP (gateway/http_api.py), driven with plain HTTP against the
embedded stack's gateway: a whole study, its SSE watch, the keys and status codes of the gRPC API,
and the OpenAPI document generated from the protos."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.protobuf import json_format

from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.gateway import http_api
from openautoglm.v1 import keys_pb2
from helpers import create_key, small_spec, sse_messages

pytestmark = pytest.mark.timeout(300)


def _spec_json(**overrides) -> dict:
    """A spec as a JSON client writes it: the protobuf JSON mapping of the StudySpec message."""
    return json_format.MessageToDict(spec_to_proto(validate_dict(small_spec(**overrides))))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_whole_study_runs_over_plain_http_and_its_watch_streams_as_sse(stack):
    base, key = stack.http_url(), stack.api_key
    async with aiohttp.ClientSession(base, headers=_auth(key)) as http:
        async with http.post("/v1/studies", json={"spec": _spec_json(name="http-study"), "requestId": "http-1"}) as created:
            assert created.status == 200, await created.text()
            study = (await created.json())["study"]
        assert study["spec"]["name"] == "http-study" and study["id"]
        states, trials_seen = [], set()
        async with http.get(f"/v1/studies/{study['id']}:watch") as watch:
            assert watch.status == 200 and watch.headers["Content-Type"].startswith("text/event-stream")
            async for event, message in sse_messages(watch):
                assert event == "message"
                states.append(message["study"]["state"])
                trials_seen |= {t["id"] for t in message["study"].get("trials", [])}
        assert states[-1] == "STUDY_STATE_COMPLETED", states
        async with http.get(f"/v1/studies/{study['id']}") as got:
            done = (await got.json())["study"]
        assert len(done["trials"]) == 4 and {t["id"] for t in done["trials"]} == trials_seen
        best = next(t for t in done["trials"] if t["id"] == done["bestTrialId"])
        assert best["status"] == "TRIAL_STATUS_SUCCEEDED" and 0.0 < best["objectiveValue"] <= 1.0
        # The same request id is the same study (the gRPC API's idempotency, through HTTP).
        async with http.post("/v1/studies", json={"spec": _spec_json(name="http-study"), "requestId": "http-1"}) as again:
            assert (await again.json())["study"]["id"] == study["id"]
        async with http.get("/v1/studies", params={"pageSize": "50"}) as listed:
            assert study["id"] in {s["id"] for s in (await listed.json())["studies"]}


async def test_http_errors_are_the_grpc_statuses_mapped_as_google_maps_them(stack):
    base = stack.http_url()
    reader = await create_key(stack, "http-team", keys_pb2.ROLE_READER)
    async with aiohttp.ClientSession(base) as http:
        async with http.get("/v1/studies") as anonymous:
            body = await anonymous.json()
            assert anonymous.status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
        bad = _spec_json()
        bad["budget"] = {"maxTrials": -3}
        async with http.post("/v1/studies", json={"spec": bad}, headers=_auth(stack.api_key)) as refused:
            body = await refused.json()
            assert refused.status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
            assert "max_trials" in body["error"]["message"]  # names the field, as over gRPC
        async with http.post("/v1/studies", data=b"{not json", headers=_auth(stack.api_key)) as garbled:
            assert garbled.status == 400 and "not JSON" in (await garbled.json())["error"]["message"]
        async with http.get("/v1/studies/no-such-study", headers=_auth(stack.api_key)) as missing:
            assert missing.status == 404 and (await missing.json())["error"]["status"] == "NOT_FOUND"
        async with http.post("/v1/studies", json={"spec": _spec_json()}, headers=_auth(reader)) as denied:
            assert denied.status == 403 and (await denied.json())["error"]["status"] == "PERMISSION_DENIED"
        async with http.get("/v1/studies", params={"noSuchField": "1"}, headers=_auth(reader)) as unknown:
            assert unknown.status == 400 and "noSuchField" in (await unknown.json())["error"]["message"]
        async with http.delete("/v1/studies", headers=_auth(reader)) as wrong_verb:
            assert wrong_verb.status == 501
        async with http.get("/v1/nothing-here", headers=_auth(reader)) as nowhere:
            assert nowhere.status == 404
        # A tenant sees its own studies only, as over gRPC.
        async with http.get("/v1/studies", params={"pageSize": "100"}, headers=_auth(reader)) as theirs:
            assert (await theirs.json()).get("studies", []) == []


async def test_a_watch_of_a_study_the_caller_cannot_see_is_an_http_error_not_a_stream(stack):
    async with aiohttp.ClientSession(stack.http_url(), headers=_auth(stack.api_key)) as http:
        async with http.get("/v1/studies/no-such-study:watch") as watch:
            assert watch.status == 404 and watch.headers["Content-Type"].startswith("application/json")


async def test_the_openapi_document_describes_every_route_and_message(stack):
    async with aiohttp.ClientSession(stack.http_url()) as http:
        async with http.get("/openapi.json") as served:
            document = await served.json()
    assert document["openapi"].startswith("3.")
    for route in http_api.routes():
        operation = document["paths"][route.template][route.verb.lower()]
        assert operation["operationId"] == f"{route.method.containing_service.name}_{route.method.name}"
        assert {p["name"] for p in operation["parameters"] if p["in"] == "path"} == set(route.path_fields)
    schemas = document["components"]["schemas"]
    refs = {ref for ref in _refs(document)}
    assert refs and all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)
    spec = schemas["openautoglm.v1.StudySpec"]["properties"]
    assert spec["budget"] == {"$ref": "#/components/schemas/openautoglm.v1.Budget"}
    assert schemas["openautoglm.v1.Study"]["properties"]["state"]["enum"][0] == "STUDY_STATE_UNSPECIFIED"


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_grpc_status_has_the_http_status_of_googles_mapping():
    assert set(http_api.HTTP_STATUS) == set(grpc.StatusCode)
    assert http_api.error_body(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down") == {
        "error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}


def test_client_streaming_methods_have_no_route_and_every_other_public_method_has_one():
    routed = {(r.method.containing_service.name, r.method.name) for r in http_api.routes()}
    for service in http_api.PUBLIC_SERVICES:
        for method in service.methods:
            has_route = (service.name, method.name) in routed
            assert has_route != (method.client_streaming or method.name == "DownloadModel"), method.full_name


def test_the_vendored_http_annotations_match_the_installed_googleapis_protos():
    from google.api import annotations_pb2

    installed = Path(annotations_pb2.__file__).parent
    vendored = Path(__file__).resolve().parent.parent / "protos" / "google" / "api"
    for name in ("annotations.proto", "http.proto"):
        assert (vendored / name).read_bytes() == (installed / name).read_bytes(), name


async def test_a_quiet_watch_stays_open_through_keep_alives(monkeypatch):
    """A watch that has nothing to say for longer than the keep-alive gets keep-alive comments
    and still delivers what comes after: the keep-alive must not cancel the pending read (that
    cancelled the gRPC call, and the stream ended as if the study had finished). The gRPC side is
    a real server in this process, standing in for the gateway's own."""
    from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc

    monkeypatch.setattr(http_api, "SSE_KEEPALIVE_SECONDS", 0.2)

    class QuietStudies(studies_pb2_grpc.StudiesServicer):
        async def WatchStudy(self, request, context):
            yield studies_pb2.WatchStudyResponse(change="snapshot", study=common_pb2.Study(id=request.study_id))
            await asyncio.sleep(1.0)  # five keep-alives of silence
            yield studies_pb2.WatchStudyResponse(change="study.completed", study=common_pb2.Study(
                id=request.study_id, state=common_pb2.STUDY_STATE_COMPLETED))

    server = grpc.aio.server()
    studies_pb2_grpc.add_StudiesServicer_to_server(QuietStudies(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    api = http_api.HttpApi(f"127.0.0.1:{port}")
    http_port = await api.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{http_port}") as http:
            async with http.get("/v1/studies/st-quiet:watch") as watch:
                raw = (await watch.read()).decode()
        assert raw.count(": keep-alive") >= 2
        changes = [json.loads(line[6:])["change"] for line in raw.splitlines() if line.startswith("data: ")]
        assert changes == ["snapshot", "study.completed"]
    finally:
        await api.stop()
        await server.stop(None)
