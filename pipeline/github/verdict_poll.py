"""The I/O of people's verdicts (:mod:`pipeline.github.verdicts` has the rules): the poll that
reads the reactions and replies of the feedback comments we posted (recorded by
:func:`pipeline.github.feedback.record_feedback_comment`) from GitHub and reconciles the
``feedback_verdicts`` ledger and its ``pattern_validations`` rows, one thread per transaction
(:func:`poll_verdicts`)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy import delete, exists, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope
from pipeline.db.models import FeedbackComment, FeedbackVerdict, Pattern, PatternValidation
from pipeline.db.status import ValidationType
from pipeline.errors import PipelineError
from pipeline.github.client import RateLimitedError, Reaction
from pipeline.github.verdicts import (
    CONFIDENCE,
    ListedComment,
    PollSummary,
    Verdict,
    VerdictKey,
    VerdictsClient,
    desired_verdicts,
)
from pipeline.settings import Settings
from pipeline.store.events import NewEvent, lock_projects, record
from pipeline.store.merge import refresh, status_events

log = structlog.get_logger(__name__)

#: Key of the session-level advisory lock that keeps two polls from running at once ("vrdt").
POLL_LOCK_KEY = 0x7672_6474
#: How much earlier than our first comment's recorded time the thread is listed from (GitHub's
#: clock and ours may differ; replies are attributed by GitHub's times).
SINCE_MARGIN = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Thread:
    """An issue or pull request thread holding feedback comments of ours."""

    project_id: uuid.UUID
    repo: str
    issue_number: int


def due_threads(db: Database, window_days: float, limit: int) -> list[Thread]:
    """Threads with a feedback comment posted in the last ``window_days``, least recently
    polled first (never polled before all), at most ``limit``."""
    polled = func.min(
        func.coalesce(
            FeedbackComment.polled_at, literal("-infinity").cast(FeedbackComment.polled_at.type)
        )
    )
    keys = (FeedbackComment.project_id, FeedbackComment.repo, FeedbackComment.issue_number)
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            select(*keys)
            .where(FeedbackComment.posted_at >= func.now() - dt.timedelta(days=window_days))
            .group_by(*keys)
            .order_by(polled, func.min(FeedbackComment.posted_at))
            .limit(limit)
        ).all()
    return [Thread(r[0], r[1], int(r[2])) for r in rows]


def poll_verdicts(db: Database, client: VerdictsClient, settings: Settings) -> PollSummary:
    """One poll (module notes of :mod:`pipeline.github.verdicts`): for each due thread, read its
    reactions and replies, and reconcile its verdicts in one transaction. A thread GitHub refuses
    is an error and the poll goes on; a rate limit stops it. If another poll holds the lock,
    returns at once with ``locked_out``.

    Raises:
        DatabaseUnavailableError: Postgres could not be reached.
    """
    summary = PollSummary()
    with db.engine.connect() as lock_conn:
        got = lock_conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": POLL_LOCK_KEY})
        lock_conn.commit()
        if not got:
            summary.locked_out = True
            return summary
        try:
            for thread in due_threads(
                db, settings.verdicts_window_days, settings.verdicts_max_threads
            ):
                if not _poll_thread(db, client, settings, thread, summary):
                    break
        finally:
            lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": POLL_LOCK_KEY})
            lock_conn.commit()
    log.info("github_verdicts_polled", **summary.as_dict())
    return summary


def _poll_thread(
    db: Database, client: VerdictsClient, settings: Settings, thread: Thread, summary: PollSummary
) -> bool:
    """One thread's part of :func:`poll_verdicts`; ``False`` when a rate limit stops the poll."""
    comments = _listed_comments(db, thread, settings.verdicts_window_days)
    if not comments:
        return True
    where = f"{thread.repo}#{thread.issue_number}"
    try:
        reactions: dict[int, list[Reaction]] = {
            c.comment_id: list(client.comment_reactions(thread.repo, c.comment_id))
            for c in comments
        }
        since = min(c.posted_at for c in comments) - SINCE_MARGIN
        replies = list(client.issue_comments(thread.repo, thread.issue_number, since=since))
    except RateLimitedError as exc:
        summary.rate_limited, summary.retry_after_s = True, exc.retry_after_s
        summary.messages.append(f"{where}: GitHub rate limit, poll stopped")
        log.warning("github_verdicts_rate_limited", thread=where, retry_after_s=exc.retry_after_s)
        return False
    except (PipelineError, KeyError, ValueError, TypeError) as exc:
        summary.errors += 1
        summary.messages.append(f"{where}: {exc}")
        log.warning("github_verdicts_thread_failed", thread=where, error=str(exc))
        _mark_polled(db, thread.project_id, [c.comment_id for c in comments])
        return True
    desired = desired_verdicts(comments, reactions, replies)
    _reconcile(db, settings, thread, [c.comment_id for c in comments], desired, summary)
    summary.threads += 1
    summary.comments += len(comments)
    return True


