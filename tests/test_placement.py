"""The gateway's packer (gateway/placement.py) against the scheduler's real Pack: what it sends
(each queued trial as the chain of its stages) and what holds a trainer's place (an export of a
study's best running there). The scheduler is called in process, through its servicer, instead of
over gRPC: this test is about what the packer sends and does with the answer."""
import asyncio

import pytest

from openautoglm.gateway.cost_model import TrialCosts
from openautoglm.gateway.placement import Export, Packer
from openautoglm.gateway.store import StudyStore
from openautoglm.gnn_scheduler.service import DefaultPolicy, SchedulerServicer
from openautoglm.v1 import common_pb2, scheduler_pb2

S = common_pb2


class _Aborted(Exception):
    pass


class _Context:
    async def abort(self, code, details):
        raise _Aborted(f"{code}: {details}")


class _Scheduler:
    """The real servicer, called in process; records each request."""

    def __init__(self, workers):
        self.servicer = SchedulerServicer(registry=None, default_policy=DefaultPolicy(name="critical_path"))  # type: ignore[arg-type]
        self.workers = workers
        self.requests: list[scheduler_pb2.PackRequest] = []

    async def Pack(self, request, timeout=None):
        self.requests.append(request)
        request.workers.extend(self.workers)
        return await self.servicer.Pack(request, _Context())


class _Peers:
    def __init__(self, scheduler):
        self.scheduler = scheduler


class _Bus:
    def __init__(self):
        self.published: list[str] = []

    async def publish(self, subject, event, ctx=None):
        self.published.append(subject)


def _store(tmp_path, pruner: str = "") -> StudyStore:
    store = StudyStore(tmp_path / "gateway.sqlite")
    spec = S.StudySpec(pruner=pruner, dataset=S.DatasetSpec(builtin="sentiment-demo"))
    store.insert_study(S.Study(id="s1", spec=spec, state=S.STUDY_STATE_RUNNING), "", "")
    candidate = S.Candidate(hyperparameters={"epochs": S.ParamValue(integer=3)})
    store.insert_trial(S.Trial(id="s1-t0", study_id="s1", number=0, candidate=candidate, status=S.TRIAL_STATUS_QUEUED, memory_mb=100))
    return store


def _packer(store, scheduler, exports=None) -> tuple[Packer, _Bus]:
    bus = _Bus()
    return Packer(store, bus, _Peers(scheduler), lambda study_id: None, lambda *a: None, TrialCosts(store), exports), bus


def test_a_queued_trial_is_sent_as_its_stages_and_only_its_first_is_placed(tmp_path):
    store = _store(tmp_path, pruner="median")
    scheduler = _Scheduler([scheduler_pb2.Worker(id="t0", slots=2, memory_mb=4000, speed=1.0)])
    packer, bus = _packer(store, scheduler)
    asyncio.run(packer.pack())
    sent = scheduler.requests[0]
    assert [t.id for t in sent.pending] == ["s1-t0", "s1-t0#r2", "s1-t0#r3", "s1-t0#score"]
    assert [(d.from_task, d.to_task) for d in sent.dependencies] == [("s1-t0", "s1-t0#r2"), ("s1-t0#r2", "s1-t0#r3"),
                                                                    ("s1-t0#r3", "s1-t0#score")]
    assert store.trial("s1-t0").assigned_worker_id == "t0" and bus.published == ["autoglm.trial.train.t0"]
    # Placed: next time it is running work, and its scoring a stage still to come.
    asyncio.run(packer.pack())
    assert len(scheduler.requests) == 1  # nothing queued and no check due: no Pack at all
    packer.request(check_placements=True)
    asyncio.run(packer.pack())
    again = scheduler.requests[-1]
    assert [a.task_id for a in again.running] == ["s1-t0"] and [t.id for t in again.pending] == ["s1-t0#score"]


@pytest.mark.parametrize("exporting, placed", [(True, ""), (False, "t0")])
def test_an_export_running_on_a_trainer_holds_its_place(tmp_path, exporting, placed):
    store = _store(tmp_path)
    scheduler = _Scheduler([scheduler_pb2.Worker(id="t0", slots=1, memory_mb=4000, speed=1.0)])
    exports = [Export("export/default/best/v1", "t0", "s0")] if exporting else []
    packer, _ = _packer(store, scheduler, lambda: exports)
    asyncio.run(packer.pack())
    assert store.trial("s1-t0").assigned_worker_id == placed
    running = scheduler.requests[0].running
    assert [(a.task_id, a.worker_id) for a in running] == ([("export/default/best/v1", "t0")] if exporting else [])
