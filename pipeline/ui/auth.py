"""Signing in to the explorer: a project API key or the operator's admin token, typed into a form
and remembered in the session cookie (signed, HTTP-only, ``SameSite=Lax``, path ``/ui``).

The cookie never holds the key itself: a project session keeps the key's id, checked on every
request (a revoked key ends its sessions at once); an operator session keeps a digest of the
admin token, so changing ``PATTERNS_ADMIN_TOKEN`` ends them. Pages then read under the key's
project's row-level security, the same functions as the read API.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select

from pipeline.api.deps import DB, call
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import ApiKey, Project
from pipeline.intake.apikeys import Principal, authenticate
from pipeline.settings import Settings

#: Longest sign-in form body read, in bytes (a key is about 50 characters).
MAX_FORM_BYTES = 4096
#: Session keys.
KIND, KEY_ID, TOKEN = "kind", "key_id", "token"


class SignInRequired(Exception):
    """The page needs a signed-in project (or operator) session; ``operator`` says which."""

    def __init__(self, operator: bool = False) -> None:
        super().__init__("sign in required")
        self.operator = operator


@dataclass(frozen=True)
class Operator:
    """A session signed in with the admin token."""


def token_digest(token: str) -> str:
    """What an operator session keeps of the admin token (SHA-256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def admin_token(settings: Settings) -> str | None:
    """The configured admin token; ``None`` when unset or empty (operator pages are closed)."""
    token = settings.admin_token
    return token.get_secret_value() if token and token.get_secret_value() else None


def is_admin_token(settings: Settings, presented: str) -> bool:
    """Whether ``presented`` is the configured admin token (constant-time compare)."""
    token = admin_token(settings)
    return token is not None and hmac.compare_digest(presented.encode(), token.encode())


def principal_of_key_id(db: Database, key_id: int) -> Principal | None:
    """The project of API key ``key_id`` while it is not revoked. Reads across projects on
    purpose, as :func:`pipeline.api.deps.principal` does: the key is what names the project."""
    with db.session(ALL_PROJECTS) as session:
        row = session.execute(
            select(ApiKey.id, ApiKey.project_id, Project.name)
            .join(Project, Project.id == ApiKey.project_id)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        ).first()
    return None if row is None else Principal(key_id=row[0], project_id=row[1], project_name=row[2])


def check_key(db: Database, key: str) -> Principal | None:
    """The principal of a presented project key (``None``: unknown or revoked)."""
    with db.session(ALL_PROJECTS) as session:
        return authenticate(session, key)


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (first value of each field);
    empty when it is larger than :data:`MAX_FORM_BYTES`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def start_session(request: Request, who: Principal | Operator, settings: Settings) -> None:
    """Remember ``who`` in a fresh session (whatever was there is dropped)."""
    request.session.clear()
    if isinstance(who, Operator):
        request.session.update({KIND: "operator", TOKEN: token_digest(admin_token(settings) or "")})
    else:
        request.session.update({KIND: "project", KEY_ID: who.key_id})


async def project_principal(request: Request, db: DB) -> Principal:
    """The signed-in project; :class:`SignInRequired` when the session has none (or its key
    was revoked since)."""
    session = request.session
    if session.get(KIND) == "project" and isinstance(session.get(KEY_ID), int):
        found = await call(principal_of_key_id, db, session[KEY_ID])
        if found is not None:
            return found
        session.clear()
    raise SignInRequired()


async def operator(request: Request) -> Operator:
    """The signed-in operator; :class:`SignInRequired` unless the session holds the current
    admin token's digest."""
    settings: Settings = request.app.state.pipeline.settings
    token = admin_token(settings)
    session = request.session
    if (
        token is not None
        and session.get(KIND) == "operator"
        and hmac.compare_digest(str(session.get(TOKEN, "")), token_digest(token))
    ):
        return Operator()
    raise SignInRequired(operator=True)


def session_kind(request: Request) -> str | None:
    """``"project"``, ``"operator"`` or ``None``, as the session says (unchecked: for the
    navigation bar only)."""
    kind = request.session.get(KIND)
    return kind if kind in ("project", "operator") else None


def same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this server: its ``Origin`` (browsers send it
    with every POST), when present, names this host. A cross-site post (``SameSite=Lax`` already
    keeps the cookie off it) cannot sign anyone in or out."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urllib.parse.urlsplit(origin).netloc == request.headers.get("host", "")


def safe_next(request: Request, target: str | None) -> str | None:
    """``target`` when it is a path inside the explorer (no other host, no scheme), else
    ``None``: the sign-in form's ``next`` cannot send anyone elsewhere."""
    root = request.scope.get("root_path", "")
    if not target or not target.startswith(root + "/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 0x20 for c in target):
        return None
    parts = urllib.parse.urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


ProjectViewer = Annotated[Principal, Depends(project_principal)]
OperatorViewer = Annotated[Operator, Depends(operator)]