def _listed_comments(db: Database, thread: Thread, window_days: float) -> list[ListedComment]:
    """Our feedback comments in ``thread`` within the window, with the titles of the listed
    patterns that still exist."""
    with db.session(ProjectScope(thread.project_id)) as session:
        rows = session.scalars(
            select(FeedbackComment).where(
                FeedbackComment.repo == thread.repo,
                FeedbackComment.issue_number == thread.issue_number,
                FeedbackComment.posted_at >= func.now() - dt.timedelta(days=window_days),
            )
        ).all()
        wanted = {uuid.UUID(str(p)) for r in rows for p in r.pattern_ids}
        titles = dict(
            session.execute(select(Pattern.id, Pattern.title).where(Pattern.id.in_(wanted))).all()
        )
    return [
        ListedComment(
            r.comment_id,
            r.posted_at,
            {
                uuid.UUID(str(p)): titles[uuid.UUID(str(p))]
                for p in r.pattern_ids
                if uuid.UUID(str(p)) in titles
            },
        )
        for r in rows
    ]


def _reconcile(
    db: Database,
    settings: Settings,
    thread: Thread,
    comment_ids: list[int],
    desired: dict[VerdictKey, Verdict],
    summary: PollSummary,
) -> None:
    """Make the thread's ledger and validations say what ``desired`` says, in one transaction;
    recompute the touched patterns and append their status events."""
    project_id = thread.project_id
    with db.session(ProjectScope(project_id)) as session:
        lock_projects(session, [project_id])
        session.execute(
            select(FeedbackComment.comment_id)
            .where(FeedbackComment.comment_id.in_(comment_ids))
            .with_for_update()
        )
        existing = {
            (v.comment_id, v.pattern_id, v.login): v
            for v in session.scalars(
                select(FeedbackVerdict).where(FeedbackVerdict.comment_id.in_(comment_ids))
            )
        }
        touched: set[uuid.UUID] = set()
        for key, verdict in desired.items():
            row = existing.get(key)
            if row is None:
                target = _absorbing(session, key[1])
                if target is not None:
                    _add(session, thread, key, verdict, target)
                    touched.add(target)
                    summary.added += 1
            elif (row.result, row.source, row.source_id) != (
                verdict.result.value,
                verdict.source.value,
                verdict.source_id,
            ):
                touched.add(_change(session, thread, row, verdict))
                summary.changed += 1
        for key, row in existing.items():
            if key not in desired:
                touched.update(_withdraw(session, row))
                summary.withdrawn += 1
        _set_polled(session, comment_ids)
        events: list[NewEvent] = []
        for pid in sorted(touched, key=str):
            before, after = refresh(session, pid, settings)
            events += status_events(project_id, pid, before, after)
        record(session, events)
        summary.patterns += len(touched)


