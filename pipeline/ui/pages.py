"""The project's pages: search and browse, a pattern's page, the graph (and its JSON for
Cytoscape.js), the live feed (and its event stream). Each reads with the read API's functions
under the signed-in key's project's row-level security.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse

from pipeline.api.deps import DB, State, call, get_embedder
from pipeline.api.feed import PING_S, _stream
from pipeline.errors import MalformedInputError
from pipeline.store.browse import list_patterns, project_graph
from pipeline.store.events import last_event_id, recent_events
from pipeline.store.search import search
from pipeline.ui.auth import ProjectViewer, session_kind
from pipeline.ui.data import pattern_detail
from pipeline.ui.render import PATTERN_TYPES, STATUSES, TYPE_COLORS, render

router = APIRouter()

#: Results per search, patterns per browsing page, nodes of the graph.
SEARCH_K, PAGE_SIZE, GRAPH_NODES = 20, 50, 500


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    """A filter's value when it is one of ``allowed``; empty or unknown is no filter."""
    return value if value in allowed else None


@router.get("/", include_in_schema=False)
async def home(request: Request) -> RedirectResponse:
    """The project's search for a project session, the operator page for an operator, else
    the sign-in form."""
    target = {"project": "search", "operator": "ops"}.get(session_kind(request) or "", "signin")
    return RedirectResponse(request.url_for(target).path, status_code=303)


@router.get("/search", response_class=HTMLResponse, name="search")
async def search_page(
    request: Request,
    state: State,
    db: DB,
    who: ProjectViewer,
    q: Annotated[str, Query(max_length=2000)] = "",
    type_: Annotated[str | None, Query(alias="type")] = None,
    status: str | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    hx_target: Annotated[str | None, Header()] = None,
) -> Response:
    """Search the project's patterns (``q``), or browse them, filtered by type and status.
    An htmx request for the results gets the results alone."""
    type_, status = _choice(type_, PATTERN_TYPES), _choice(status, STATUSES)
    query = q.strip()
    context: dict[str, Any] = {
        "q": query,
        "type": type_,
        "status": status,
        "hits": None,
        "page": None,
        "cursor_error": None,
    }
    if query:
        embedder = await get_embedder(state)
        vector = (await call(embedder.encode, [query]))[0]
        hits = await call(
            search,
            db,
            vector.tolist(),
            project_id=who.project_id,
            k=SEARCH_K,
            type_=type_,
            status=status,
            used_by="search:ui",
            query=query,
        )
        context["hits"] = [h.as_json() for h in hits]
    else:
        try:
            context["page"] = await call(
                list_patterns,
                db,
                who.project_id,
                type_=type_,
                status=status,
                limit=PAGE_SIZE,
                cursor=cursor,
            )
        except MalformedInputError:
            context["cursor_error"] = "That page link is not valid any more; showing the first."
            context["page"] = await call(
                list_patterns, db, who.project_id, type_=type_, status=status, limit=PAGE_SIZE
            )
    template = "_results.html" if hx_target == "results" else "search.html"
    return render(request, template, context, who=who)


@router.get("/patterns/{pattern_id}", response_class=HTMLResponse, name="pattern")
async def pattern_page(request: Request, db: DB, who: ProjectViewer, pattern_id: str) -> Response:
    """A pattern: description, evidence, sources, validations, relationships out and in."""
    try:
        pid = uuid.UUID(pattern_id)
    except ValueError:
        pid = None
    detail = await call(pattern_detail, db, who.project_id, pid) if pid else None
    if detail is None:
        return render(
            request,
            "error.html",
            {"title": "No such pattern", "message": "This project has no pattern with that id."},
            who=who,
            status_code=404,
        )
    return render(request, "pattern.html", {"d": detail}, who=who)


@router.get("/graph", response_class=HTMLResponse, name="graph")
async def graph_page(request: Request, who: ProjectViewer) -> Response:
    """The project's graph, drawn in the browser from :func:`graph_json`."""
    return render(request, "graph.html", {}, who=who)


@router.get("/graph.json", name="graph_json")
async def graph_json(db: DB, who: ProjectViewer) -> JSONResponse:
    """The project's strongest patterns and their relationships as Cytoscape.js elements: node
    ``size`` follows strength, ``color`` the type."""
    graph = await call(project_graph, db, who.project_id, max_nodes=GRAPH_NODES)
    nodes = [
        {
            "data": {
                "id": n["id"],
                "label": n["title"],
                "type": n["type"],
                "strength": n["pattern_strength"],
                "size": round(16 + 44 * n["pattern_strength"]),
                "color": TYPE_COLORS.get(n["type"], "#555555"),
            }
        }
        for n in graph.nodes
    ]
    edges = [
        {
            "data": {
                "id": e["id"],
                "source": e["source"],
                "target": e["target"],
                "label": e["type"],
                "width": round(1 + 5 * e["strength"], 1),
            }
        }
        for e in graph.edges
    ]
    return JSONResponse({"nodes": nodes, "edges": edges})


@router.get("/feed", response_class=HTMLResponse, name="feed")
async def feed_page(request: Request, db: DB, who: ProjectViewer) -> Response:
    """The live feed: the latest events, then new ones as they happen."""
    events = await call(recent_events, db, who.project_id)
    after = events[0].id if events else 0
    return render(request, "feed.html", {"events": events, "after": after}, who=who)


@router.get("/events", name="events")
async def events(
    request: Request,
    state: State,
    db: DB,
    who: ProjectViewer,
    after: Annotated[int | None, Query(ge=0)] = None,
    last_event: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> EventSourceResponse:
    """The project's events as server-sent events (the stream of ``GET /v1/projects/{id}/
    events``, authorised by the session instead of a bearer key): after ``Last-Event-ID`` when
    reconnecting, else after ``after``, else from now."""
    if last_event is not None and last_event.strip().isdigit():
        start = int(last_event)
    elif after is not None:
        start = after
    else:
        start = await call(last_event_id, db, who.project_id)
    return EventSourceResponse(_stream(request, state, db, who.project_id, start), ping=PING_S)
