"""Per-project API keys for ``POST /v1/interactions``: generated once, stored as SHA-256 only.

A key looks like ``pp_<43 url-safe characters>`` (32 random bytes from :mod:`secrets`). The
database keeps its SHA-256 hex digest (``api_keys.key_hash``, unique) and its first
:data:`PREFIX_CHARS` characters to recognise it in listings; the key itself is shown once.
SHA-256 without a salt is enough here because the keys are long random strings, not passwords.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.models import ApiKey, Project
from pipeline.errors import MalformedInputError

KEY_PREFIX = "pp_"
#: Characters of the key kept in clear (``api_keys.prefix`` is String(16)).
PREFIX_CHARS = 10


@dataclass(frozen=True)
class Principal:
    """Who an authenticated request acts for: the key's project."""

    key_id: int
    project_id: uuid.UUID
    project_name: str


def generate_key() -> str:
    """A fresh random key, ``pp_`` + 43 url-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 hex digest of the key (64 characters), as stored in ``api_keys.key_hash``."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, project: str, name: str = "default") -> tuple[int, str]:
    """Create a key for ``project`` (created when it does not exist) inside the caller's
    transaction.

    Returns:
        ``(key id, the key in clear)``; the clear key is not stored anywhere.

    Raises:
        MalformedInputError: empty project name.
    """
    project = project.strip()
    if not project:
        raise MalformedInputError("project name is empty")
    session.execute(insert(Project).values(name=project).on_conflict_do_nothing())
    project_id = session.scalar(select(Project.id).where(Project.name == project))
    key = generate_key()
    key_id = session.scalar(
        insert(ApiKey)
        .values(project_id=project_id, name=name, prefix=key[:PREFIX_CHARS], key_hash=hash_key(key))
        .returning(ApiKey.id)
    )
    return int(key_id), key  # type: ignore[arg-type]


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of a presented key, or ``None`` when it is unknown or revoked.

    The lookup is by hash equality on a unique index, so response time does not depend on how
    much of a guessed key is right.
    """
    if not key.startswith(KEY_PREFIX):
        return None
    row = session.execute(
        select(ApiKey.id, ApiKey.project_id, Project.name)
        .join(Project, Project.id == ApiKey.project_id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Principal(key_id=row[0], project_id=row[1], project_name=row[2])


@dataclass(frozen=True)
class KeyInfo:
    """A key as listings show it: never the key, only its first characters."""

    id: int
    project: str
    name: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id, "project": self.project, "name": self.name, "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }  # fmt: skip


def list_keys(session: Session, project: str | None = None) -> list[KeyInfo]:
    """Every key (or ``project``'s), oldest first."""
    query = (
        select(ApiKey.id, Project.name, ApiKey.name, ApiKey.prefix, ApiKey.created_at,
               ApiKey.revoked_at)
        .join(Project, Project.id == ApiKey.project_id)
        .order_by(ApiKey.id)
    )  # fmt: skip
    if project is not None:
        query = query.where(Project.name == project)
    return [KeyInfo(*row) for row in session.execute(query).all()]


def revoke_key(session: Session, key_id: int) -> bool:
    """Revoke key ``key_id`` (its requests get 401 from now on). Returns ``False`` when there is
    no such key or it was revoked already."""
    revoked = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey.id)
    ).first()
    return revoked is not None