def _evidence(thread: Thread, key: VerdictKey, verdict: Verdict) -> dict[str, object]:
    return {
        "repo": thread.repo,
        "issue_number": thread.issue_number,
        "comment_id": key[0],
        "login": key[2],
        "source": verdict.source.value,
        "source_id": verdict.source_id,
        "excerpt": verdict.excerpt,
        "listed_pattern_id": str(key[1]),
    }


def _add(
    session: Session, thread: Thread, key: VerdictKey, verdict: Verdict, target: uuid.UUID
) -> None:
    validation_id = session.scalar(
        insert(PatternValidation)
        .values(
            project_id=thread.project_id,
            pattern_id=target,
            validator=f"github:{key[2]}",
            validation_type=ValidationType.REVIEW.value,
            result=verdict.result.value,
            confidence=CONFIDENCE[verdict.source],
            evidence=_evidence(thread, key, verdict),
        )
        .returning(PatternValidation.id)
    )
    session.execute(
        insert(FeedbackVerdict).values(
            project_id=thread.project_id,
            comment_id=key[0],
            pattern_id=key[1],
            login=key[2],
            result=verdict.result.value,
            source=verdict.source.value,
            source_id=verdict.source_id,
            validation_id=validation_id,
        )
    )


def _change(session: Session, thread: Thread, row: FeedbackVerdict, verdict: Verdict) -> uuid.UUID:
    """Update a verdict and its validation; returns the validated pattern's id."""
    key = (row.comment_id, row.pattern_id, row.login)
    pattern_id = session.scalar(
        update(PatternValidation)
        .where(PatternValidation.id == row.validation_id)
        .values(
            result=verdict.result.value,
            confidence=CONFIDENCE[verdict.source],
            evidence=_evidence(thread, key, verdict),
        )
        .returning(PatternValidation.pattern_id)
    )
    session.execute(
        update(FeedbackVerdict)
        .where(FeedbackVerdict.id == row.id)
        .values(
            result=verdict.result.value,
            source=verdict.source.value,
            source_id=verdict.source_id,
            updated_at=func.now(),
        )
    )
    return pattern_id if pattern_id is not None else row.pattern_id


def _withdraw(session: Session, row: FeedbackVerdict) -> list[uuid.UUID]:
    """Delete a verdict and its validation; returns the validated pattern's id (if any)."""
    session.execute(delete(FeedbackVerdict).where(FeedbackVerdict.id == row.id))
    gone = session.scalar(
        delete(PatternValidation)
        .where(PatternValidation.id == row.validation_id)
        .returning(PatternValidation.pattern_id)
    )
    return [gone] if gone is not None else []


def _absorbing(session: Session, pattern_id: uuid.UUID) -> uuid.UUID | None:
    """The pattern a verdict on ``pattern_id`` goes to: itself, or, when it was merged, the
    pattern it was merged into (``superseded_by`` with a ``merge`` validation naming it);
    ``None`` when it no longer exists. One hop is enough: a merge moves what pointed at the
    merged pattern, its merged rows and its validations, to the canonical one
    (:func:`pipeline.store.merge.merge_into`), so merge chains stay one link long."""
    merged = exists().where(
        PatternValidation.pattern_id == Pattern.superseded_by,
        PatternValidation.validating_pattern_id == Pattern.id,
        PatternValidation.validation_type == ValidationType.MERGE.value,
    )
    row = session.execute(
        select(Pattern.superseded_by, merged).where(Pattern.id == pattern_id)
    ).first()
    if row is None:
        return None
    into, was_merged = row
    return into if into is not None and was_merged else pattern_id


def _set_polled(session: Session, comment_ids: list[int]) -> None:
    session.execute(
        update(FeedbackComment)
        .where(FeedbackComment.comment_id.in_(comment_ids))
        .values(polled_at=func.now())
    )


def _mark_polled(db: Database, project_id: uuid.UUID, comment_ids: list[int]) -> None:
    """Mark a thread polled after a refusal, so it goes to the back of the queue."""
    with db.session(ProjectScope(project_id)) as session:
        _set_polled(session, comment_ids)
