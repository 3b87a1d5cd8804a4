"""Budget reservations are leases: the call in flight renews them, the sweep frees lapsed ones.

:func:`pipeline.spend.reservations.reserve` sets ``lease_expires_at`` to now +
``PATTERNS_BUDGET_LEASE_S``; :func:`renew` pushes it forward while the call runs (a
:func:`heartbeat` thread around a Messages call and its SDK retries; each poll of a Message
Batch); :func:`pipeline.spend.reservations.release_stale` releases only lapsed leases.
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


@contextmanager
def heartbeat(db: Database, reservation_ids: Iterable[uuid.UUID], lease_s: float) -> Iterator[None]:
    """Renew the reservations' leases every ``lease_s / 3`` seconds in a daemon thread while the
    ``with`` block runs (e.g. an SDK call with its retries); stopped when the block exits.

    A failed renewal is logged and tried again at the next beat, never raised: the call itself
    must not fail because the database blinked (the lease covers two missed beats).
    """
    ids = list(reservation_ids)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_s / HEARTBEATS_PER_LEASE):
            try:
                renewed = renew(db, ids, lease_s)
            except Exception as exc:  # logged; the next beat tries again
                log.warning("budget_lease_renew_failed", error=str(exc))
                continue
            if len(renewed) < len(ids):
                log.warning(
                    "budget_lease_lost", reservations=[str(i) for i in ids if i not in renewed]
                )

    thread = threading.Thread(target=beat, name="budget-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
