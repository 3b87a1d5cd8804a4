"""The error-fix tables' own SQL: storing diagnostics, claiming a batch, reviewing suggestions and
the acceptance rate. Every function owns its transaction.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import CodeAnalysis, LLMCall, Project, TypeScriptError
from pipeline.db.status import CodeAnalysisStatus, FixCheck, TsErrorStatus
from pipeline.errorfix.parsing import TsDiagnostic
from pipeline.errors import ConflictError, ForbiddenError, NotFoundError


def store_diagnostics(db: Database, diagnostics: Sequence[TsDiagnostic]) -> int:
    """Insert diagnostics as ``pending`` errors; idempotent on (project, path, line, code,
    message). Returns how many were new."""
    if not diagnostics:
        return 0
    created = 0
    with db.session(ALL_PROJECTS) as session:
        names = sorted({d.project for d in diagnostics})
        session.execute(
            insert(Project).values([{"name": n} for n in names]).on_conflict_do_nothing()
        )
        projects = dict(
            session.execute(select(Project.name, Project.id).where(Project.name.in_(names))).all()
        )
        for start in range(0, len(diagnostics), 500):
            rows = [
                {
                    "project_id": projects[d.project],
                    "file_path": d.file_path,
                    "line": d.line,
                    "column": d.column,
                    "error_code": d.error_code,
                    "error_message": d.error_message,
                    "message_hash": d.message_hash,
                    "code_snippet": d.code_snippet,
                    "source": d.source,
                }
                for d in diagnostics[start : start + 500]
            ]
            created += len(
                session.execute(
                    insert(TypeScriptError)
                    .values(rows)
                    .on_conflict_do_nothing(constraint="uq_typescript_errors_identity")
                    .returning(TypeScriptError.id)
                ).all()
            )
    return created


def claim(db: Database, limit: int, stale_after_s: float) -> list[int]:
    """Claim up to ``limit`` errors for this batch (``FOR UPDATE SKIP LOCKED``), in id order.

    Concurrent claimers get disjoint rows. A row left ``processing`` for longer than
    ``stale_after_s`` (a crashed batch) can be claimed again. The locking subquery is a
    materialised CTE: evaluated once, whatever plan the row-level security policy leads to (as
    an ``IN (subquery)`` it could be re-run per row, each run skipping to other rows, and claim
    more than ``limit``).
    """
    with db.session(ALL_PROJECTS) as session:
        ids = session.scalars(
            text(
                """
                WITH picked AS MATERIALIZED (
                    SELECT id FROM typescript_errors
                    WHERE status = :pending
                       OR (status = :processing
                           AND updated_at < now() - make_interval(secs => :stale))
                    ORDER BY id
                    LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE typescript_errors t SET status = :processing, updated_at = now()
                FROM picked WHERE t.id = picked.id
                RETURNING t.id
                """
            ),
            {
                "limit": limit,
                "stale": stale_after_s,
                "pending": TsErrorStatus.PENDING.value,
                "processing": TsErrorStatus.PROCESSING.value,
            },
        ).all()
    return sorted(ids)


def release_claims(db: Database, error_ids: Sequence[int]) -> None:
    """Put claimed errors that are still ``processing`` back to ``pending`` (their batch failed
    before it could decide them)."""
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            update(TypeScriptError)
            .where(
                TypeScriptError.id.in_(list(error_ids)),
                TypeScriptError.status == TsErrorStatus.PROCESSING,
            )
            .values(status=TsErrorStatus.PENDING.value, updated_at=func.now())
        )


def review(
    db: Database, error_id: int, accepted: bool, *, project_id: uuid.UUID | None = None
) -> TsErrorStatus:
    """Mark an error's latest suggestion accepted or rejected. Accepted fixes become retrieval
    examples for later batches.

    Args:
        project_id: the caller's project (an API key's); ``None`` for operators (the CLI), who
            may review any project's errors.

    Returns:
        The error's new status (``accepted`` or ``rejected``).

    Raises:
        NotFoundError: no error ``error_id``.
        ForbiddenError: the error belongs to another project than ``project_id``.
        ConflictError: the error has no suggestion to review yet.
    """
    status = TsErrorStatus.ACCEPTED if accepted else TsErrorStatus.REJECTED
    with db.session(ALL_PROJECTS) as session:
        owner = session.scalar(
            select(TypeScriptError.project_id)
            .where(TypeScriptError.id == error_id)
            .with_for_update()
        )
        if owner is None:
            raise NotFoundError(f"no typescript error {error_id}")
        if project_id is not None and owner != project_id:
            raise ForbiddenError(f"typescript error {error_id} belongs to another project")
        latest = session.scalar(
            select(CodeAnalysis)
            .where(CodeAnalysis.typescript_error_id == error_id)
            .order_by(CodeAnalysis.id.desc())
            .limit(1)
        )
        if latest is None:
            raise ConflictError(f"typescript error {error_id} has no suggestion to review")
        latest.status = (
            CodeAnalysisStatus.ACCEPTED if accepted else CodeAnalysisStatus.REJECTED
        ).value
        session.execute(
            update(TypeScriptError)
            .where(TypeScriptError.id == error_id)
            .values(status=status.value, updated_at=func.now())
        )
    return status


@dataclass(frozen=True)
class Acceptance:
    """Errors by status and the acceptance rate of reviewed suggestions (accepted / reviewed;
    ``None`` before any review), next to what tsc said of each error's latest suggestion:
    ``by_check`` (:class:`~pipeline.db.status.FixCheck` → errors), ``checked`` (tsc ran),
    ``compile_rate`` (compiles with no error: ``verified`` / checked; a fix that compiles has
    resolved its error), ``resolve_rate`` (its error code gone: ``verified`` +
    ``does_not_compile``, / checked), and ``first_compile_rate`` / ``first_resolve_rate`` of the
    model's first fixes, before the compiler-in-the-loop retry (``retried``: suggestions whose
    first fix was sent back and whose answer tsc compiled). Rates are in [0, 1], rounded to 4
    places, ``None`` when nothing was checked."""

    by_status: dict[str, int]
    accepted: int
    rejected: int
    acceptance_rate: float | None
    by_check: dict[str, int] = dataclasses.field(default_factory=dict)
    checked: int = 0
    retried: int = 0
    compile_rate: float | None = None
    resolve_rate: float | None = None
    first_compile_rate: float | None = None
    first_resolve_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``patterns errors report --json``)."""
        return dataclasses.asdict(self)


