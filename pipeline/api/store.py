"""The read side of the pattern store, for the key's project only: ``GET /v1/projects/me``,
``GET /v1/patterns/search``, ``GET /v1/projects/{id}/patterns`` and ``GET /v1/projects/{id}/graph``.

Every query runs under the key's project's row-level security (and names the project in its
WHERE clause as well); another project's id answers 404, as if it did not exist.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from pipeline.api.deps import DB, Caller, State, call, get_embedder
from pipeline.db.status import ValidationStatus
from pipeline.errors import MalformedInputError
from pipeline.extract.schemas import PatternType
from pipeline.intake.apikeys import Principal
from pipeline.store.browse import MAX_NODES, MAX_PAGE, Graph, Page, list_patterns, project_graph
from pipeline.store.search import MAX_K, search

router = APIRouter(tags=["store"])


class ProjectOut(BaseModel):
    """The project an API key belongs to."""

    id: uuid.UUID
    name: str


class SearchOut(BaseModel):
    """Search results, best first: ``score`` in [0, 1] (``1 - cosine distance / 2``)."""

    results: list[dict[str, Any]]


class PageOut(BaseModel):
    """One page of active patterns, oldest first; ``next_cursor`` fetches the next."""

    items: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as `cursor`; null on the last page.")


class GraphOut(BaseModel):
    """Active patterns (``nodes``) and the relationships between them (``edges``)."""

    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


def own_project(project_id: uuid.UUID, who: Principal) -> uuid.UUID:
    """The path's project when it is the key's; 404 otherwise (another project's id reveals
    nothing, not even that it exists)."""
    if project_id != who.project_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such project")
    return project_id


TypeFilter = Annotated[PatternType | None, Query(alias="type", description="Pattern type.")]
StatusFilter = Annotated[ValidationStatus | None, Query(description="Validation status.")]


@router.get("/v1/projects/me", response_model=ProjectOut, responses={401: {}})
async def project_me(who: Caller) -> ProjectOut:
    """The key's project."""
    return ProjectOut(id=who.project_id, name=who.project_name)


@router.get("/v1/patterns/search", response_model=SearchOut, responses={401: {}})
async def search_patterns(
    state: State,
    db: DB,
    who: Caller,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="What to look for.")],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    type_: TypeFilter = None,
    status_: Annotated[ValidationStatus | None, Query(alias="status")] = None,
) -> SearchOut:
    """The key's project's active patterns nearest the text ``q`` (cosine distance over the HNSW
    index), with where each came from. Each hit is recorded as a usage."""
    embedder = await get_embedder(state)
    vector = (await call(embedder.encode, [q]))[0]
    hits = await call(
        search, db, vector.tolist(), project_id=who.project_id, k=k, type_=type_,
        status=status_.value if status_ else None, used_by="search:api", query=q,
    )  # fmt: skip
    return SearchOut(results=[h.as_json() for h in hits])


@router.get(
    "/v1/projects/{project_id}/patterns",
    response_model=PageOut,
    responses={401: {}, 404: {"description": "not the key's project"}, 422: {}},
)
async def project_patterns(
    project_id: uuid.UUID,
    db: DB,
    who: Caller,
    type_: TypeFilter = None,
    status_: Annotated[ValidationStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PageOut:
    """The project's active patterns, oldest first, ``limit`` a page (keyset pagination)."""
    pid = own_project(project_id, who)
    try:
        page: Page = await call(
            list_patterns, db, pid, type_=type_, status=status_.value if status_ else None,
            limit=limit, cursor=cursor,
        )  # fmt: skip
    except MalformedInputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return PageOut(items=page.items, next_cursor=page.next_cursor)


@router.get(
    "/v1/projects/{project_id}/graph",
    response_model=GraphOut,
    responses={401: {}, 404: {"description": "not the key's project"}},
)
async def graph(
    project_id: uuid.UUID,
    db: DB,
    who: Caller,
    max_nodes: Annotated[int, Query(ge=1, le=MAX_NODES)] = 500,
) -> GraphOut:
    """The project's active patterns (the strongest ``max_nodes``) and their relationships:
    node and edge types, strengths and counts."""
    result: Graph = await call(project_graph, db, own_project(project_id, who), max_nodes=max_nodes)
    return GraphOut(nodes=result.nodes, edges=result.edges)
