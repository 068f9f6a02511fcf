"""The whole mesh on the embedded stack: real NATS, five service processes, real gRPC sockets.

One study end to end through all five services; its spans, exported over OTLP/gRPC to the
in-test receiver, share one trace id across all five; bad specs are refused with
INVALID_ARGUMENT naming the field and nothing is created; failing trials leave the study going.
"""
import asyncio
import json
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from helpers import run_study, small_spec, spec_proto
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.common.stack import SERVICE_ORDER
from openautoglm.v1 import (
    common_pb2, evaluator_pb2, evaluator_pb2_grpc, prompt_generator_pb2, prompt_generator_pb2_grpc,
    scheduler_pb2, scheduler_pb2_grpc, studies_pb2, studies_pb2_grpc, trainer_pb2, trainer_pb2_grpc,
)

SERVICE_NAMES = set(SERVICE_ORDER)
_study_result = {}


async def _completed_study(stack):
    """The end-to-end study, run once and shared by the assertions below."""
    if "study" not in _study_result:
        _study_result["study"] = await run_study(stack, spec_proto())
    return _study_result["study"]


async def test_a_study_runs_end_to_end_through_all_five_services(stack):
    study = await _completed_study(stack)
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    assert len(study.trials) == 4
    assert all(t.status == common_pb2.TRIAL_STATUS_SUCCEEDED for t in study.trials)
    assert len({t.candidate.id for t in study.trials}) == 4
    assert {t.candidate.template_id for t in study.trials} == {"plain", "asked"}
    for t in study.trials:
        assert set(t.metrics) == {"accuracy", "macro_f1"}
        assert 0.0 <= t.metrics["accuracy"] <= 1.0
        assert t.objective_value == pytest.approx(0.5 * t.metrics["accuracy"] + 0.5 * t.metrics["macro_f1"])
        assert t.trainer_id.startswith("trainer-")
    best = max(study.trials, key=lambda t: t.objective_value)
    assert study.best_trial_id == best.id
    assert len(study.trace_id) == 32


async def test_trials_record_predicted_and_actual_seconds_on_trainers_that_measured_their_speed(stack):
    from openautoglm.common.catalogue import REFERENCE_TOKENS_PER_SECOND

    study = await _completed_study(stack)
    async with stack.service_channel("gnn-scheduler") as channel:
        workers = (await scheduler_pb2_grpc.SchedulerStub(channel).ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10)).workers
    assert workers
    for worker in workers:  # measured when the trainer started, per precision the CPU runs
        assert set(worker.tokens_per_second) == {"fp32", "bf16"} and min(worker.tokens_per_second.values()) > 0
        assert worker.speed == pytest.approx(worker.tokens_per_second["fp32"] / REFERENCE_TOKENS_PER_SECOND)
    speeds = {w.id: w.speed for w in workers}
    for t in study.trials:
        assert t.predicted_seconds > 0 and t.predicted_seconds_sd > 0 and t.actual_seconds > 0
        assert t.worker_speed == pytest.approx(speeds[t.assigned_worker_id])


def _orphans(spans: list[dict]) -> list[dict]:
    """Spans whose parent is not (yet) among `spans`."""
    ids = {s["span_id"] for s in spans}
    return [s for s in spans if s["parent_id"] and s["parent_id"] not in ids]


async def test_one_trace_per_study_spans_all_five_services(stack, otlp_receiver):
    study = await _completed_study(stack)
    # Five processes export in their own batches, so a child can arrive before its parent's batch
    # (a trainer's last spans end after the gateway has already closed the study): wait for a
    # whole trace, with the study span and every parent in it, before judging its shape.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans = otlp_receiver.for_trace(study.trace_id)
        if ({s["service"] for s in spans} >= SERVICE_NAMES and any(s["name"] == "study" for s in spans)
                and not _orphans(spans)):
            break
        await asyncio.sleep(0.3)
    spans = otlp_receiver.for_trace(study.trace_id)
    per_service = otlp_receiver.spans_per_service(study.trace_id)
    print(f"\nspans in study {study.id}'s trace per service: {json.dumps(per_service)}")
    assert {s["service"] for s in spans} == SERVICE_NAMES, per_service
    names = {(s["service"], s["name"]) for s in spans}
    for expected in [("gateway", "study"), ("gateway", "dispatch"), ("prompt-generator", "propose"),
                     ("gnn-scheduler", "pack"), ("gateway", "place"), ("trainer", "trainer.job"), ("trainer", "train"),
                     ("evaluator", "evaluate.metrics")]:
        assert expected in names, f"missing span {expected}"
    # A single root, the CreateStudy call that opened the study; every other span hangs under it.
    ids = {s["span_id"]: s for s in spans}
    roots = [s for s in spans if not s["parent_id"]]
    assert [r["name"] for r in roots] == ["/openautoglm.v1.Studies/CreateStudy"]
    assert not _orphans(spans), [(s["service"], s["name"]) for s in _orphans(spans)]
    study_span = next(s for s in spans if s["name"] == "study")
    assert ids[study_span["parent_id"]] is roots[0]
    # Health checks are not traced.
    assert not any("Health" in s["name"] for s in otlp_receiver.spans)


