"""The gateway's database: one SQLAlchemy engine over SQLite (the embedded default, one file in
the data dir) or PostgreSQL (for more than one gateway replica), with a schema versioned by
Alembic (`migrations/`).

Every table is defined here, once; `migrate` brings a database to the newest version when the
gateway starts. A SQLite file created before versioning (its columns added by hand at start-up)
is brought to the first version's shape and stamped, so nothing already stored is lost.
"""
from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from openautoglm.common.config import sqlalchemy_url

log = logging.getLogger(__name__)

# The tenant of studies created before tenants existed, and of the first API key.
DEFAULT_TENANT = "default"
MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE_REVISION = "0001"
# A fixed advisory-lock key for schema upgrades on PostgreSQL (a number nothing else uses).
MIGRATION_LOCK = 0x6F6167_6D6967

metadata = sa.MetaData()

# Rows keep the indexed fields as columns and the full protos as blobs, so what is stored is
# exactly what the API returns.
studies = sa.Table(
    "studies", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("state", sa.Integer, nullable=False),
    sa.Column("request_id", sa.String(320), unique=True),
    sa.Column("traceparent", sa.String(64), nullable=False, server_default=""),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("priors", sa.LargeBinary),
    sa.Column("tenant", sa.String(64), nullable=False, server_default=DEFAULT_TENANT),
)
trials = sa.Table(
    "trials", metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("study_id", "number"),
    sa.Index("trials_by_study", "study_id", "number"),
)
sa.Index("studies_by_state", studies.c.state)
sa.Index("trials_by_status", trials.c.status)
sa.Index("studies_by_tenant", studies.c.tenant, studies.c.created)
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("role", sa.Integer, nullable=False),
    sa.Column("name", sa.String(128), nullable=False, server_default=""),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("revoked", sa.Float),
)
# Uploaded datasets and base models (their bytes are in the artifact store, common/artifacts.py).
artifacts = sa.Table(
    "artifacts", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("kind", sa.Integer, nullable=False),
    sa.Column("name", sa.String(128), nullable=False, server_default=""),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    # Set by DeleteArtifact; the row and the bytes go once no running study refers to it.
    sa.Column("deleted", sa.Float),
    sa.Index("artifacts_by_tenant", "tenant", "created"),
)
# Registered model versions: the ModelVersion proto as a blob, its keys as columns.
model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("state", sa.Integer, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    # The trainer serving it while deployed (serving.py), else NULL.
    sa.Column("deployed_on", sa.String(128)),
)
model_aliases = sa.Table(
    "model_aliases", metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


def database_url(url: str, data_dir: Path) -> str:
    """The URL to use: the one configured, else SQLite in the gateway's folder."""
    if url:
        return sqlalchemy_url(url)
    path = data_dir / "gateway" / "studies.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_database(url: str) -> Engine:
    """An engine for `url`, migrated to the newest schema."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    migrate(engine)
    return engine


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(engine: Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision (several gateways starting at once on
    PostgreSQL take turns: the upgrade runs under an advisory lock)."""
    from alembic import command

    config = alembic_config(engine)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        if _unversioned(connection):
            _bring_to_baseline(connection)
            command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, "head")


def _unversioned(connection) -> bool:
    """A database the gateway wrote before its schema had versions."""
    inspector = sa.inspect(connection)
    return inspector.has_table("studies") and not inspector.has_table("alembic_version")


def _bring_to_baseline(connection) -> None:
    """Columns and tables an unversioned database may lack (they were added at start-up then)."""
    inspector = sa.inspect(connection)
    have = {c["name"] for c in inspector.get_columns("studies")}
    if "priors" not in have:
        connection.execute(sa.text("ALTER TABLE studies ADD COLUMN priors BLOB"))
    if "tenant" not in have:
        connection.execute(sa.text(f"ALTER TABLE studies ADD COLUMN tenant TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'"))
    metadata.create_all(connection, tables=[api_keys], checkfirst=True)
    log.info("unversioned database brought to schema revision %s", BASELINE_REVISION)