def acceptance(db: Database) -> Acceptance:
    """Errors by status, the acceptance rate of reviewed suggestions, and the compile and
    resolve rates of the latest suggestions before and after the retry (:class:`Acceptance`)."""
    with db.session(ALL_PROJECTS) as session:
        by_status = {
            str(k): int(v)
            for k, v in session.execute(
                select(TypeScriptError.status, func.count()).group_by(TypeScriptError.status)
            ).all()
        }
        cols = (
            CodeAnalysis.check_status,
            CodeAnalysis.first_check_status,
            CodeAnalysis.compile_attempts,
        )
        latest = (
            select(*cols)
            .distinct(CodeAnalysis.typescript_error_id)
            .where(CodeAnalysis.typescript_error_id.is_not(None))
            .order_by(CodeAnalysis.typescript_error_id, CodeAnalysis.id.desc())
        ).subquery()
        keys = (latest.c.check_status, latest.c.first_check_status, latest.c.compile_attempts)
        rows = session.execute(select(*keys, func.count()).group_by(*keys)).all()
    accepted = by_status.get(TsErrorStatus.ACCEPTED.value, 0)
    rejected = by_status.get(TsErrorStatus.REJECTED.value, 0)
    reviewed = accepted + rejected
    by_check: dict[str, int] = {}
    first: dict[str, int] = {}
    retried = 0
    for row in rows:
        kept, before, n = str(row[0]), str(row[1] or row[0]), int(row[3])
        by_check[kept] = by_check.get(kept, 0) + n
        first[before] = first.get(before, 0) + n
        retried += n if int(row[2]) >= 2 else 0
    checked = sum(n for k, n in by_check.items() if k != FixCheck.UNCHECKED)
    compile_rate, resolve_rate = _rates(by_check, checked)
    first_compile_rate, first_resolve_rate = _rates(first, checked)
    return Acceptance(
        by_status=by_status, accepted=accepted, rejected=rejected,
        acceptance_rate=round(accepted / reviewed, 4) if reviewed else None,
        by_check=by_check, checked=checked, retried=retried,
        compile_rate=compile_rate, resolve_rate=resolve_rate,
        first_compile_rate=first_compile_rate, first_resolve_rate=first_resolve_rate,
    )  # fmt: skip


def _rates(by_check: dict[str, int], checked: int) -> tuple[float | None, float | None]:
    """(compile rate, resolve rate) of ``by_check`` over ``checked`` suggestions."""
    if not checked:
        return None, None
    verified = by_check.get(FixCheck.VERIFIED.value, 0)
    resolved = verified + by_check.get(FixCheck.DOES_NOT_COMPILE.value, 0)
    return round(verified / checked, 4), round(resolved / checked, 4)


