"""Study state in the gateway's database (database.py: SQLite by default, PostgreSQL for more
than one replica).

Rows keep the indexed fields as columns and the full `Study` / `Trial` protos as blobs, so the
stored state is exactly what the API returns. Every write commits at once: a gateway restart (or
another replica) resumes running studies from here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import Engine

from openautoglm.gateway.database import DEFAULT_TENANT, open_database, studies, trials
from openautoglm.gateway.states import TERMINAL_STUDY, TERMINAL_TRIAL
from openautoglm.v1 import common_pb2

__all__ = ["DEFAULT_TENANT", "StudyStore", "now_ts", "request_key"]


def request_key(tenant: str, request_id: str) -> str:
    """A CreateStudy request id as stored: per tenant, so tenants cannot collide or probe."""
    return f"{tenant}/{request_id}"


def now_ts() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def engine_for(where: Path | Engine) -> Engine:
    """An engine from an engine, or a SQLite file's path (tests, tools)."""
    return where if isinstance(where, Engine) else open_database(f"sqlite:///{where}")


class StudyStore:
    def __init__(self, where: Path | Engine):
        if isinstance(where, Path):
            where.parent.mkdir(parents=True, exist_ok=True)
        self.engine = engine_for(where)

    def close(self) -> None:
        self.engine.dispose()

    def _one(self, statement: sa.Executable) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(statement).first()

    def _all(self, statement: sa.Executable) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(statement))

    def _write(self, statement: sa.Executable) -> int:
        """Run one write in its own transaction; returns the rows it changed."""
        with self.engine.begin() as connection:
            return int(connection.execute(statement).rowcount)

    # studies -------------------------------------------------------------------------------
    def insert_study(self, study: common_pb2.Study, request_id: str, traceparent: str,
                     priors: common_pb2.PriorTrials | None = None) -> None:
        study = _without_trials(study)
        now = time.time()
        self._write(studies.insert().values(
            id=study.id, created=now, state=study.state, request_id=request_id or None, traceparent=traceparent,
            started=now, blob=study.SerializeToString(),
            priors=(priors or common_pb2.PriorTrials()).SerializeToString(), tenant=study.tenant or DEFAULT_TENANT))

    def priors(self, study_id: str) -> common_pb2.PriorTrials:
        row = self._one(sa.select(studies.c.priors).where(studies.c.id == study_id))
        return common_pb2.PriorTrials.FromString(row[0] or b"") if row else common_pb2.PriorTrials()

    def finish_study(self, study: common_pb2.Study) -> bool:
        """Record a study's final state, unless it has one already (another gateway replica
        cancelled or finished it first): a finished study is never changed again. Returns
        whether this write took effect."""
        study = _without_trials(study)
        study.updated_at.CopyFrom(now_ts())
        return self._write(studies.update().where(studies.c.id == study.id, studies.c.state.not_in(TERMINAL_STUDY))
                           .values(state=study.state, blob=study.SerializeToString())) > 0

    def study(self, study_id: str, with_trials: bool = True) -> common_pb2.Study | None:
        study = self.header(study_id)
        if study is None:
            return None
        if with_trials:
            study.trials.extend(self.trials(study_id))
            count_held_trials(study)
        else:
            self.count_trials([study])
        return study

    def count_trials(self, listed: list[common_pb2.Study]) -> None:
        """Set trial_count, finished_trial_count and best_objective_value of studies read
        without their trials (two queries for the lot)."""
        by_id = {s.id: s for s in listed}
        if not by_id:
            return
        rows = self._all(sa.select(trials.c.study_id, trials.c.status, sa.func.count())
                         .where(trials.c.study_id.in_(sorted(by_id))).group_by(trials.c.study_id, trials.c.status))
        for study_id, status, count in rows:
            by_id[study_id].trial_count += int(count)
            if status in TERMINAL_TRIAL:
                by_id[study_id].finished_trial_count += int(count)
        best = {s.best_trial_id: s for s in listed if s.best_trial_id}
        for trial in self.trials_by_id(sorted(best)) if best else []:
            best[trial.id].best_objective_value = trial.objective_value

    def header(self, study_id: str) -> common_pb2.Study | None:
        """The study's own row: no trials, and trial_count left 0 (counting is O(trials); the
        paths that run for every trial event need only the study's spec and state)."""
        row = self._one(sa.select(studies.c.blob).where(studies.c.id == study_id))
        return common_pb2.Study.FromString(row[0]) if row else None

    def existing_study(self, study_id: str, with_trials: bool = True) -> common_pb2.Study:
        """A study the caller knows exists (its own id, a trial's study): KeyError otherwise."""
        study = self.study(study_id, with_trials)
        if study is None:
            raise KeyError(f"no study {study_id!r} in the store")
        return study

    def study_by_request(self, request_id: str) -> str | None:
        row = self._one(sa.select(studies.c.id).where(studies.c.request_id == request_id))
        return row[0] if row else None

    def trace_info(self, study_id: str) -> tuple[str, float]:
        """(traceparent of the study's root span, wall-clock start)."""
        row = self._one(sa.select(studies.c.traceparent, studies.c.started).where(studies.c.id == study_id))
        if row is None:
            raise KeyError(f"no study {study_id!r} in the store")
        return str(row[0]), float(row[1])

    def list_studies(self, limit: int, before: float | None, tenant: str) -> list[tuple[float, common_pb2.Study]]:
        """One tenant's studies, newest first, created before `before`."""
        query = sa.select(studies.c.created, studies.c.blob).where(studies.c.tenant == tenant)
        if before is not None:
            query = query.where(studies.c.created < before)
        rows = self._all(query.order_by(studies.c.created.desc()).limit(limit))
        listed = [(created, common_pb2.Study.FromString(blob)) for created, blob in rows]
        self.count_trials([study for _, study in listed])
        return listed

    def studies_in_state(self, *states: int) -> list[str]:
        return [r[0] for r in self._all(sa.select(studies.c.id).where(studies.c.state.in_(states)).order_by(studies.c.created))]

    def unfinished_specs(self) -> list[tuple[str, common_pb2.StudySpec]]:
        """(id, spec) of every study not yet finished: what still needs its artifacts."""
        rows = self._all(sa.select(studies.c.id, studies.c.blob).where(studies.c.state.not_in(TERMINAL_STUDY)))
        return [(row[0], common_pb2.Study.FromString(row[1]).spec) for row in rows]

    def specs(self, study_ids: set[str]) -> dict[str, common_pb2.StudySpec]:
        """Each named study's spec (one query; missing ids are left out)."""
        if not study_ids:
            return {}
        rows = self._all(sa.select(studies.c.id, studies.c.blob).where(studies.c.id.in_(sorted(study_ids))))
        return {row[0]: common_pb2.Study.FromString(row[1]).spec for row in rows}

    def tenant_studies_not_in_state(self, tenant: str, *states: int) -> list[str]:
        """A tenant's study ids whose state is none of `states` (its running ones, say)."""
        return [r[0] for r in self._all(sa.select(studies.c.id).where(
            studies.c.tenant == tenant, studies.c.state.not_in(states)).order_by(studies.c.created))]

    # trials --------------------------------------------------------------------------------
    def insert_trial(self, trial: common_pb2.Trial) -> None:
        self._write(trials.insert().values(id=trial.id, study_id=trial.study_id, number=trial.number, status=trial.status,
                                           blob=trial.SerializeToString()))

    def save_trial(self, trial: common_pb2.Trial) -> bool:
        """Store a trial's new state, unless the stored one is final already: a finished trial is
        never changed again, so a late writer (a second gateway replica cancelling while the
        leader records a result, a redelivered event) cannot undo an outcome. Returns whether
        this write took effect."""
        return self._write(trials.update().where(trials.c.id == trial.id, trials.c.status.not_in(TERMINAL_TRIAL))
                           .values(status=trial.status, blob=trial.SerializeToString())) > 0

    def record_test_scores(self, trial: common_pb2.Trial) -> bool:
        """Add a succeeded trial's test scores (the one change a finished trial takes, once: a
        trial that has them keeps the first). Returns whether this write took effect."""
        stored = self.trial(trial.id)
        if stored is None or stored.status != common_pb2.TRIAL_STATUS_SUCCEEDED or stored.test_metrics:
            return False
        stored.test_metrics.update(trial.test_metrics)
        stored.test_objective_value = trial.test_objective_value
        stored.test_examples = trial.test_examples
        return self._write(trials.update().where(trials.c.id == trial.id, trials.c.status == common_pb2.TRIAL_STATUS_SUCCEEDED)
                           .values(blob=stored.SerializeToString())) > 0

    def trial(self, trial_id: str) -> common_pb2.Trial | None:
        row = self._one(sa.select(trials.c.blob).where(trials.c.id == trial_id))
        return common_pb2.Trial.FromString(row[0]) if row else None

    def trials_of_running_studies(self, *statuses: int) -> list[common_pb2.Trial]:
        """Trials in these states across every running study, oldest study first (for packing)."""
        rows = self._all(
            sa.select(trials.c.blob).join(studies, studies.c.id == trials.c.study_id)
            .where(studies.c.state == common_pb2.STUDY_STATE_RUNNING, trials.c.status.in_(statuses))
            .order_by(studies.c.created, trials.c.number))
        return [common_pb2.Trial.FromString(r[0]) for r in rows]

    def running_trial_counts(self) -> tuple[dict[int, int], int]:
        """Trials of running studies by status, and how many of the queued ones no trainer
        holds yet (for the metrics)."""
        rows = self._all(
            sa.select(trials.c.status, sa.func.count()).join(studies, studies.c.id == trials.c.study_id)
            .where(studies.c.state == common_pb2.STUDY_STATE_RUNNING).group_by(trials.c.status))
        counts = {int(status): int(count) for status, count in rows}
        unplaced = sum(not t.assigned_worker_id for t in self.trials_of_running_studies(common_pb2.TRIAL_STATUS_QUEUED))
        return counts, unplaced

    def trial_count(self, study_id: str) -> int:
        row = self._one(sa.select(sa.func.count()).select_from(trials).where(trials.c.study_id == study_id))
        return int(row[0]) if row else 0

    def trials_page(self, study_id: str, from_number: int, limit: int | None) -> list[common_pb2.Trial]:
        """Up to `limit` (None: all) of a study's trials, numbers `from_number` and up, in order."""
        rows = self._all(sa.select(trials.c.blob).where(trials.c.study_id == study_id, trials.c.number >= from_number)
                         .order_by(trials.c.number).limit(limit))
        return [common_pb2.Trial.FromString(r[0]) for r in rows]

    def trials_by_id(self, trial_ids: list[str]) -> list[common_pb2.Trial]:
        """These trials as they are now (unknown ids left out), by trial number."""
        rows = self._all(sa.select(trials.c.blob).where(trials.c.id.in_(trial_ids)).order_by(trials.c.number))
        return [common_pb2.Trial.FromString(r[0]) for r in rows]

    def trained_trials(self, limit: int) -> list[tuple[common_pb2.StudySpec, common_pb2.Trial]]:
        """The most recent `limit` succeeded trials that recorded how long they trained, each
        with its study's spec (for the cost model)."""
        rows = self._all(
            sa.select(trials.c.study_id, trials.c.blob).join(studies, studies.c.id == trials.c.study_id)
            .where(trials.c.status == common_pb2.TRIAL_STATUS_SUCCEEDED)
            .order_by(studies.c.created.desc(), trials.c.number.desc()).limit(limit))
        specs: dict[str, common_pb2.StudySpec] = {}
        out = []
        for study_id, blob in rows:
            trial = common_pb2.Trial.FromString(blob)
            if trial.actual_seconds <= 0:
                continue
            if study_id not in specs:
                header = self.header(study_id)
                specs[study_id] = header.spec if header is not None else common_pb2.StudySpec()
            out.append((specs[study_id], trial))
        return out

    def trials(self, study_id: str) -> list[common_pb2.Trial]:
        rows = self._all(sa.select(trials.c.blob).where(trials.c.study_id == study_id).order_by(trials.c.number))
        return [common_pb2.Trial.FromString(r[0]) for r in rows]


def count_held_trials(study: common_pb2.Study) -> None:
    """Set trial_count, finished_trial_count and best_objective_value from the trials it holds
    (all of them); StudyStore.count_trials does the same from the database."""
    study.trial_count = len(study.trials)
    study.finished_trial_count = sum(t.status in TERMINAL_TRIAL for t in study.trials)
    study.best_objective_value = next((t.objective_value for t in study.trials if t.id == study.best_trial_id), 0.0)


def _without_trials(study: common_pb2.Study) -> common_pb2.Study:
    copy = common_pb2.Study()
    copy.CopyFrom(study)
    del copy.trials[:]
    copy.trial_count = copy.finished_trial_count = 0  # counted when read
    copy.best_objective_value = 0.0
    return copy
