"""Waking live readers: one connection ``LISTEN``s on ``pattern_events`` and wakes the readers
of the project each notification names (:class:`Feed`). The notifications carry a project id and
an event id, never content; readers read the events themselves, under row-level security.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator

import structlog
from sqlalchemy import make_url

from pipeline.store.events import CHANNEL

log = structlog.get_logger(__name__)

#: Seconds before a listener that lost its connection tries again.
RECONNECT_S = 1.0


class Feed:
    """Wakes the streams of a project when Postgres notifies that project's events.

    Args:
        conninfo: a libpq URL to ``LISTEN`` with (the application's role will do: listening needs
            no table rights).
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    @classmethod
    def for_url(cls, url: str) -> Feed:
        """A feed on the database at SQLAlchemy ``url``."""
        libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(libpq)

    def start(self) -> None:
        """Start listening (a task of the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="feed")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscribe(self, project_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever ``project_id`` has new events, for the ``with`` block."""
        wake = asyncio.Event()
        self._waiters.setdefault(project_id, set()).add(wake)
        try:
            yield wake
        finally:
            waiting = self._waiters.get(project_id, set())
            waiting.discard(wake)
            if not waiting:
                self._waiters.pop(project_id, None)

    def notify(self, payload: str) -> None:
        """Wake the streams of the project a notification names (malformed ones are ignored)."""
        try:
            project_id = uuid.UUID(str(json.loads(payload)["project_id"]))
        except (ValueError, KeyError, TypeError):
            log.warning("feed_bad_notification", payload=payload[:200])
            return
        for wake in self._waiters.get(project_id, ()):
            wake.set()

    async def _listen(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    async for note in conn.notifies():
                        self.notify(note.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("feed_listener_lost", error=str(exc).splitlines()[0][:200])
                await asyncio.sleep(RECONNECT_S)
