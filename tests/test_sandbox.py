"""Files stay in their sandbox: the mesh reads a client's paths only inside its read roots and
writes nowhere a client names. Unit tests of the rule, then the real stack refusing the attacks
issue 10 lists (CreateStudy paths, Trainer.Export paths)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
import pytest

from openautoglm.common import sandbox
from openautoglm.v1 import studies_pb2, studies_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from helpers import spec_proto


def test_paths_inside_a_root_resolve_and_everything_else_is_refused(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.jsonl").write_text("{}\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n")
    (root / "leak").symlink_to(outside)
    (root / "inner-link").symlink_to(root / "sub" / "data.jsonl")
    roots = (root,)
    assert sandbox.readable(str(root / "sub" / "data.jsonl"), roots) == root / "sub" / "data.jsonl"
    assert sandbox.readable(str(root / "inner-link"), roots) == root / "sub" / "data.jsonl"
    for path, reason in [
        (str(outside), "outside the allowed read roots"),
        (str(root / ".." / "secret.txt"), "outside the allowed read roots"),
        (str(root / "sub" / ".." / ".." / "secret.txt"), "outside the allowed read roots"),
        (str(root / "leak"), "through a symbolic link"),
        ("sub/data.jsonl", "absolute path"),
        (str(root / "sub" / "data.jsonl") + "\0", "NUL"),
        ("/etc/passwd", "outside the allowed read roots"),
    ]:
        with pytest.raises(sandbox.OutsideRoots, match=reason):
            sandbox.readable(path, roots)


def test_the_refusal_does_not_tell_whether_a_file_outside_exists(tmp_path):
    roots = (tmp_path,)
    answers = set()
    for path in ("/etc/passwd", "/etc/shadow", "/etc/no-such-file-here"):
        with pytest.raises(sandbox.OutsideRoots) as caught:
            sandbox.readable(path, roots)
        answers.add(str(caught.value))
    assert len(answers) == 1


def test_read_roots_come_from_the_environment_or_default_to_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(sandbox.DATA_ROOTS_VARIABLE, raising=False)
    assert tmp_path in sandbox.read_roots(tmp_path)
    monkeypatch.setenv(sandbox.DATA_ROOTS_VARIABLE, os.pathsep.join(["/srv/a", "/srv/b"]))
    assert sandbox.read_roots(tmp_path) == (Path("/srv/a"), Path("/srv/b"))


ATTACKS = [
    ("spec.dataset.path", "/etc/passwd", lambda s, p: (s.dataset.ClearField("builtin"), setattr(s.dataset, "path", p))),
    ("spec.dataset.path", "/etc/shadow", lambda s, p: (s.dataset.ClearField("builtin"), setattr(s.dataset, "path", p))),
    ("spec.dataset.path", "../../etc/passwd",
     lambda s, p: (s.dataset.ClearField("builtin"), setattr(s.dataset, "path", p))),
    ("spec.model.path", "/etc", lambda s, p: (s.model.ClearField("builtin"), setattr(s.model, "path", p))),
    ("spec.warm_start.trials_path", "/etc/passwd", lambda s, p: setattr(s.warm_start, "trials_path", p)),
]


@pytest.mark.parametrize("field,path,breaker", ATTACKS, ids=[f"{a[0]}={a[1]}" for a in ATTACKS])
def test_create_study_refuses_paths_outside_the_read_roots(stack, field, path, breaker):
    spec = spec_proto()
    breaker(spec, path)

    async def call():
        async with stack.gateway_channel() as channel:
            stub = studies_pb2_grpc.StudiesStub(channel)
            before = len((await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=500))).studies)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec), timeout=10)
            after = len((await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=500))).studies)
            return caught.value, before, after

    err, before, after = asyncio.run(call())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(field + ":") and "not readable here" in err.details()
    assert "root:x:0:0" not in err.details()  # nothing of the file comes back
    assert after == before


def test_a_symlink_in_a_root_that_leads_out_is_refused_at_create_study(stack, tmp_path):
    link = tmp_path / "innocent.jsonl"
    link.symlink_to("/etc/passwd")
    spec = spec_proto()
    spec.dataset.ClearField("builtin")
    spec.dataset.path = str(link)

    async def call():
        async with stack.gateway_channel() as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await studies_pb2_grpc.StudiesStub(channel).CreateStudy(studies_pb2.CreateStudyRequest(spec=spec), timeout=10)
            return caught.value

    err = asyncio.run(call())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "symbolic link" in err.details()


EXPORT_ATTACKS = [
    ("artifact_path", trainer_pb2.ExportRequest(artifact_path="/etc")),
    ("artifact_path", trainer_pb2.ExportRequest(artifact_path="relative/artifact")),
    ("artifact_path", trainer_pb2.ExportRequest(artifact_path="/tmp/x\0y")),
    ("output_dir", trainer_pb2.ExportRequest(artifact_path="/anything", output_dir="/tmp/elsewhere")),
    ("output_dir", trainer_pb2.ExportRequest(artifact_path="/anything", output_dir="../../etc/passwd")),
]


@pytest.mark.parametrize("field,request_", EXPORT_ATTACKS, ids=[f"{a[0]}-{i}" for i, a in enumerate(EXPORT_ATTACKS)])
def test_trainer_export_writes_nowhere_a_client_names(stack, field, request_, tmp_path):
    async def call():
        async with stack.service_channel("trainer") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await trainer_pb2_grpc.TrainerStub(channel).Export(request_, timeout=30)
            return caught.value

    err = asyncio.run(call())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith(field + ":")
    assert not Path("/tmp/elsewhere").exists()


def test_the_trainer_refuses_a_job_that_names_a_file_outside_its_read_roots(stack):
    """Defence in depth: a job sent to the trainer directly (not through CreateStudy's checks)."""
    from openautoglm.v1 import common_pb2

    job = trainer_pb2.TrainJob(study_id="st-x", trial_id="tr-x", task=common_pb2.TASK_TYPE_CLASSIFICATION)
    job.candidate.prompt = "{input}"
    job.dataset.path = "/etc/passwd"

    async def call():
        async with stack.service_channel("trainer") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in trainer_pb2_grpc.TrainerStub(channel).Train(trainer_pb2.TrainRequest(job=job), timeout=30):
                    pass
            return caught.value

    err = asyncio.run(call())
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details().startswith("dataset_path: outside the allowed read roots")
    assert "root:" not in err.details()
