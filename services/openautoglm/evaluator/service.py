"""gRPC face of the evaluator: converts requests to metrics.evaluate calls (trainers send their
held-out predictions here directly)."""
from __future__ import annotations

import asyncio
import logging

import grpc

from openautoglm.common import telemetry
from openautoglm.common.spec.protos import objective_terms, task_enum, task_name
from openautoglm.evaluator import metrics
from openautoglm.v1 import evaluator_pb2, evaluator_pb2_grpc

log = logging.getLogger(__name__)


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    """Runs at most `workers` scorings at once (the capacity the evaluator announces); more wait."""

    def __init__(self, workers: int = 1):
        self._gate = asyncio.Semaphore(workers)
        self.busy = 0

    async def Evaluate(self, request, context):
        task = task_name(request.task)
        if not task:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task: set TASK_TYPE_CLASSIFICATION or TASK_TYPE_GENERATION")
        async with self._gate:
            self.busy += 1
            try:
                return await self._evaluate(request, context, task)
            finally:
                self.busy -= 1

    async def _evaluate(self, request, context, task: str):
        try:
            with telemetry.tracer().start_as_current_span("evaluate.metrics") as span:
                span.set_attribute("openautoglm.examples", len(request.references))
                values, score = await asyncio.to_thread(
                    metrics.evaluate,
                    task,
                    list(request.predictions),
                    list(request.references),
                    list(request.metrics),
                    objective_terms(request.objective),
                    dict(request.model_metrics),
                    [objective_terms(o) for o in request.extra_objectives],
                )
                extras = [metrics.weighted(values, objective_terms(o)) for o in request.extra_objectives]
        except metrics.MetricError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except metrics.ScorerFailed as err:
            log.exception("scoring trial %s failed", request.trial_id)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        return evaluator_pb2.EvaluateResponse(metrics=values, objective_value=score, extra_objective_values=extras)

    async def ListMetrics(self, request, context):
        return evaluator_pb2.ListMetricsResponse(
            metrics=[
                evaluator_pb2.MetricInfo(
                    name=m.name,
                    tasks=[task_enum(t) for t in m.tasks],
                    higher_is_better=m.higher_is_better,
                    description=m.description,
                )
                for m in metrics.registry().values()
            ]
        )
