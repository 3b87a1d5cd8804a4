"""Budget reservations are leases: the call in flight renews them, the sweep frees lapsed ones.

:func:`pipeline.spend.reservations.reserve` sets ``lease_expires_at`` to now +
``PATTERNS_BUDGET_LEASE_S``; :func:`renew` pushes it forward while the call runs (one
:class:`Heartbeat` thread around a Messages batch's calls and their SDK retries; each poll of a
Message Batch); :func:`pipeline.spend.reservations.release_stale` releases only lapsed leases.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import text

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.errors import InvalidValueError

log = structlog.get_logger(__name__)

#: A heartbeat renews every ``lease_s / HEARTBEATS_PER_LEASE`` seconds, so two renewals in a row
#: may fail (a database blip) before the lease lapses.
HEARTBEATS_PER_LEASE = 3


def renew(db: Database, reservation_ids: Iterable[uuid.UUID], lease_s: float) -> set[uuid.UUID]:
    """Set the lease of each reservation still ``reserved`` to end ``lease_s`` seconds from now
    (database time), in one statement.

    Returns:
        The reservations renewed; settled, released or unknown ones are left out (a released
        one lost its money to :func:`~pipeline.spend.reservations.release_stale`).

    Raises:
        InvalidValueError: ``lease_s`` not positive.
    """
    if lease_s <= 0:
        raise InvalidValueError(f"lease_s must be > 0, got {lease_s}")
    ids = list(reservation_ids)
    if not ids:
        return set()
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            text(
                "UPDATE budget_reservations "
                "SET lease_expires_at = now() + make_interval(secs => :lease) "
                "WHERE id = ANY(:ids) AND status = 'reserved' RETURNING id"
            ),
            {"lease": lease_s, "ids": ids},
        ).all()
    return {row[0] for row in rows}


class Heartbeat:
    """One daemon thread that renews the leases of the reservations held right now, every
    ``lease_s / 3`` seconds, in one ``UPDATE`` per beat: calls in flight together (a Messages
    batch's thread pool) :meth:`hold` their reservation before the SDK call and :meth:`drop` it
    after. Use it as a context manager; the thread stops when the block exits.

    A failed renewal is logged and tried again at the next beat, never raised: a call must not
    fail because the database blinked (the lease covers two missed beats).
    """

    def __init__(self, db: Database, lease_s: float) -> None:
        self._db, self._lease_s = db, lease_s
        self._held: set[uuid.UUID] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="budget-lease", daemon=True)

    def hold(self, reservation_id: uuid.UUID) -> None:
        """Renew this reservation from the next beat on."""
        with self._lock:
            self._held.add(reservation_id)

    def drop(self, reservation_id: uuid.UUID) -> None:
        """Stop renewing it (its call is over: settle or release follows)."""
        with self._lock:
            self._held.discard(reservation_id)

    def _beat(self) -> None:
        while not self._stop.wait(self._lease_s / HEARTBEATS_PER_LEASE):
            with self._lock:
                ids = list(self._held)
            if not ids:
                continue
            try:
                renewed = renew(self._db, ids, self._lease_s)
            except Exception as exc:  # logged; the next beat tries again
                log.warning("budget_lease_renew_failed", error=str(exc))
                continue
            if len(renewed) < len(ids):
                log.warning(
                    "budget_lease_lost", reservations=[str(i) for i in ids if i not in renewed]
                )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def heartbeat(db: Database, reservation_ids: Iterable[uuid.UUID], lease_s: float) -> Iterator[None]:
    """Renew the given reservations' leases while the ``with`` block runs (a
    :class:`Heartbeat` holding just them)."""
    with Heartbeat(db, lease_s) as beat:
        for reservation_id in reservation_ids:
            beat.hold(reservation_id)
        yield
