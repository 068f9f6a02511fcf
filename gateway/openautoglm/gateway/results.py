"""A study's result from its trials: the best trial, with several objectives the Pareto front,
and the final report (the winner's validation metrics beside its test metrics, with their spread
over its final repeats). The winner is chosen among the search's trials on validation scores
only; final repeats never compete."""
from __future__ import annotations

import statistics

from openautoglm.common.spec.protos import maximize
from openautoglm.v1 import common_pb2


def is_repeat(trial: common_pb2.Trial) -> bool:
    """A final repeat of the winner (StudySpec.final_repeats), not a trial of the search."""
    return bool(trial.repeat_of)


def search_trials(study: common_pb2.Study) -> list[common_pb2.Trial]:
    """The trials the search proposed (every trial but the final repeats)."""
    return [t for t in study.trials if not is_repeat(t)]


def best_trial(study: common_pb2.Study) -> common_pb2.Trial | None:
    """The succeeded search trial with the best primary objective (None before any succeeded)."""
    done = [t for t in search_trials(study) if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED]
    if not done:
        return None
    sign = 1.0 if maximize(study.spec.objective) else -1.0
    return max(done, key=lambda t: sign * t.objective_value)


def pareto_front(study: common_pb2.Study) -> list[str]:
    """Ids of the succeeded trials that no other succeeded trial beats on every objective."""
    objectives = [study.spec.objective, *study.spec.extra_objectives]
    signs = [1.0 if maximize(o) else -1.0 for o in objectives]
    points = [(t.id, [s * v for s, v in zip(signs, [t.objective_value, *t.extra_objective_values])])
              for t in search_trials(study) if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [tid for tid, p in points if not any(dominates(q, p) for other, q in points if other != tid)]


def repeats_of(study: common_pb2.Study, trial_id: str) -> list[common_pb2.Trial]:
    return [t for t in study.trials if t.repeat_of == trial_id]


def final_report(study: common_pb2.Study, error: str = "") -> common_pb2.FinalReport:
    """The study's answer: its winner's validation and test metrics, and each metric's mean and
    standard deviation over the winner and its succeeded final repeats."""
    best = best_trial(study)
    if best is None:
        return common_pb2.FinalReport(error=error)
    group = [best, *(t for t in repeats_of(study, best.id) if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED)]
    report = common_pb2.FinalReport(
        best_trial_id=best.id, validation_metrics=dict(best.metrics), test_metrics=dict(best.test_metrics),
        validation_objective=best.objective_value, test_objective=best.test_objective_value,
        seeds=len(group), test_examples=best.test_examples, error=error)
    validation = [{**t.metrics, "objective": t.objective_value} for t in group]
    test = [{**t.test_metrics, "objective": t.test_objective_value} if t.test_metrics else {} for t in group]
    for spreads, rows in ((report.validation_spread, validation), (report.test_spread, test)):
        names: set[str] = set().union(*rows)
        for name in sorted(names):
            values = [row[name] for row in rows if name in row]
            if len(values) == len(group):  # a spread over every seed, or none
                spreads[name].CopyFrom(common_pb2.MetricSpread(
                    mean=statistics.fmean(values), sd=statistics.stdev(values) if len(values) > 1 else 0.0))
    return report
