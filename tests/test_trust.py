"""Services trust only services, and NATS only its users: real TLS handshakes and real NATS
permissions against the embedded stack (which creates its CA and certificates itself).

- The gateway's public port speaks TLS only, with the mesh CA's certificate.
- An internal service completes a handshake only with a client certificate from the mesh's CA,
  answers its own methods only to the identities allowed to call it, and a certificate issued
  for one service cannot pass for another.
- NATS refuses anonymous connections and certificates that map to no user, and a connection
  without the right to a subject cannot put a forged event on it: a forged "trained" result for
  a running trial never reaches the study.
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import subprocess
import sys

import grpc
import nats
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import spec_proto
from openautoglm.common import events, subjects
from openautoglm.common.server import channel
from openautoglm.common.tls import IDENTITIES, MeshIdentity, create_mesh_certificates
from openautoglm.v1 import (
    common_pb2,
    evaluator_pb2,
    evaluator_pb2_grpc,
    events_pb2,
    prompt_generator_pb2,
    prompt_generator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    studies_pb2,
    studies_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

INTERNAL = ("prompt-generator", "gnn-scheduler", "trainer", "evaluator")


async def _health_code(ch: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        return err.code()


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory) -> MeshIdentity:
    """An operator certificate from another CA: well-formed, but not the mesh's."""
    directory = tmp_path_factory.mktemp("foreign-tls")
    create_mesh_certificates(directory)
    return MeshIdentity(directory, "operator")


def test_the_gateway_handshakes_tls_with_the_mesh_certificate_and_refuses_plaintext(stack, foreign_ca):
    host, port = stack.host, stack.ports["gateway"]
    # A raw TLS handshake, as any client library would do it: verified against the mesh CA, for
    # the address the client dialled, offering HTTP/2.
    context = ssl.create_default_context(cafile=str(stack.tls_dir / "ca.crt"))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
        subject = dict(item[0] for item in tls.getpeercert()["subject"])
        assert subject["commonName"] == "gateway" and tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")

    async def run():
        async with grpc.aio.insecure_channel(stack.address("gateway")) as plain:
            plaintext = await _health_code(plain)
        distrusting = grpc.ssl_channel_credentials(root_certificates=(foreign_ca.directory / "ca.crt").read_bytes())
        async with channel(stack.address("gateway"), distrusting) as wrong_ca:
            other_ca = await _health_code(wrong_ca)
        async with channel(stack.address("gateway"), stack.gateway_credentials()) as right:
            trusted = await _health_code(right)
        return plaintext, other_ca, trusted

    assert asyncio.run(run()) == (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK)


@pytest.mark.parametrize("process", INTERNAL)
def test_an_internal_service_handshakes_only_with_a_mesh_client_certificate(stack, foreign_ca, process):
    address, service = stack.address(process), stack.service_of(process)
    ca = (stack.tls_dir / "ca.crt").read_bytes()

    async def run():
        results = {}
        async with grpc.aio.insecure_channel(address) as plain:
            results["plaintext"] = await _health_code(plain)
        async with channel(address, grpc.ssl_channel_credentials(root_certificates=ca), service) as no_cert:
            results["no client certificate"] = await _health_code(no_cert)
        foreign = grpc.ssl_channel_credentials(root_certificates=ca, private_key=(foreign_ca.directory / "operator.key").read_bytes(),
                                               certificate_chain=(foreign_ca.directory / "operator.crt").read_bytes())
        async with channel(address, foreign, service) as wrong_ca:
            results["another CA's certificate"] = await _health_code(wrong_ca)
        async with stack.service_channel(process) as operator:
            results["the operator's certificate"] = await _health_code(operator)
        return results

    assert asyncio.run(run()) == {
        "plaintext": grpc.StatusCode.UNAVAILABLE,
        "no client certificate": grpc.StatusCode.UNAVAILABLE,
        "another CA's certificate": grpc.StatusCode.UNAVAILABLE,
        "the operator's certificate": grpc.StatusCode.OK,
    }


def test_a_certificate_issued_for_one_service_cannot_pass_for_another(stack):
    """The client names the service it expects: the evaluator's certificate is not the trainer's."""
    async def run():
        async with channel(stack.address("evaluator"), stack.operator.channel_credentials(), "trainer") as impostor:
            return await _health_code(impostor)

    assert asyncio.run(run()) == grpc.StatusCode.UNAVAILABLE


