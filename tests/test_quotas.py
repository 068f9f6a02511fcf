"""Per-tenant quotas: checked at CreateStudy, RESOURCE_EXHAUSTED naming the quota, one tenant's
use never counted against another's. The rule on a real SQLite store, then a real gateway with
quotas configured."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from helpers import spec_proto
from openautoglm.common.stack import EmbeddedStack
from openautoglm.gateway.quotas import QuotaExceeded, Quotas
from openautoglm.gateway.store import StudyStore
from openautoglm.v1 import common_pb2, keys_pb2, keys_pb2_grpc, studies_pb2, studies_pb2_grpc


def _study(store: StudyStore, study_id: str, tenant: str, max_trials: int, finished: int = 0,
           state=common_pb2.STUDY_STATE_RUNNING) -> None:
    spec = spec_proto(budget={"max_trials": max_trials})
    store.insert_study(common_pb2.Study(id=study_id, spec=spec, state=state, tenant=tenant), "", "")
    for n in range(finished):
        store.insert_trial(common_pb2.Trial(id=f"{study_id}-{n}", study_id=study_id, number=n,
                                            status=common_pb2.TRIAL_STATUS_SUCCEEDED))


def test_each_quota_names_itself_and_counts_only_the_tenants_running_work(tmp_path):
    store = StudyStore(tmp_path / "s.sqlite")
    _study(store, "a1", "team-a", max_trials=10, finished=4)  # 6 still to run
    _study(store, "a2", "team-a", max_trials=5, state=common_pb2.STUDY_STATE_COMPLETED)  # not running
    _study(store, "b1", "team-b", max_trials=50)
    spec = spec_proto(budget={"max_trials": 4})
    Quotas(max_running_studies=2, max_trials_per_study=4, max_queued_trials=10).check(store, "team-a", spec)
    with pytest.raises(QuotaExceeded, match="^quota max_running_studies"):
        Quotas(max_running_studies=1).check(store, "team-a", spec)
    with pytest.raises(QuotaExceeded, match="^quota max_trials_per_study"):
        Quotas(max_trials_per_study=3).check(store, "team-a", spec)
    with pytest.raises(QuotaExceeded, match="^quota max_queued_trials"):
        Quotas(max_queued_trials=9).check(store, "team-a", spec)  # 6 + 4 > 9
    Quotas(max_running_studies=1, max_queued_trials=9).check(store, "team-c", spec)  # another tenant: nothing used
    Quotas().check(store, "team-b", spec_proto(budget={"max_trials": 10_000}))  # 0 = no limit


def test_the_gateway_refuses_over_quota_with_resource_exhausted(tmp_path):
    async def run():
        stack = EmbeddedStack(tmp_path / "stack", env={"OPENAUTOGLM_TENANT_MAX_RUNNING_STUDIES": "1",
                                                       "OPENAUTOGLM_TENANT_MAX_TRIALS_PER_STUDY": "3"})
        await stack.start()
        try:
            async with stack.gateway_channel() as admin:
                member = (await keys_pb2_grpc.KeysStub(admin).CreateKey(
                    keys_pb2.CreateKeyRequest(tenant="team-q", role=keys_pb2.ROLE_MEMBER), timeout=10)).secret
                other = (await keys_pb2_grpc.KeysStub(admin).CreateKey(
                    keys_pb2.CreateKeyRequest(tenant="team-r", role=keys_pb2.ROLE_MEMBER), timeout=10)).secret
            async with stack.gateway_channel(member) as q, \
                    stack.gateway_channel(other) as r:
                sq, sr = studies_pb2_grpc.StudiesStub(q), studies_pb2_grpc.StudiesStub(r)
                first = (await sq.CreateStudy(studies_pb2.CreateStudyRequest(
                    spec=spec_proto(budget={"max_trials": 2}), request_id="once"), timeout=30)).study
                # The same request again is the same study, not a second one over the quota.
                again = (await sq.CreateStudy(studies_pb2.CreateStudyRequest(
                    spec=spec_proto(budget={"max_trials": 2}), request_id="once"), timeout=30)).study
                assert again.id == first.id
                for spec, quota in ((spec_proto(budget={"max_trials": 2}), "quota max_running_studies"),
                                    (spec_proto(budget={"max_trials": 5}), "quota max_trials_per_study")):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await sq.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec), timeout=30)
                    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert caught.value.details().startswith(quota)
                listed = (await sq.ListStudies(studies_pb2.ListStudiesRequest(), timeout=10)).studies
                assert [s.id for s in listed] == [first.id]  # the refusals left nothing behind
                # Another tenant is not held back by team-q's running study.
                theirs = (await sr.CreateStudy(studies_pb2.CreateStudyRequest(
                    spec=spec_proto(budget={"max_trials": 1})), timeout=30)).study
                for stub, sid in ((sq, first.id), (sr, theirs.id)):
                    await stub.CancelStudy(studies_pb2.CancelStudyRequest(study_id=sid), timeout=10)
        finally:
            stack.stop()

    asyncio.run(run())
