"""What keeps a study with many trials cheap to read and to watch: GetStudy pages (or leaves out)
the trials, and WatchStudy with changes_only sends each trial that changed instead of the whole
study on every change. Real gateway, real study, on the embedded stack."""
from __future__ import annotations

import grpc
import pytest

from helpers import spec_proto
from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc

S = common_pb2


async def test_watching_changes_only_rebuilds_the_same_study_and_get_study_pages_its_trials(stack):
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        created = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_proto()), timeout=30)).study
        replies = [reply async for reply in stub.WatchStudy(
            studies_pb2.WatchStudyRequest(study_id=created.id, changes_only=True), timeout=300)]
        final = (await stub.GetStudy(studies_pb2.GetStudyRequest(study_id=created.id), timeout=10)).study

        # The first reply is the whole study; the rest carry no trial list, only what changed.
        assert replies[0].change == "snapshot"
        assert all(not r.study.trials for r in replies[1:]) and any(r.changed_trials for r in replies[1:])
        rebuilt = {t.id: t for t in replies[0].study.trials}
        for reply in replies[1:]:
            rebuilt.update({t.id: t for t in reply.changed_trials})
        assert replies[-1].study.state == S.STUDY_STATE_COMPLETED == final.state
        assert [rebuilt[t.id] for t in final.trials] == list(final.trials) and len(rebuilt) == len(final.trials) == 4
        assert replies[-1].study.trial_count == 4 and final.trial_count == 4

        pages, token = [], ""
        while True:
            reply = await stub.GetStudy(studies_pb2.GetStudyRequest(
                study_id=created.id, trial_page_size=3, trial_page_token=token), timeout=10)
            pages.append([t.number for t in reply.study.trials])
            assert reply.study.trial_count == 4
            token = reply.next_trial_page_token
            if not token:
                break
        assert pages == [[0, 1, 2], [3]]
        bare = (await stub.GetStudy(studies_pb2.GetStudyRequest(study_id=created.id, without_trials=True), timeout=10)).study
        assert not bare.trials and bare.trial_count == 4 and bare.best_trial_id == final.best_trial_id


@pytest.mark.parametrize("request_, field", [
    (dict(trial_page_size=-1), "trial_page_size"),
    (dict(trial_page_size=1001), "trial_page_size"),
    (dict(trial_page_size=10, trial_page_token="not-a-token"), "trial_page_token"),
])
async def test_bad_trial_pages_are_invalid_argument_naming_the_field(stack, request_, field):
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        study = (await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=1), timeout=10)).studies
        study_id = study[0].id if study else "st-none"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetStudy(studies_pb2.GetStudyRequest(study_id=study_id, **request_), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details().startswith(field)
