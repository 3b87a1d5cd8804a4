"""Schemathesis against the OpenAPI schema of ``patterns serve``: every operation (the live
feed's stream excepted) is called with examples generated from its schema, valid and invalid,
with a project's API key and the admin token; none may answer a 5xx, and every answer must use
a status code and content type its operation documents.

``PATTERNS_TEST_SCHEMA_EXAMPLES`` sets the examples per operation and mode (default 120:
about 1,900 requests in all); ``-s`` prints the count per status.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.intake.apikeys import create_api_key
from pipeline.settings import Settings
from workers.app import make_celery
from workers.dispatch import CeleryDispatcher

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("PATTERNS_TEST_SCHEMA_EXAMPLES", "120"))
#: Schema-valid requests, then requests that break the schema (wrong types, missing fields).
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
ADMIN = "admin-token-for-schema-fuzz"


@pytest.fixture()
def api_schema(db: Database, redis_url: str, embedder: Any) -> Any:
    """The OpenAPI schema of an app on the test database, Redis and the real embedder."""
    settings = Settings(
        database_url=None, redis_url=redis_url, github_webhook_secret="schema-fuzz",
        admin_token=ADMIN,
    )  # type: ignore[call-arg]  # fmt: skip
    dispatcher = CeleryDispatcher(make_celery(settings), retry=False)
    app = create_app(settings, db=db, dispatcher=dispatcher, embedder=embedder)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture()
def api_key(db: Database) -> str:
    """A key of project ``acme/widgets``."""
    with db.session(ALL_PROJECTS) as s:
        _, key = create_api_key(s, "acme/widgets", "schema fuzz")
    return key


def _operations(api_schema: Any) -> list[Any]:
    """Every operation of the schema but the live feed (a stream that does not end)."""
    out = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if not operation.path.endswith("/events"):
            out.append(operation)
    return out


def test_no_operation_answers_5xx_or_undocumented(api_schema: Any, api_key: str) -> None:
    # schemathesis's pytest loader does not run under pytest 9 (it reads Function._nodeid):
    # the operations' hypothesis strategies are driven here instead.
    statuses: Counter[int] = Counter()
    skipped: list[str] = []
    operations = _operations(api_schema)
    assert {"/v1/interactions", "/webhooks/github", "/v1/patterns/search"} <= {
        op.path for op in operations
    }
    for operation, mode in itertools.product(operations, MODES):

        @given(case=operation.as_strategy(generation_mode=mode))
        @hsettings(
            max_examples=EXAMPLES, deadline=None, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def call(case: Any) -> None:
            token = ADMIN if case.path in ("/v1/costs", "/metrics") else api_key
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"},
                checks=[not_a_server_error, status_code_conformance, content_type_conformance],
            )
            statuses[response.status_code] += 1

        try:
            call()
        except Unsatisfiable:  # negative mode on an operation with nothing to break
            assert mode is GenerationMode.NEGATIVE, operation.path
            skipped.append(operation.path)
    counts = dict(sorted(statuses.items()))
    print(f"schema fuzz: {sum(counts.values())} requests, statuses {counts}; no invalid {skipped}")
    assert sum(statuses.values()) >= len(operations) * min(EXAMPLES, 10)


def test_error_id_past_bigint_is_422_not_500(api_schema: Any, api_key: str) -> None:
    """Found by the schema fuzz: an id past PostgreSQL's bigint reached the query (a 500)."""
    operation = api_schema["/v1/typescript-errors/{error_id}/{verdict}"]["POST"]
    case = operation.Case(path_parameters={"error_id": 2**63, "verdict": "accept"})
    response = case.call(headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 422, response.text
    assert "error_id" in response.text