def test_a_mesh_identity_calls_only_the_methods_its_role_allows(stack):
    """A trainer (say, a compromised one) may score predictions, and nothing else: it cannot ask
    the scheduler, the prompt-generator or another trainer for anything."""
    trainer = MeshIdentity(stack.tls_dir, "trainer")
    evaluator = MeshIdentity(stack.tls_dir, "evaluator")

    async def code(process, identity, call) -> grpc.StatusCode:
        async with stack.service_channel(process, identity) as ch:
            try:
                await call(ch)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.PERMISSION_DENIED:
                    assert "may not call this service" in (err.details() or "")
                return err.code()

    async def run():
        return {
            "trainer -> evaluator": await code("evaluator", trainer, lambda ch: evaluator_pb2_grpc.EvaluatorStub(ch).ListMetrics(
                evaluator_pb2.ListMetricsRequest(), timeout=10)),
            "trainer -> scheduler": await code("gnn-scheduler", trainer, lambda ch: scheduler_pb2_grpc.SchedulerStub(ch).ListWorkers(
                scheduler_pb2.ListWorkersRequest(), timeout=10)),
            "trainer -> prompt-generator": await code("prompt-generator", trainer, lambda ch: prompt_generator_pb2_grpc.PromptGeneratorStub(
                ch).Render(prompt_generator_pb2.RenderRequest(), timeout=10)),
            "trainer -> trainer": await code("trainer", trainer, lambda ch: trainer_pb2_grpc.TrainerStub(ch).GetCapacity(
                trainer_pb2.GetCapacityRequest(), timeout=10)),
            "evaluator -> trainer": await code("trainer", evaluator, lambda ch: trainer_pb2_grpc.TrainerStub(ch).Export(
                trainer_pb2.ExportRequest(), timeout=10)),
            "evaluator's health": await code("trainer", evaluator, _health_code_raising),
        }

    denied = grpc.StatusCode.PERMISSION_DENIED
    assert asyncio.run(run()) == {
        "trainer -> evaluator": grpc.StatusCode.OK,
        "trainer -> scheduler": denied,
        "trainer -> prompt-generator": denied,
        "trainer -> trainer": denied,
        "evaluator -> trainer": denied,
        "evaluator's health": grpc.StatusCode.OK,  # health answers any mesh certificate
    }


async def _health_code_raising(ch: grpc.aio.Channel) -> None:
    await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)


async def _connect_error(url: str, **options) -> str:
    """How NATS answers a connection attempt: '' if it was accepted, else the error it gave."""
    errors: list[str] = []

    async def record(err):
        errors.append(str(err) or type(err).__name__)

    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3,
                                error_cb=record, **options)
    except Exception as err:  # noqa: BLE001 - whatever the client raises is the answer under test
        return " ".join([*errors, str(err) or type(err).__name__])
    await nc.close()
    return ""


def test_nats_refuses_anonymous_connections_and_certificates_without_a_user(stack, foreign_ca):
    ca_only = ssl.create_default_context(cafile=str(stack.tls_dir / "ca.crt"))
    # A mesh certificate, but the prompt-generator has no NATS user (it needs none).
    prompt_generator = MeshIdentity(stack.tls_dir, "prompt-generator")

    async def run():
        return {
            "plaintext": await _connect_error(stack.nats_url),
            "TLS without a certificate": await _connect_error(stack.nats_url, tls=ca_only, tls_hostname="nats"),
            "another CA's certificate": await _connect_error(stack.nats_url, tls=foreign_ca.ssl_context(), tls_hostname="nats"),
            "the prompt-generator's certificate": await _connect_error(stack.nats_url, tls=prompt_generator.ssl_context(),
                                                                       tls_hostname="nats"),
            "the gateway's certificate": await _connect_error(stack.nats_url, tls=MeshIdentity(stack.tls_dir, "gateway").ssl_context(),
                                                              tls_hostname="nats", inbox_prefix="_INBOX.gateway"),
        }

    answers = asyncio.run(run())
    assert answers["the gateway's certificate"] == ""
    refused = {name: text for name, text in answers.items() if name != "the gateway's certificate"}
    assert all(refused.values()), refused
    assert "authorization violation" in answers["the prompt-generator's certificate"].lower()