def load_claimed(db: Database, error_ids: Sequence[int]) -> list[TypeScriptError]:
    """The claimed errors' rows, in id order (detached: read-only after the session)."""
    with db.session(ALL_PROJECTS) as session:
        return list(
            session.scalars(
                select(TypeScriptError)
                .where(TypeScriptError.id.in_(list(error_ids)))
                .order_by(TypeScriptError.id)
            )
        )


def store_embeddings_and_examples(
    db: Database, errors: Sequence[TypeScriptError], vectors: Any, k: int
) -> dict[int, list[CodeAnalysis]]:
    """Store each error's embedding (``vectors[i]`` for ``errors[i]``) and retrieve, for each,
    the ``k`` nearest accepted fixes of its project by cosine distance (pgvector ``<=>``), in one
    LATERAL query for the whole batch. Returns error id → examples, nearest first."""
    examples: dict[int, list[CodeAnalysis]] = {e.id: [] for e in errors}
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            update(TypeScriptError),
            [{"id": e.id, "embedding": v} for e, v in zip(errors, vectors, strict=True)],
        )
        nearest = session.execute(
            text(
                """
                SELECT e.id AS error_id, near.id AS example_id
                FROM typescript_errors e
                CROSS JOIN LATERAL (
                    SELECT c.id, c.embedding <=> e.embedding AS distance
                    FROM code_analysis c
                    WHERE c.project_id = e.project_id
                      AND c.status = :accepted
                      AND c.embedding IS NOT NULL
                      AND c.typescript_error_id IS DISTINCT FROM e.id
                    ORDER BY c.embedding <=> e.embedding
                    LIMIT :k
                ) AS near
                WHERE e.id = ANY(:ids)
                ORDER BY e.id, near.distance
                """
            ),
            {"ids": [e.id for e in errors], "k": k, "accepted": CodeAnalysisStatus.ACCEPTED.value},
        ).all()
        pairs: list[tuple[int, int]] = [(row.error_id, row.example_id) for row in nearest]
        wanted = {example_id for _, example_id in pairs}
        rows: dict[int, CodeAnalysis] = {}
        if wanted:
            rows = {
                c.id: c
                for c in session.scalars(select(CodeAnalysis).where(CodeAnalysis.id.in_(wanted)))
            }
        for error_id, example_id in pairs:
            examples[error_id].append(rows[example_id])
    return examples


@dataclass(frozen=True)
class FixOutcome:
    """What became of one claimed error: a suggestion (with its compiler check, when one ran)
    or the reason it failed."""

    error: TypeScriptError
    embedding: Any
    examples: Sequence[CodeAnalysis]
    fixed_code: str | None = None
    explanation: str | None = None
    confidence: float | None = None
    compiles: bool | None = None
    error_resolved: bool | None = None
    check_status: str = FixCheck.UNCHECKED.value
    first_check_status: str | None = None
    compile_attempts: int = 0
    diagnostics: Sequence[str] = ()
    failure: str | None = None


def record_outcomes(
    db: Database, outcomes: Sequence[FixOutcome], model: str, calls: Sequence[dict[str, object]]
) -> None:
    """Write a batch's outcomes in one transaction: the ``llm_calls`` rows; per suggestion a
    ``code_analysis`` row and the error ``ai_suggested``; per failure the error ``failed`` with
    its reason."""
    with db.session(ALL_PROJECTS) as session:
        if calls:
            session.execute(insert(LLMCall), list(calls))
        for o in outcomes:
            error = o.error
            if o.fixed_code is None:
                session.execute(
                    update(TypeScriptError).where(TypeScriptError.id == error.id).values(
                        status=TsErrorStatus.FAILED.value, failure_reason=o.failure,
                        updated_at=func.now(),
                    )
                )  # fmt: skip
                continue
            session.add(
                CodeAnalysis(
                    project_id=error.project_id, typescript_error_id=error.id,
                    error_code=error.error_code, error_message=error.error_message,
                    code_snippet=error.code_snippet, fixed_code=o.fixed_code,
                    explanation=o.explanation, confidence=o.confidence, model=model,
                    embedding=o.embedding, retrieved_example_ids=[ex.id for ex in o.examples],
                    compiles=o.compiles, error_resolved=o.error_resolved,
                    check_status=o.check_status, first_check_status=o.first_check_status,
                    compile_attempts=o.compile_attempts, tsc_diagnostics=list(o.diagnostics),
                )
            )  # fmt: skip
            session.execute(
                update(TypeScriptError).where(TypeScriptError.id == error.id).values(
                    status=TsErrorStatus.AI_SUGGESTED.value, suggested_fix=o.fixed_code,
                    fix_explanation=o.explanation, fix_model=model,
                    fix_confidence=o.confidence, failure_reason=None, fix_check=o.check_status,
                    updated_at=func.now(),
                )
            )  # fmt: skip
