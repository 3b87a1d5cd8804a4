"""Reviewing suggested fixes over HTTP: ``POST /v1/typescript-errors/{id}/accept|reject``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import CodeAnalysis, TypeScriptError
from pipeline.errorfix.parsing import TsDiagnostic
from pipeline.errorfix.store import acceptance, store_diagnostics
from pipeline.intake.apikeys import create_api_key
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(
    db: Database, live_server: Callable[[Any], AbstractContextManager[str]]
) -> Iterator[httpx.Client]:
    app = create_app(Settings(database_url=None, redis_url=None), db=db)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def _error_with_suggestion(db: Database, project: str, suggest: bool = True) -> int:
    diag = TsDiagnostic(
        project, "a.ts", 1, 7, "TS2322", f"Type 'string' ... ({project})", 'const x: number = "a";'
    )
    store_diagnostics(db, [diag])
    with db.session(ALL_PROJECTS) as s:
        error = s.scalars(
            select(TypeScriptError).where(TypeScriptError.error_message == diag.error_message)
        ).one()
        if suggest:
            error.status = "ai_suggested"
            fix = CodeAnalysis(
                project_id=error.project_id,
                typescript_error_id=error.id,
                error_code="TS2322",
                error_message=diag.error_message,
                fixed_code="const x: number = 1;",
            )
            s.add(fix)
        return error.id


def test_accept_and_reject_with_the_projects_key(db: Database, client: httpx.Client) -> None:
    with db.session(ALL_PROJECTS) as s:
        _, key = create_api_key(s, "acme/web", "tests")
    auth = {"Authorization": f"Bearer {key}"}
    first = _error_with_suggestion(db, "acme/web")
    other = _error_with_suggestion(db, "other/repo")
    assert client.post(f"/v1/typescript-errors/{first}/accept").status_code == 401
    ok = client.post(f"/v1/typescript-errors/{first}/accept", headers=auth)
    assert ok.status_code == 200 and ok.json() == {"id": first, "status": "accepted"}
    assert client.post(f"/v1/typescript-errors/{other}/accept", headers=auth).status_code == 403
    assert client.post("/v1/typescript-errors/999999/reject", headers=auth).status_code == 404
    assert client.post(f"/v1/typescript-errors/{first}/maybe", headers=auth).status_code == 422
    with db.session(ALL_PROJECTS) as s:
        assert (
            s.scalar(select(CodeAnalysis.status).where(CodeAnalysis.typescript_error_id == first))
            == "accepted"
        )
        assert s.get(TypeScriptError, other).status == "ai_suggested"  # type: ignore[union-attr]
    assert acceptance(db).accepted == 1
    rejected = client.post(f"/v1/typescript-errors/{first}/reject", headers=auth)
    assert rejected.json() == {"id": first, "status": "rejected"}
    report = acceptance(db).as_dict()
    assert {k: report[k] for k in ("accepted", "rejected", "acceptance_rate", "checked")} == {
        "accepted": 0, "rejected": 1, "acceptance_rate": 0.0, "checked": 0,
    }  # fmt: skip
    assert report["by_check"] == {"unchecked": 2}  # no tsc ran on these hand-made fixes


def test_review_without_a_suggestion_is_409(db: Database, client: httpx.Client) -> None:
    with db.session(ALL_PROJECTS) as s:
        _, key = create_api_key(s, "acme/web", "tests")
    error_id = _error_with_suggestion(db, "acme/web", suggest=False)
    answer = client.post(
        f"/v1/typescript-errors/{error_id}/reject", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 409
    with db.session(ALL_PROJECTS) as s:
        assert s.get(TypeScriptError, error_id).status == "pending"  # type: ignore[union-attr]