def test_a_forged_result_from_a_connection_without_the_right_never_reaches_the_study(stack):
    """The scheduler's user (on the NATS network, no right to results) publishes a "trained"
    event scoring a running trial 1.0 with its own artifact path; a trainer's user tries to
    place a job and to read the results stream. The server drops all of it and says so; the study
    ends with its own results."""
    forged_artifact = "/forged/model"

    async def run():
        violations: list[str] = []

        async def record(err):
            violations.append(str(err))

        async with stack.gateway_channel() as gateway:
            stub = studies_pb2_grpc.StudiesStub(gateway)
            study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(
                spec=spec_proto(budget={"max_trials": 2})), timeout=30)).study
            running = None
            async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=240):
                running = next((t for t in update.study.trials if t.status == common_pb2.TRIAL_STATUS_TRAINING), None)
                if running is not None:
                    break
            assert running is not None

            scheduler = MeshIdentity(stack.tls_dir, "gnn-scheduler")
            forger = await nats.connect(stack.nats_url, tls=scheduler.ssl_context(), tls_hostname="nats",
                                        inbox_prefix="_INBOX.gnn-scheduler", error_cb=record, allow_reconnect=False)
            forged = events_pb2.TrialTrainedEvent(
                meta=subjects.new_meta("forger", study.id, running.id, f"trained-{running.id}"),
                trained=trainer_pb2.TrialTrained(study_id=study.id, trial_id=running.id, trainer_id="trainer-0",
                                                 artifact_path=forged_artifact, metrics={"accuracy": 1.0}))
            await forger.publish(subjects.SUBJECT_TRAINED, forged.SerializeToString(),
                                 headers={"Nats-Msg-Id": forged.meta.event_id})
            await forger.flush(timeout=5)
            with pytest.raises(nats.errors.Error):  # nor can it read the results: no consumer for it
                await forger.jetstream().pull_subscribe(subjects.SUBJECT_TRAINED, durable="forger", stream=events.EVENTS_STREAM_NAME)
            await forger.close()

            trainer = MeshIdentity(stack.tls_dir, "trainer")
            placer = await nats.connect(stack.nats_url, tls=trainer.ssl_context(), tls_hostname="nats",
                                        inbox_prefix="_INBOX.trainer", error_cb=record, allow_reconnect=False)
            await placer.publish(subjects.train_subject("trainer-0"), b"not a job")
            await placer.flush(timeout=5)
            for _ in range(50):  # the server's -ERR reaches the error callback asynchronously
                if any("autoglm.trial.train." in v for v in violations):
                    break
                await asyncio.sleep(0.1)
            await placer.close()

            final = None
            async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=240):
                final = update.study
        # What did reach the results stream for that trial: read as the operator.
        nc = await stack.nats_connect("test-audit")
        try:
            sub = await nc.jetstream().subscribe(subjects.SUBJECT_TRAINED, ordered_consumer=True)
            sources = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=2)
                except Exception:  # noqa: BLE001 - nats' timeout: the stream is read to its end
                    break
                event = events_pb2.TrialTrainedEvent.FromString(msg.data)
                if event.meta.trial_id == running.id:
                    sources.append(event.meta.source)
        finally:
            await events.close(nc)
        return violations, final, running.id, sources

    violations, final, trial_id, sources = asyncio.run(run())
    text = " | ".join(violations).lower()
    assert f'permissions violation for publish to "{subjects.SUBJECT_TRAINED}"' in text
    assert f'permissions violation for publish to "{subjects.train_subject("trainer-0")}"' in text
    assert f'permissions violation for publish to "$js.api.consumer.info.{events.EVENTS_STREAM_NAME.lower()}' in text
    assert final.state == common_pb2.STUDY_STATE_COMPLETED
    attacked = next(t for t in final.trials if t.id == trial_id)
    assert attacked.status == common_pb2.TRIAL_STATUS_SUCCEEDED and attacked.artifact_path != forged_artifact
    assert all(t.artifact_path != forged_artifact for t in final.trials)
    assert sources == ["trainer"]


def test_plaintext_only_on_loopback_and_missing_certificates_are_named(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAUTOGLM_")}
    env.update({"OPENAUTOGLM_DATA_DIR": str(tmp_path), "COLUMNS": "300"})

    def serve(*args):
        return subprocess.run([sys.executable, "-m", "openautoglm.cli", "serve", "evaluator", *args],
                              capture_output=True, text=True, env=env, timeout=60)

    exposed = serve("--plaintext", "--host", "0.0.0.0")
    assert exposed.returncode == 2
    assert "--plaintext (OPENAUTOGLM_PLAINTEXT) is allowed only on a loopback address, not on 0.0.0.0" in exposed.stderr
    no_certificates = serve("--host", "0.0.0.0")
    assert no_certificates.returncode == 2
    message = " ".join(no_certificates.stderr.split())
    assert f"missing TLS file(s) {tmp_path / 'tls' / 'ca.crt'}" in message and "openautoglm certs create" in message


def test_certs_create_keeps_keys_private_never_exports_the_ca_key_and_keeps_what_exists(tmp_path):
    tls, export = tmp_path / "tls", tmp_path / "compose"

    def create(*args):
        return subprocess.run([sys.executable, "-m", "openautoglm.cli", "certs", "create", str(tls), *args],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})

    first = create("--host", "gateway.example.com", "--export", str(export), "--container-readable")
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    for key in tls.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    before = {p.name: p.read_bytes() for p in tls.iterdir() if p.is_file()}
    assert create().returncode == 0 and "issued nothing" in " ".join(create().stdout.split())
    assert {p.name: p.read_bytes() for p in tls.iterdir() if p.is_file()} == before
    # One folder per container identity, each with its own key and the CA certificate only.
    assert sorted(p.name for p in export.iterdir()) == sorted(i for i in IDENTITIES if i != "operator")
    for folder in export.iterdir():
        assert sorted(p.name for p in folder.iterdir()) == sorted(["ca.crt", f"{folder.name}.crt", f"{folder.name}.key"])
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # The public name is on the gateway's certificate, and only there.
    gateway = x509.load_pem_x509_certificate((tls / "gateway.crt").read_bytes())
    trainer = x509.load_pem_x509_certificate((tls / "trainer.crt").read_bytes())
    names = gateway.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "gateway.example.com" in names and names[0] == "gateway"
    assert "gateway.example.com" not in trainer.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