async def test_logs_are_json_lines_carrying_the_trace_id(stack):
    study = await _completed_study(stack)
    for service in ("gateway", "trainer"):
        lines = [json.loads(line) for line in (stack.log_dir / f"{service}.log").read_text().splitlines() if line.startswith("{")]
        assert any(entry.get("trace_id") == study.trace_id for entry in lines), service


BAD_SPECS = [
    ("spec.strategy", lambda s: setattr(s, "strategy", "annealing")),
    ("spec.search_space.templates", lambda s: s.search_space.ClearField("templates")),
    ("spec.budget.max_trials", lambda s: setattr(s.budget, "max_trials", -3)),
    ("spec.dataset.path", lambda s: (s.dataset.ClearField("builtin"), setattr(s.dataset, "path", "/missing/data.jsonl"))),
]


@pytest.mark.parametrize("field,breaker", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
async def test_create_study_refuses_bad_specs_naming_the_field(stack, field, breaker):
    spec = spec_proto()
    breaker(spec)
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        before = len((await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=500))).studies)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(field + ":"), info.value.details()
        after = len((await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=500))).studies)
        assert after == before


async def test_failing_trials_are_reported_and_the_study_goes_on(stack, tmp_path):
    spec = small_spec()
    spec["search_space"]["hyperparameters"] = {"batch_size": {"type": "choice", "values": [0, 16]},
                                               "epochs": {"type": "choice", "values": [1]}}
    spec["search_space"]["templates"] = spec["search_space"]["templates"][:1]
    spec["budget"] = {"max_trials": 2}
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    by_bs = {t.candidate.hyperparameters["batch_size"].integer: t for t in study.trials}
    assert by_bs[0].status == common_pb2.TRIAL_STATUS_FAILED
    assert "batch_size must be >= 1" in by_bs[0].error
    assert by_bs[16].status == common_pb2.TRIAL_STATUS_SUCCEEDED
    assert study.state == common_pb2.STUDY_STATE_COMPLETED and study.best_trial_id == by_bs[16].id


