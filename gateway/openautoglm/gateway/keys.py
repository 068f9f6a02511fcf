"""API keys: who may call the public API, for which tenant, with which role.

A key is a random secret (`oag_` + 32 random bytes, URL-safe base64) shown to its creator once;
the gateway keeps only its SHA-256 (a secret of that entropy needs no slow hash), with the
tenant, the role, a label and the revocation time, in the gateway's database (database.py). Every call
looks its key up, so a revocation takes effect on the next call, with no restart.

The first key: on a fresh database the gateway creates an admin key for tenant `default` and
writes its secret to a file only the user can read (`<data dir>/api-key`, mode 0600), which the
CLI and the examples read; or, in compose and Kubernetes, it registers the secret mounted from a
Secret (`OPENAUTOGLM_BOOTSTRAP_API_KEY`).
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import Engine

from openautoglm.gateway.database import DEFAULT_TENANT, api_keys
from openautoglm.gateway.store import engine_for
from openautoglm.v1 import keys_pb2

COLUMNS = (api_keys.c.id, api_keys.c.tenant, api_keys.c.role, api_keys.c.name, api_keys.c.created, api_keys.c.revoked)
SECRET_PREFIX = "oag_"
BOOTSTRAP_KEY_VARIABLE = "OPENAUTOGLM_BOOTSTRAP_API_KEY"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_NAME_LENGTH = 128


class KeyRefused(ValueError):
    """A key request that cannot be honoured; the message names the field."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its tenant and its role."""

    key_id: str
    tenant: str
    role: int


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class KeyStore:
    def __init__(self, where: Path | Engine):
        if isinstance(where, Path):
            where.parent.mkdir(parents=True, exist_ok=True)
        self.engine = engine_for(where)

    def close(self) -> None:
        self.engine.dispose()

    def principal(self, secret: str) -> Principal | None:
        """The live key with this secret, or None (unknown or revoked)."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(api_keys.c.id, api_keys.c.tenant, api_keys.c.role).where(
                api_keys.c.hash == digest(secret), api_keys.c.revoked.is_(None))).first()
        return Principal(row[0], row[1], int(row[2])) if row else None

    def create(self, tenant: str, role: int, name: str = "", secret: str | None = None) -> tuple[keys_pb2.ApiKey, str]:
        """A new key (and its secret); `secret` registers a given one (the bootstrap Secret)."""
        if not TENANT_PATTERN.match(tenant):
            raise KeyRefused("tenant: letters, digits, '.', '-' and '_' only, 1 to 64 of them")
        if role not in (keys_pb2.ROLE_READER, keys_pb2.ROLE_MEMBER, keys_pb2.ROLE_ADMIN):
            raise KeyRefused("role: ROLE_READER, ROLE_MEMBER or ROLE_ADMIN")
        if len(name) > MAX_NAME_LENGTH:
            raise KeyRefused(f"name: at most {MAX_NAME_LENGTH} characters")
        secret = secret or SECRET_PREFIX + secrets.token_urlsafe(32)
        key_id = "key-" + uuid.uuid4().hex[:12]
        with self.engine.begin() as connection:
            connection.execute(api_keys.insert().values(id=key_id, hash=digest(secret), tenant=tenant, role=role, name=name,
                                                        created=time.time()))
        found = self.key(key_id)
        assert found is not None
        return found, secret

    def key(self, key_id: str) -> keys_pb2.ApiKey | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(*COLUMNS).where(api_keys.c.id == key_id)).first()
        return self._message(row) if row else None

    def list(self) -> list[keys_pb2.ApiKey]:
        with self.engine.connect() as connection:
            rows = list(connection.execute(sa.select(*COLUMNS).order_by(api_keys.c.created)))
        return [self._message(row) for row in rows]

    def revoke(self, key_id: str) -> keys_pb2.ApiKey | None:
        with self.engine.begin() as connection:
            connection.execute(api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked.is_(None))
                               .values(revoked=time.time()))
        return self.key(key_id)

    def empty(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one() == 0

    def bootstrap(self, key_file: Path) -> None:
        """Make sure an admin can get in: register the Secret's key (compose, Kubernetes), and on
        a database with no keys create one for tenant `default` in `key_file` (mode 0600).
        Replicas starting together on one database may race here: one registers, the others
        find it done."""
        mounted = os.environ.get(BOOTSTRAP_KEY_VARIABLE, "").strip()
        if mounted:
            if self.principal(mounted) is None:
                try:
                    self.create(DEFAULT_TENANT, keys_pb2.ROLE_ADMIN, "bootstrap (secret)", secret=mounted)
                except sa.exc.IntegrityError:
                    pass  # another replica registered it a moment ago
            return
        if not self.empty():
            return
        existing = key_file.read_text().strip() if key_file.is_file() else ""
        try:
            key, secret = self.create(DEFAULT_TENANT, keys_pb2.ROLE_ADMIN, "bootstrap", secret=existing or None)
        except sa.exc.IntegrityError:
            return  # another replica registered the file's key a moment ago
        if not existing:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another replica wrote its key first: that one is the key
                self.revoke(key.id)
                return
            with os.fdopen(fd, "w") as handle:
                handle.write(secret + "\n")

    @staticmethod
    def _message(row) -> keys_pb2.ApiKey:
        key = keys_pb2.ApiKey(id=row[0], tenant=row[1], role=keys_pb2.Role.Name(int(row[2])), name=row[3])
        key.created_at.CopyFrom(_timestamp(row[4]))
        if row[5] is not None:
            key.revoked_at.CopyFrom(_timestamp(row[5]))
        return key
