"""Study state, persisted in SQLite (the default; one file under the data dir).

Rows keep the indexed fields as columns and the full `Study` / `Trial` protos as blobs, so the
stored state is exactly what the API returns. Every write commits at once: a gateway restart
resumes running studies from here.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from openautoglm.v1 import common_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
  id TEXT PRIMARY KEY,
  created REAL NOT NULL,
  state INTEGER NOT NULL,
  request_id TEXT UNIQUE,
  traceparent TEXT NOT NULL DEFAULT '',
  started REAL NOT NULL,
  blob BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
  id TEXT PRIMARY KEY,
  study_id TEXT NOT NULL REFERENCES studies(id),
  number INTEGER NOT NULL,
  status INTEGER NOT NULL,
  blob BLOB NOT NULL,
  UNIQUE (study_id, number)
);
CREATE INDEX IF NOT EXISTS trials_by_study ON trials(study_id, number);
"""
# The tenant of studies created before tenants existed, and of the first API key.
DEFAULT_TENANT = "default"


def request_key(tenant: str, request_id: str) -> str:
    """A CreateStudy request id as stored: per tenant, so tenants cannot collide or probe."""
    return f"{tenant}/{request_id}"


# Columns added after the first schema, for databases created before them.
MIGRATIONS = {"studies": {"priors": "BLOB", "tenant": f"TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'"}}


def now_ts() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


class StudyStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        for table, columns in MIGRATIONS.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns.items():
                if column not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    # studies -------------------------------------------------------------------------------
    def insert_study(self, study: common_pb2.Study, request_id: str, traceparent: str,
                     priors: common_pb2.PriorTrials | None = None) -> None:
        study = _without_trials(study)
        self.db.execute(
            "INSERT INTO studies (id, created, state, request_id, traceparent, started, blob, priors, tenant)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (study.id, time.time(), study.state, request_id or None, traceparent, time.time(), study.SerializeToString(),
             (priors or common_pb2.PriorTrials()).SerializeToString(), study.tenant or DEFAULT_TENANT),
        )

    def priors(self, study_id: str) -> common_pb2.PriorTrials:
        row = self.db.execute("SELECT priors FROM studies WHERE id=?", (study_id,)).fetchone()
        return common_pb2.PriorTrials.FromString(row[0] or b"") if row else common_pb2.PriorTrials()

    def save_study(self, study: common_pb2.Study) -> None:
        study = _without_trials(study)
        study.updated_at.CopyFrom(now_ts())
        self.db.execute("UPDATE studies SET state=?, blob=? WHERE id=?", (study.state, study.SerializeToString(), study.id))

    def study(self, study_id: str, with_trials: bool = True) -> common_pb2.Study | None:
        row = self.db.execute("SELECT blob FROM studies WHERE id=?", (study_id,)).fetchone()
        if row is None:
            return None
        study = common_pb2.Study.FromString(row[0])
        if with_trials:
            study.trials.extend(self.trials(study_id))
            study.trial_count = len(study.trials)
        else:
            study.trial_count = self.trial_count(study_id)
        return study

    def trial_count(self, study_id: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM trials WHERE study_id=?", (study_id,)).fetchone()[0])

    def existing_study(self, study_id: str, with_trials: bool = True) -> common_pb2.Study:
        """A study the caller knows exists (its own id, a trial's study): KeyError otherwise."""
        study = self.study(study_id, with_trials)
        if study is None:
            raise KeyError(f"no study {study_id!r} in the store")
        return study

    def study_by_request(self, request_id: str) -> str | None:
        row = self.db.execute("SELECT id FROM studies WHERE request_id=?", (request_id,)).fetchone()
        return row[0] if row else None

    def trace_info(self, study_id: str) -> tuple[str, float]:
        """(traceparent of the study's root span, wall-clock start)."""
        traceparent, started = self.db.execute("SELECT traceparent, started FROM studies WHERE id=?", (study_id,)).fetchone()
        return str(traceparent), float(started)

    def list_studies(self, limit: int, before: float | None, tenant: str) -> list[tuple[float, common_pb2.Study]]:
        """One tenant's studies, newest first, created before `before`."""
        rows = self.db.execute(
            "SELECT created, blob FROM studies WHERE tenant = ? AND created < ? ORDER BY created DESC LIMIT ?",
            (tenant, before if before is not None else float("inf"), limit),
        ).fetchall()
        return [(created, common_pb2.Study.FromString(blob)) for created, blob in rows]

    def studies_in_state(self, *states: int) -> list[str]:
        marks = ",".join("?" * len(states))
        return [r[0] for r in self.db.execute(f"SELECT id FROM studies WHERE state IN ({marks}) ORDER BY created", states)]

    def tenant_studies_not_in_state(self, tenant: str, *states: int) -> list[str]:
        """A tenant's study ids whose state is none of `states` (its running ones, say)."""
        marks = ",".join("?" * len(states))
        return [r[0] for r in self.db.execute(
            f"SELECT id FROM studies WHERE tenant = ? AND state NOT IN ({marks}) ORDER BY created", (tenant, *states))]

    # trials --------------------------------------------------------------------------------
    def insert_trial(self, trial: common_pb2.Trial) -> None:
        self.db.execute(
            "INSERT INTO trials (id, study_id, number, status, blob) VALUES (?,?,?,?,?)",
            (trial.id, trial.study_id, trial.number, trial.status, trial.SerializeToString()),
        )

    def save_trial(self, trial: common_pb2.Trial) -> None:
        self.db.execute("UPDATE trials SET status=?, blob=? WHERE id=?", (trial.status, trial.SerializeToString(), trial.id))

    def trial(self, trial_id: str) -> common_pb2.Trial | None:
        row = self.db.execute("SELECT blob FROM trials WHERE id=?", (trial_id,)).fetchone()
        return common_pb2.Trial.FromString(row[0]) if row else None

    def trials_of_running_studies(self, *statuses: int) -> list[common_pb2.Trial]:
        """Trials in these states across every running study, oldest study first (for packing)."""
        marks = ",".join("?" * len(statuses))
        rows = self.db.execute(
            f"SELECT t.blob FROM trials t JOIN studies s ON s.id = t.study_id "
            f"WHERE s.state = ? AND t.status IN ({marks}) ORDER BY s.created, t.number",
            (common_pb2.STUDY_STATE_RUNNING, *statuses),
        )
        return [common_pb2.Trial.FromString(r[0]) for r in rows]

    def running_trial_counts(self) -> tuple[dict[int, int], int]:
        """Trials of running studies by status, and how many of the queued ones no trainer
        holds yet (for the metrics)."""
        rows = self.db.execute(
            "SELECT t.status, COUNT(*) FROM trials t JOIN studies s ON s.id = t.study_id WHERE s.state = ? GROUP BY t.status",
            (common_pb2.STUDY_STATE_RUNNING,))
        counts = {status: count for status, count in rows}
        unplaced = sum(not t.assigned_worker_id for t in self.trials_of_running_studies(common_pb2.TRIAL_STATUS_QUEUED))
        return counts, unplaced

    def trials_page(self, study_id: str, from_number: int, limit: int) -> list[common_pb2.Trial]:
        """Up to `limit` of a study's trials, numbers `from_number` and up, in order."""
        rows = self.db.execute("SELECT blob FROM trials WHERE study_id=? AND number >= ? ORDER BY number LIMIT ?",
                               (study_id, from_number, limit))
        return [common_pb2.Trial.FromString(r[0]) for r in rows]

    def trials_by_id(self, trial_ids: list[str]) -> list[common_pb2.Trial]:
        """These trials as they are now (unknown ids left out), by trial number."""
        marks = ",".join("?" * len(trial_ids))
        rows = self.db.execute(f"SELECT blob FROM trials WHERE id IN ({marks}) ORDER BY number", trial_ids)
        return [common_pb2.Trial.FromString(r[0]) for r in rows]

    def trials(self, study_id: str) -> list[common_pb2.Trial]:
        rows = self.db.execute("SELECT blob FROM trials WHERE study_id=? ORDER BY number", (study_id,))
        return [common_pb2.Trial.FromString(r[0]) for r in rows]


def _without_trials(study: common_pb2.Study) -> common_pb2.Study:
    copy = common_pb2.Study()
    copy.CopyFrom(study)
    del copy.trials[:]
    return copy