async def test_a_malformed_dataset_fails_every_trial_with_the_line(stack, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"text": "good", "label": "a"}\n{"text": "bad", "label": \n')
    spec = small_spec(dataset={"path": str(data)}, budget={"max_trials": 2})
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_FAILED and study.error == "no trial succeeded"
    assert all(f"{data}:2: not valid JSON" in t.error for t in study.trials)


async def test_get_list_cancel_and_not_found(stack):
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        spec = spec_proto(budget={"max_trials": 4})
        created = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec, request_id="req-1"))).study
        again = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec, request_id="req-1"))).study
        assert again.id == created.id  # idempotent retry
        cancelled = (await stub.CancelStudy(studies_pb2.CancelStudyRequest(study_id=created.id))).study
        assert cancelled.state == common_pb2.STUDY_STATE_CANCELLED
        listed = (await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=1))).studies
        assert len(listed) == 1 and listed[0].id == created.id
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetStudy(studies_pb2.GetStudyRequest(study_id="st-nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListStudies(studies_pb2.ListStudiesRequest(page_token="garbage"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in info.value.details()


async def test_every_service_has_health_and_reflection(stack):
    for service in SERVICE_ORDER:
        async with stack.service_channel(service) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            async for answer in stream:
                names = {s.name for s in answer.list_services_response.service}
                assert any(n.startswith("openautoglm.v1.") for n in names), (service, names)
                break


async def test_services_refuse_bad_requests_with_invalid_argument(stack):
    cases = [
        ("evaluator", evaluator_pb2_grpc.EvaluatorStub, "Evaluate",
         evaluator_pb2.EvaluateRequest(task=common_pb2.TASK_TYPE_CLASSIFICATION, predictions=["a"], references=["a", "b"]), "predictions"),
        ("evaluator", evaluator_pb2_grpc.EvaluatorStub, "Evaluate",
         evaluator_pb2.EvaluateRequest(task=common_pb2.TASK_TYPE_CLASSIFICATION, predictions=["a"], references=["a"], metrics=["nope"]), "metrics[0]"),
        ("gnn-scheduler", scheduler_pb2_grpc.SchedulerStub, "Plan",
         scheduler_pb2.PlanRequest(graph=scheduler_pb2.TaskGraph(
             tasks=[scheduler_pb2.Task(id="a"), scheduler_pb2.Task(id="b")],
             dependencies=[scheduler_pb2.Dependency(from_task="a", to_task="b"), scheduler_pb2.Dependency(from_task="b", to_task="a")]),
             workers=[scheduler_pb2.Worker(id="w", slots=1)]), "cycle"),
        ("prompt-generator", prompt_generator_pb2_grpc.PromptGeneratorStub, "Propose",
         prompt_generator_pb2.ProposeRequest(study_id="x", count=1, registration=prompt_generator_pb2.RegisterStudyRequest(
             study_id="x", spec=common_pb2.StudySpec())), "spec.task"),
        ("prompt-generator", prompt_generator_pb2_grpc.PromptGeneratorStub, "Render",
         prompt_generator_pb2.RenderRequest(templates=[common_pb2.PromptTemplate(id="a", text="{ghost} {input}")]), "templates[0].text"),
    ]
    for service, stub_cls, method, request, needle in cases:
        async with stack.service_channel(service) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await getattr(stub_cls(channel), method)(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (service, method, info.value)
            assert needle in info.value.details(), (service, info.value.details())


async def test_trainer_train_rpc_streams_progress_and_result(stack):
    job = trainer_pb2.TrainJob(
        study_id="direct", trial_id="direct-1", task=common_pb2.TASK_TYPE_CLASSIFICATION,
        dataset=common_pb2.DatasetSpec(builtin="sentiment-demo", max_examples=100),
        model=common_pb2.ModelSpec(builtin="tiny"),
        candidate=common_pb2.Candidate(prompt="Review: {input}", hyperparameters={"epochs": common_pb2.ParamValue(integer=2)}),
    )
    async with stack.service_channel("trainer") as channel:
        stub = trainer_pb2_grpc.TrainerStub(channel)
        updates = [u async for u in stub.Train(trainer_pb2.TrainRequest(job=job), timeout=120)]
        capacity = await stub.GetCapacity(trainer_pb2.GetCapacityRequest(), timeout=5)
    assert any(u.HasField("progress") for u in updates)
    assert updates[-1].HasField("trained") and len(updates[-1].trained.predictions) == 20
    assert capacity.worker.slots == 1 and capacity.worker.device_kind == "cpu" and capacity.worker.memory_mb > 0


async def test_objective_metrics_are_checked_against_what_the_evaluator_serves(stack):
    spec = spec_proto()
    del spec.objective.terms[:]
    spec.objective.terms.add(metric="shout_rate", weight=1.0)
    async with stack.gateway_channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await studies_pb2_grpc.StudiesStub(channel).CreateStudy(studies_pb2.CreateStudyRequest(spec=spec), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("spec.objective.terms.shout_rate: unknown metric")


@pytest.mark.parametrize("strategy", ["grid", "random", "tpe", "cmaes", "bandit", "rl"])
async def test_every_strategy_runs_a_study_through_the_mesh(stack, strategy):
    spec = small_spec(strategy=strategy, budget={"max_trials": 3}, dataset={"builtin": "sentiment-demo", "max_examples": 120})
    if strategy != "grid":
        spec["search_space"]["hyperparameters"]["learning_rate"] = {"type": "loguniform", "low": 1e-3, "high": 1e-2}
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    assert len(study.trials) == 3 and len({t.candidate.id for t in study.trials}) == 3
    assert all(t.status == common_pb2.TRIAL_STATUS_SUCCEEDED for t in study.trials)


async def test_scheduler_plans_the_heft_paper_example_over_grpc(stack):
    import json as _json
    from pathlib import Path

    data = _json.loads((Path(__file__).parent / "fixtures" / "heft_topcuoglu2002_example.json").read_text())
    workers = [scheduler_pb2.Worker(id=f"p{i + 1}", slots=1) for i in range(data["processors"])]
    tasks = [scheduler_pb2.Task(id=tid, compute_seconds_by_worker={f"p{i + 1}": c for i, c in enumerate(costs)})
             for tid, costs in data["computation_cost"].items()]
    deps = [scheduler_pb2.Dependency(from_task=str(a), to_task=str(b), transfer_seconds=c) for a, b, c in data["edges"]]
    async with stack.service_channel("gnn-scheduler") as channel:
        reply = await scheduler_pb2_grpc.SchedulerStub(channel).Plan(scheduler_pb2.PlanRequest(
            graph=scheduler_pb2.TaskGraph(tasks=tasks, dependencies=deps), workers=workers, policy="heft"), timeout=10)
    assert reply.makespan_seconds == 80 and reply.policy == "heft" and len(reply.assignments) == 10


async def test_a_study_warm_starts_from_an_earlier_study_or_a_file(stack, tmp_path):
    earlier = await _completed_study(stack)
    spec = small_spec(strategy="tpe", budget={"max_trials": 2}, warm_start={"from_study_id": earlier.id})
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED

    bad = tmp_path / "prior.jsonl"
    bad.write_text(json.dumps({"template_id": "plain", "variables": {}, "hyperparameters": {"epochs": 1, "learning_rate": 0.003},
                               "objective": 0.5}) + "\n" +
                   json.dumps({"template_id": "gone", "variables": {}, "hyperparameters": {}, "objective": 0.4}) + "\n")
    spec = spec_proto(warm_start={"trials_path": str(bad)})
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        before = len((await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=500))).studies)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == f"spec.warm_start.trials_path: {bad}:2: template 'gone' is not in the search space"
        assert len((await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=500))).studies) == before
        missing = spec_proto(warm_start={"from_study_id": "st-nope"})
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=missing), timeout=10)
        assert info.value.details().startswith("spec.warm_start.from_study_id: no study")


