"""Storing normalised input: projects, members, interactions (the outbox rows, ``received``) and
``webhook_deliveries``, idempotently, inside the caller's transaction.

The same input stored twice leaves the rows it left once: interactions are unique on their
idempotency key (``github:<X-GitHub-Delivery>``, the client's key, or a content hash) and
deliveries on their delivery id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.models import Interaction, Project, ProjectMember, WebhookDelivery
from pipeline.db.status import DeliveryOutcome, EventType, InteractionStatus
from pipeline.intake.normalize import Normalized, NormalizedInteraction, SkippedDelivery
from pipeline.store.events import NewEvent, lock_projects, record


@dataclass(frozen=True)
class StoreResult:
    """What :func:`store` did: ids of the batch's interactions (new or already there).

    ``new_ids`` are the interactions this call inserted; ``by_key`` maps each idempotency key of
    the batch to its interaction id.
    """

    interaction_ids: list[int]
    created: int
    existing: int
    skipped: int
    new_ids: frozenset[int] = frozenset()
    by_key: dict[str, int] = field(default_factory=dict)


def _ensure_projects(session: Session, items: Sequence[Normalized]) -> dict[str, Any]:
    """Project name → id for the batch's projects, creating missing ones and filling a missing
    ``github_repo_id``.

    A GitHub project is found by its repository id first (DESIGN.md: "GitHub maps by
    ``github_repo_id``"), so deliveries of a renamed or transferred repository keep going to its
    project instead of failing on the unique repository id. Known projects are only read: an
    upsert (``ON CONFLICT DO UPDATE``) would lock the project row until commit, serialising
    every concurrent store of one project, and together with the foreign-key share locks of the
    rows inserted next it deadlocked under concurrent webhook deliveries.
    """
    wanted: dict[str, int | None] = {}
    for item in items:
        name = item.project
        if name is not None:
            wanted.setdefault(name, item.github_repo_id)
            if item.github_repo_id is not None:
                wanted[name] = item.github_repo_id
    if not wanted:
        return {}
    names = sorted(wanted)
    repo_ids = sorted({rid for rid in wanted.values() if rid is not None})

    def known() -> tuple[dict[int, Any], dict[str, tuple[Any, int | None]]]:
        # One round trip for both lookups: this runs in every webhook request.
        match: ColumnElement[bool] = Project.name.in_(names)
        if repo_ids:
            match = or_(match, Project.github_repo_id.in_(repo_ids))
        rows = session.execute(
            select(Project.name, Project.id, Project.github_repo_id).where(match)
        ).all()
        by_repo = {rid: pid for _, pid, rid in rows if rid is not None}
        by_name = {str(name): (pid, rid) for name, pid, rid in rows}
        return by_repo, by_name

    def resolve(
        by_repo: dict[int, Any], by_name: dict[str, tuple[Any, int | None]]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in names:
            rid = wanted[n]
            if rid is not None and rid in by_repo:
                out[n] = by_repo[rid]
            elif n in by_name:
                out[n] = by_name[n][0]
        return out

    by_repo, by_name = known()
    found = resolve(by_repo, by_name)
    missing = [n for n in names if n not in found]
    fill = [
        n for n in names
        if n in by_name and by_name[n][1] is None and wanted[n] is not None
        and wanted[n] not in by_repo
    ]  # fmt: skip
    if missing:
        session.execute(
            insert(Project)
            .values([{"name": n, "github_repo_id": wanted[n]} for n in missing])
            .on_conflict_do_nothing(index_elements=[Project.name])
        )
    for name in fill:
        session.execute(
            update(Project)
            .where(Project.name == name, Project.github_repo_id.is_(None))
            .values(github_repo_id=wanted[name])
        )
    if missing or fill:
        found = resolve(*known())
    return found


def store(session: Session, items: Sequence[Normalized]) -> StoreResult:
    """Store a batch idempotently: projects, members, interactions (status ``received``) and a
    ``webhook_deliveries`` row per delivery. Runs inside the caller's transaction.

    Returns the ids of every interaction of the batch in input order, new or already stored,
    without duplicates.
    """
    projects = _ensure_projects(session, items)
    interactions = [i for i in items if isinstance(i, NormalizedInteraction)]
    skipped = [i for i in items if isinstance(i, SkippedDelivery)]
    _insert_members(session, projects, interactions)
    # The writer locks of the projects (the live feed's order): before their events are added.
    lock_projects(session, {projects[i.project] for i in interactions})
    new_ids = _insert_interactions(session, projects, interactions)
    keys = [i.idempotency_key for i in interactions]
    by_key: dict[str, int] = {}
    if keys:
        by_key = {
            str(key): int(iid)
            for key, iid in session.execute(
                select(Interaction.idempotency_key, Interaction.id).where(
                    Interaction.idempotency_key.in_(keys)
                )
            ).all()
        }
    ids = list(dict.fromkeys(by_key[k] for k in keys))
    _insert_deliveries(session, projects, interactions, skipped, by_key)
    return StoreResult(
        interaction_ids=ids,
        created=len(new_ids),
        existing=len(ids) - len(new_ids),
        skipped=len(skipped),
        new_ids=frozenset(new_ids),
        by_key=by_key,
    )


def _insert_members(
    session: Session, projects: dict[str, Any], interactions: Sequence[NormalizedInteraction]
) -> None:
    """A ``project_members`` row per (project, author) of the batch, if missing."""
    members = {(projects[i.project], i.author) for i in interactions if i.author is not None}
    if members:
        session.execute(
            insert(ProjectMember)
            .values([{"project_id": p, "user_login": a} for p, a in sorted(members, key=str)])
            .on_conflict_do_nothing()
        )


def _insert_interactions(
    session: Session, projects: dict[str, Any], interactions: Sequence[NormalizedInteraction]
) -> list[int]:
    """Insert the interactions whose idempotency key is new (``received``; ``skipped`` when the
    content is blank) with an ``interaction.received`` event each. Returns the ids inserted."""
    if not interactions:
        return []
    rows = [
        {
            "project_id": projects[i.project],
            "source": i.source,
            "kind": i.kind,
            "external_id": i.external_id,
            "author": i.author,
            "idempotency_key": i.idempotency_key,
            "content": i.content,
            "content_hash": i.content_hash,
            "metadata": i.metadata,
            "occurred_at": i.occurred_at,
            "status": (
                InteractionStatus.RECEIVED if i.content.strip() else InteractionStatus.SKIPPED
            ).value,
            "last_error": None if i.content.strip() else "empty content",
        }
        for i in interactions
    ]
    inserted = session.execute(
        insert(Interaction)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[Interaction.idempotency_key])
        .returning(Interaction.id, Interaction.project_id, Interaction.kind, Interaction.status)
    ).all()
    record(
        session,
        [
            NewEvent(
                project_id,
                EventType.INTERACTION_RECEIVED,
                {"interaction_id": int(iid), "kind": kind, "status": status},
            )
            for iid, project_id, kind, status in inserted
        ],
    )
    return [int(row[0]) for row in inserted]


def _insert_deliveries(
    session: Session,
    projects: dict[str, Any],
    interactions: Sequence[NormalizedInteraction],
    skipped: Sequence[SkippedDelivery],
    by_key: dict[str, int],
) -> None:
    """A ``webhook_deliveries`` row per delivery of the batch (stored or skipped), if new."""
    deliveries = [
        {
            "delivery_id": i.delivery_id,
            "event": i.event,
            "action": i.action,
            "project_id": projects.get(i.project) if i.project else None,
            "interaction_id": by_key[i.idempotency_key],
            "outcome": DeliveryOutcome.STORED.value,
            "skip_reason": None,
        }
        for i in interactions
        if i.delivery_id
    ] + [
        {
            "delivery_id": s.delivery_id,
            "event": s.event,
            "action": s.action,
            "project_id": projects.get(s.project) if s.project else None,
            "interaction_id": None,
            "outcome": DeliveryOutcome.SKIPPED.value,
            "skip_reason": s.reason,
        }
        for s in skipped
    ]
    if deliveries:
        session.execute(
            insert(WebhookDelivery)
            .values(deliveries)
            .on_conflict_do_nothing(index_elements=[WebhookDelivery.delivery_id])
        )
