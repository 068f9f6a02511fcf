"""A study's result from its trials: the best trial and, with several objectives, the Pareto front."""
from __future__ import annotations

from openautoglm.common.spec.protos import maximize
from openautoglm.v1 import common_pb2


def best_trial(study: common_pb2.Study) -> common_pb2.Trial | None:
    """The succeeded trial with the best primary objective (None before any succeeded)."""
    done = [t for t in study.trials if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED]
    if not done:
        return None
    sign = 1.0 if maximize(study.spec.objective) else -1.0
    return max(done, key=lambda t: sign * t.objective_value)


def pareto_front(study: common_pb2.Study) -> list[str]:
    """Ids of the succeeded trials that no other succeeded trial beats on every objective."""
    objectives = [study.spec.objective, *study.spec.extra_objectives]
    signs = [1.0 if maximize(o) else -1.0 for o in objectives]
    points = [(t.id, [s * v for s, v in zip(signs, [t.objective_value, *t.extra_objective_values])])
              for t in study.trials if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [tid for tid, p in points if not any(dominates(q, p) for other, q in points if other != tid)]
