"""The NATS subjects of the mesh and the metadata every event carries (no NATS client here).

Subjects and the event messages on them are listed in protos/openautoglm/v1/events.proto. The
gRPC-free cores name subjects and build event metadata from here; `events.py` moves them.
"""
from __future__ import annotations

import re
import uuid
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from openautoglm.v1 import events_pb2


class BusUnavailable(Exception):
    """NATS could not take a publish now (the server restarting, the connection re-forming):
    nothing was lost, try again later. `events.NatsBus` raises it for any NATS error."""


class Event(Protocol):
    """An event message of events.proto: every one starts with an EventMeta."""

    @property
    def meta(self) -> events_pb2.EventMeta: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


SUBJECT_TRAIN = "autoglm.trial.train"  # + ".<worker id>": the scheduler places each job on one trainer
SUBJECT_PROGRESS = "autoglm.trial.progress"
SUBJECT_TRAINED = "autoglm.trial.trained"
SUBJECT_FAILED = "autoglm.trial.failed"
SUBJECT_PRUNED = "autoglm.trial.pruned"
SUBJECT_STOP = "autoglm.trial.stop"  # core NATS: only the trainer running the trial acts on it
SUBJECT_HEARTBEAT = "autoglm.trainer.heartbeat"  # core NATS: a missed beat needs no replay
# Core NATS: each evaluator's scoring capacity (the scheduler's evaluator pool), same message.
SUBJECT_EVALUATOR_HEARTBEAT = "autoglm.evaluator.heartbeat"
# The worker pools a heartbeat announces (Worker.pool; empty means the trainers'): a task only
# ever runs on its own pool's workers, a trial's scoring stage on the evaluators'.
POOL_TRAINER = "trainer"
POOL_EVALUATOR = "evaluator"
SUBJECT_CLUSTER = "autoglm.cluster.changed"  # core NATS: the gateway also re-packs on a timer
SUBJECT_PING = "autoglm.trainer.ping"  # + ".<worker id>", core NATS request/reply: is it still connected?
SUBJECT_STUDY_CHANGED = "autoglm.study.changed"  # core NATS: gateway replicas tell each other's watchers


def subject_token(name: str) -> str:
    """`name` made safe as one NATS subject token (no dots, spaces or wildcards)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "_"


def ping_subject(worker_id: str) -> str:
    """Where one trainer answers the scheduler's liveness pings."""
    return f"{SUBJECT_PING}.{subject_token(worker_id)}"


def train_subject(worker_id: str) -> str:
    """The work-queue subject of one trainer's placed jobs."""
    return f"{SUBJECT_TRAIN}.{subject_token(worker_id)}"


def new_meta(source: str, study_id: str = "", trial_id: str = "", event_id: str = "") -> events_pb2.EventMeta:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return events_pb2.EventMeta(
        event_id=event_id or uuid.uuid4().hex,
        study_id=study_id,
        trial_id=trial_id,
        time=stamp,
        source=source,
    )
