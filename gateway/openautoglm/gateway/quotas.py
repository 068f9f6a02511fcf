"""Per-tenant quotas, checked when a study is created: running studies, trials per study, and
trials still to run over the tenant's running studies (queued work). Over a quota ->
RESOURCE_EXHAUSTED naming it. 0 means no limit. gRPC-free: the servicer maps `QuotaExceeded`."""
from __future__ import annotations

from dataclasses import dataclass

from openautoglm.gateway.states import TERMINAL_STUDY, TERMINAL_TRIAL
from openautoglm.gateway.store import StudyStore
from openautoglm.v1 import common_pb2


class QuotaExceeded(Exception):
    """The message names the quota, its limit and the tenant."""


@dataclass(frozen=True)
class Quotas:
    max_running_studies: int = 0
    max_trials_per_study: int = 0
    max_queued_trials: int = 0

    def check(self, store: StudyStore, tenant: str, spec: common_pb2.StudySpec) -> None:
        """Raise QuotaExceeded if a new study with `spec` would take `tenant` over a quota."""
        wanted = spec.budget.max_trials
        if self.max_trials_per_study and wanted > self.max_trials_per_study:
            raise QuotaExceeded(f"quota max_trials_per_study: spec.budget.max_trials {wanted} is over tenant "
                                f"{tenant!r}'s limit of {self.max_trials_per_study}")
        if not (self.max_running_studies or self.max_queued_trials):
            return
        running = [store.existing_study(study_id) for study_id in store.tenant_studies_not_in_state(tenant, *TERMINAL_STUDY)]
        if self.max_running_studies and len(running) >= self.max_running_studies:
            raise QuotaExceeded(f"quota max_running_studies: tenant {tenant!r} already runs {len(running)} "
                                f"studies, its limit")
        if self.max_queued_trials:
            queued = sum(max(0, s.spec.budget.max_trials - sum(t.status in TERMINAL_TRIAL for t in s.trials))
                         for s in running)
            if queued + wanted > self.max_queued_trials:
                raise QuotaExceeded(f"quota max_queued_trials: tenant {tenant!r} has {queued} trials still to run; "
                                    f"{wanted} more would pass its limit of {self.max_queued_trials}")
