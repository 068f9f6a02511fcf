"""Who may do what on NATS: one user per mesh identity, each with an allow-list of subjects.

The NATS server requires a client certificate from the mesh's CA and maps it to the user named
by the certificate's subject (`verify_and_map`): no passwords to hand out, and a connection with
no certificate (anonymous) is refused. What the users may do follows the mesh's data flow:
- only the gateway publishes train jobs and stop requests, manages the streams and consumes the
  trial results; its replicas tell each other's watchers what changed;
- only trainers publish trial results and heartbeats, and consume only the jobs stream;
- the scheduler hears heartbeats, pings trainers (they may answer) and announces cluster changes;
- evaluators only announce their scoring capacity (their own heartbeats);
- every identity receives replies only on its own inbox prefix (`_INBOX.<identity>.`), so no
  one reads another's JetStream replies;
- the operator (whoever runs the stack) may do anything, as the owner of the NATS server.
A publish outside a user's list is dropped by the server (a "Permissions Violation" it logs and
reports to the client), so a forged event never reaches a stream.

The embedded stack writes this as the server's config (`server_config`); compose and the Helm
values carry the same users (tests/test_deploy_files.py checks they agree).
"""
from __future__ import annotations

from pathlib import Path

from openautoglm.common import artifacts, subjects
from openautoglm.common.tls import CA_CERT, NATS_IDENTITY, OPERATOR_IDENTITY, ORGANISATION, cert_path, key_path

JOBS = "AUTOGLM_JOBS"
EVENTS = "AUTOGLM_EVENTS"
# The artifact store's stream (common/artifacts.py): trainers read uploads and write the files
# of the trials they trained, through the Object Store's subjects and its stream's API.
OBJECTS = f"OBJ_{artifacts.BUCKET}"
OBJECT_SUBJECTS = f"$O.{artifacts.BUCKET}.>"
RESULT_SUBJECTS = [subjects.SUBJECT_PROGRESS, subjects.SUBJECT_TRAINED, subjects.SUBJECT_FAILED, subjects.SUBJECT_PRUNED]


def inbox_prefix(identity: str) -> str:
    """Where `identity`'s replies arrive (nats-py's `inbox_prefix`)."""
    return f"_INBOX.{identity}"


def _allow(publish: list[str], subscribe: list[str], responses: bool = False) -> dict:
    """`responses`: may reply to requests it receives (one reply each, to the asker's inbox)."""
    allowed: dict = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if responses:
        allowed["allow_responses"] = True
    return allowed


PERMISSIONS: dict[str, dict] = {
    "gateway": _allow(
        publish=[f"{subjects.SUBJECT_TRAIN}.*", subjects.SUBJECT_STOP, "$JS.API.>", f"$JS.ACK.{EVENTS}.>",
                 subjects.SUBJECT_STUDY_CHANGED, OBJECT_SUBJECTS, f"$JS.FC.{OBJECTS}.>"],
        subscribe=[f"{inbox_prefix('gateway')}.>", subjects.SUBJECT_CLUSTER, subjects.SUBJECT_STUDY_CHANGED],
    ),
    "trainer": _allow(
        publish=[*RESULT_SUBJECTS, subjects.SUBJECT_HEARTBEAT, "$JS.API.INFO", f"$JS.API.STREAM.INFO.{JOBS}",
                 f"$JS.API.CONSUMER.CREATE.{JOBS}.>", f"$JS.API.CONSUMER.DURABLE.CREATE.{JOBS}.>",
                 f"$JS.API.CONSUMER.INFO.{JOBS}.>", f"$JS.API.CONSUMER.MSG.NEXT.{JOBS}.>", f"$JS.ACK.{JOBS}.>",
                 OBJECT_SUBJECTS, "$JS.API.STREAM.NAMES", f"$JS.API.STREAM.INFO.{OBJECTS}", f"$JS.API.STREAM.MSG.GET.{OBJECTS}",
                 f"$JS.API.DIRECT.GET.{OBJECTS}.>", f"$JS.API.STREAM.PURGE.{OBJECTS}", f"$JS.API.CONSUMER.CREATE.{OBJECTS}.>",
                 f"$JS.API.CONSUMER.CREATE.{OBJECTS}", f"$JS.API.CONSUMER.DELETE.{OBJECTS}.>", f"$JS.FC.{OBJECTS}.>"],
        subscribe=[f"{inbox_prefix('trainer')}.>", subjects.SUBJECT_STOP, f"{subjects.SUBJECT_PING}.*"],
        responses=True,  # answers the scheduler's pings
    ),
    "gnn-scheduler": _allow(
        publish=[subjects.SUBJECT_CLUSTER, f"{subjects.SUBJECT_PING}.*"],
        subscribe=[f"{inbox_prefix('gnn-scheduler')}.>", subjects.SUBJECT_HEARTBEAT, subjects.SUBJECT_EVALUATOR_HEARTBEAT],
    ),
    "evaluator": _allow(publish=[subjects.SUBJECT_EVALUATOR_HEARTBEAT], subscribe=[f"{inbox_prefix('evaluator')}.>"]),
    OPERATOR_IDENTITY: _allow(publish=[">"], subscribe=[">"]),
}


def user_name(identity: str) -> str:
    """The NATS user a certificate maps to: its subject, RFC 4514 (as tls.py writes it)."""
    return f"CN={identity},O={ORGANISATION}"


def users() -> list[dict]:
    return [{"user": user_name(identity), "permissions": permissions} for identity, permissions in PERMISSIONS.items()]


def server_config(host: str, port: int, store_dir: Path, tls_dir: Path, http_port: int = 0) -> dict:
    """The nats-server configuration (JSON is valid NATS config): JetStream, mutual TLS that maps
    certificates to users, and the users above."""
    config: dict = {
        "listen": f"{host}:{port}",
        "jetstream": {"store_dir": str(store_dir)},
        "tls": {
            "cert_file": str(cert_path(tls_dir, NATS_IDENTITY)),
            "key_file": str(key_path(tls_dir, NATS_IDENTITY)),
            "ca_file": str(tls_dir / CA_CERT),
            "verify_and_map": True,
        },
        "authorization": {"users": users()},
    }
    if http_port:
        config["http_port"] = http_port
    return config