async def test_scheduler_plans_with_the_gnn_by_default(stack):
    tasks = [scheduler_pb2.Task(id=f"t{i}", compute_seconds=1 + i % 3, memory_mb=100) for i in range(6)]
    deps = [scheduler_pb2.Dependency(from_task="t0", to_task=f"t{i}") for i in range(1, 6)]
    async with stack.service_channel("gnn-scheduler") as channel:
        reply = await scheduler_pb2_grpc.SchedulerStub(channel).Plan(scheduler_pb2.PlanRequest(
            graph=scheduler_pb2.TaskGraph(tasks=tasks, dependencies=deps),
            workers=[scheduler_pb2.Worker(id="w", slots=2, memory_mb=1000, speed=1)]), timeout=10)
    assert reply.policy == "gnn" and len(reply.assignments) == 6 and reply.total_slots == 2
    first = min(reply.assignments, key=lambda a: a.order)
    assert first.task_id == "t0"


async def test_a_multi_objective_study_reports_a_pareto_front(stack):
    from openautoglm.gateway.results import pareto_front

    spec = small_spec(strategy="tpe", budget={"max_trials": 4},
                      objective={"metric": "accuracy"},
                      extra_objectives=[{"metric": "latency_ms", "direction": "minimize"}])
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    assert all(len(t.extra_objective_values) == 1 and t.extra_objective_values[0] == t.metrics["latency_ms"] > 0
               for t in study.trials)
    front = set(study.pareto_trial_ids)
    assert front and front == set(pareto_front(study))
    best_accuracy = max(t.metrics["accuracy"] for t in study.trials)
    fastest = min(t.metrics["latency_ms"] for t in study.trials)
    assert any(t.metrics["accuracy"] == best_accuracy for t in study.trials if t.id in front)
    assert any(t.metrics["latency_ms"] == fastest for t in study.trials if t.id in front)


def test_multi_objective_specs_are_checked():
    from openautoglm.common.spec.schema import SpecError

    with pytest.raises(SpecError) as info:
        validate_dict(small_spec(strategy="bandit", extra_objectives=[{"metric": "latency_ms", "direction": "minimize"}]))
    assert info.value.field == "strategy"
    with pytest.raises(SpecError) as info:
        validate_dict(small_spec(extra_objectives=[{"metric": "speed"}]))
    assert info.value.field == "extra_objectives[0].terms.speed"


async def test_propose_reports_the_render_cache_hit_rate(stack):
    spec = spec_proto()
    async with stack.service_channel("prompt-generator") as channel:
        stub = prompt_generator_pb2_grpc.PromptGeneratorStub(channel)
        for study_id in ("cache-a", "cache-b"):
            await stub.RegisterStudy(prompt_generator_pb2.RegisterStudyRequest(study_id=study_id, spec=spec), timeout=10)
        await stub.Propose(prompt_generator_pb2.ProposeRequest(study_id="cache-a", count=1), timeout=10)
        reply = await stub.Propose(prompt_generator_pb2.ProposeRequest(study_id="cache-b", count=1), timeout=10)
    # Study b renders the same templates for the same model: every one of its renders is a hit.
    assert reply.render_cache_lookups >= 4 and reply.render_cache_hits >= 2
