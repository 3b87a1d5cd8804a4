"""``GET /v1/projects/{id}/events``: the project's live feed as server-sent events.

Each event is ``id: <pattern_events.id>``, ``event: <type>`` (``interaction.received``,
``pattern.created``, ``pattern.merged``, ``pattern.validated``...) and ``data: <JSON>``. A client
that reconnects with ``Last-Event-ID`` resumes with the event after that id; a new client gets
what happens from now on (``?after=0`` replays everything).

:class:`pipeline.store.live.Feed` keeps one connection that ``LISTEN``s on ``pattern_events``
(the migration 0004 trigger notifies per statement with the project's id, never content) and
wakes that project's streams; each stream then reads its events under the key's project's
row-level security. Without a notification (the listener reconnecting) a stream still polls
every ``feed_poll_s`` seconds.
Event ids of a project become visible in order (:mod:`pipeline.store.events`), so resuming after
an id misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from pipeline.api.deps import DB, Caller, State, call
from pipeline.api.store import own_project
from pipeline.errors import DatabaseUnavailableError
from pipeline.store.events import events_after, last_event_id

log = structlog.get_logger(__name__)

router = APIRouter(tags=["store"])

#: Events read per query while a stream catches up.
PAGE = 500
#: Seconds between keep-alive comments on an idle stream (proxies drop silent connections).
PING_S = 15


@router.get(
    "/v1/projects/{project_id}/events",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
        401: {},
        404: {"description": "not the key's project"},
    },
)
async def project_events(
    project_id: uuid.UUID,
    request: Request,
    state: State,
    db: DB,
    who: Caller,
    last_event: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, description="Replay from after this id.")] = None,
) -> EventSourceResponse:
    """The project's events as server-sent events, resuming after ``Last-Event-ID``."""
    pid = own_project(project_id, who)
    if last_event is not None and last_event.strip().isdigit():
        start = int(last_event)
    elif after is not None:
        start = after
    else:
        start = await call(last_event_id, db, pid)
    return EventSourceResponse(_stream(request, state, db, pid, start), ping=PING_S)


async def _stream(
    request: Request, state: State, db: DB, project_id: uuid.UUID, after: int
) -> AsyncIterator[dict[str, str]]:
    poll_s = state.settings.feed_poll_s
    feed = state.feed
    with feed.subscribe(project_id) if feed else contextlib.nullcontext(asyncio.Event()) as wake:
        while not await request.is_disconnected():
            wake.clear()  # before reading: a notification during the read wakes the next wait
            try:
                events = await call(events_after, db, project_id, after, PAGE)
            except DatabaseUnavailableError as exc:
                # End the stream; the client reconnects with Last-Event-ID and loses nothing.
                log.warning("feed_stream_ended", project=str(project_id), error=str(exc))
                return
            for event in events:
                after = event.id
                yield {"id": str(event.id), "event": event.event_type,
                       "data": json.dumps(event.as_json())}  # fmt: skip
            if len(events) == PAGE:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=poll_s)
