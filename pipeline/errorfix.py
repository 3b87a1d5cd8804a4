"""The TypeScript error-fix batch: import compiler diagnostics, suggest fixes from accepted ones.

Flow of one batch (:func:`process_batch`), every 10 minutes from Celery beat or on demand:

1. take a session-level advisory lock (:data:`BATCH_LOCK_KEY`); if another batch holds it, do
   nothing: exactly one batch runs at a time, however many beats or workers exist;
2. claim up to ``limit`` ``pending`` rows with ``FOR UPDATE SKIP LOCKED`` (status ``processing``;
   a ``processing`` row older than ``errorfix_claim_timeout_s`` is claimed again);
3. embed message and snippet; retrieve the 3 nearest earlier errors of the project whose fix was
   accepted (cosine distance on ``code_analysis.embedding``);
4. ask the model for a fix as structured output (:class:`FixSuggestion`), all errors in one
   batched call, the retrieved fixes given as examples; retry a bad output once;
5. store a ``code_analysis`` row and set the error ``ai_suggested``, or ``failed`` with the reason.

Parsing of ``tsc`` output and of the JSONL records of ``shared/data/typescript`` is pure.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from pipeline.attempts import RetryDecision, generate_with_retries, one_retry
from pipeline.db.engine import Database
from pipeline.db.models import CodeAnalysis, LLMCall, Project, TypeScriptError
from pipeline.embeddings import Embedder
from pipeline.errors import MalformedInputError, ModelOutputError, PipelineError
from pipeline.llm.base import GenerationRequest, StructuredLLM
from pipeline.schemas import validate_output
from pipeline.settings import Settings

log = structlog.get_logger(__name__)

TASK_TYPE = "error_fix"
#: Key of the advisory lock that makes the batch a singleton ("tsfx").
BATCH_LOCK_KEY = 0x7473_6678
#: Accepted fixes retrieved as examples per error.
EXAMPLES = 3
MAX_ATTEMPTS = 2

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# `src/a.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'.`
_PLAIN = re.compile(
    r"^(?P<path>.+?)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<msg>.*)$"
)
# `src/a.ts:12:5 - error TS2322: Type 'string' is not assignable to type 'number'.` (--pretty)
_PRETTY = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+) - error (?P<code>TS\d+): (?P<msg>.*)$"
)
# A code-frame source line of --pretty output: `12     const x: number = "a";`
_RELATED = re.compile(r"^\s+\S+:\d+:\d+$")
_FRAME = re.compile(r"^\s*(?P<num>\d+) (?P<src>.*)$")


@dataclass(frozen=True)
class TsDiagnostic:
    """One compiler error, as read from ``tsc`` output or a JSONL record."""

    project: str
    file_path: str
    line: int
    column: int | None
    error_code: str
    error_message: str
    code_snippet: str | None = None
    source: str | None = None

    @property
    def message_hash(self) -> str:
        """SHA-256 hex of the message: with project, path, line and code, the error's identity."""
        return hashlib.sha256(self.error_message.encode()).hexdigest()


def parse_tsc_output(output: str, project: str) -> list[TsDiagnostic]:
    """Parse ``tsc`` output, with ``--pretty false`` or the default pretty format.

    Lines indented under a diagnostic (tsc's elaboration) are appended to its message. With the
    pretty format, the numbered source lines of the code frame become the snippet. ANSI colours
    are ignored; lines that are not diagnostics (summaries, blank lines) are skipped.
    """
    found: list[dict[str, Any]] = []
    for raw in output.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        match = _PLAIN.match(line)
        pretty = _PRETTY.match(line) if match is None else None
        if match or pretty:
            header = (match or pretty).groupdict()  # type: ignore[union-attr]
            found.append(
                {**header, "pretty": pretty is not None, "more": [], "frame": [], "related": False}
            )
            continue
        if not found or not line.strip() or set(line.strip()) <= {"~"}:
            continue
        current = found[-1]
        if _RELATED.match(line):
            # Related information (`  file.ts:1:7` and its own frame) is not this error's code.
            current["related"] = True
        if current["related"]:
            continue
        frame = _FRAME.match(line) if current["pretty"] else None
        if frame:
            current["frame"].append(frame.group("src"))
        elif line.startswith((" ", "\t")) and not current["frame"]:
            current["more"].append(line)
    return [
        TsDiagnostic(
            project=project,
            file_path=d["path"].strip(),
            line=int(d["line"]),
            column=int(d["col"]),
            error_code=d["code"],
            error_message="\n".join([d["msg"].strip(), *d["more"]]).strip(),
            code_snippet="\n".join(d["frame"]) or None,
        )
        for d in found
    ]


def parse_jsonl_record(obj: Any, default_project: str) -> TsDiagnostic:
    """One record of ``shared/data/typescript/tsc-errors.jsonl`` (see its README).

    The project is the repository named first in ``source`` (``microsoft/TypeScript ...``), else
    ``default_project``.

    Raises:
        MalformedInputError: a required field is missing or of the wrong type.
    """
    if not isinstance(obj, dict):
        raise MalformedInputError("record is not a JSON object")
    try:
        path, line, code, msg = (
            obj["file_path"],
            obj["line"],
            obj["error_code"],
            obj["error_message"],
        )
    except KeyError as exc:
        raise MalformedInputError(f"record lacks {exc.args[0]!r}") from exc
    if not (isinstance(path, str) and isinstance(line, int) and isinstance(code, str)
            and isinstance(msg, str) and re.fullmatch(r"TS\d+", code)):  # fmt: skip
        raise MalformedInputError("file_path, line, error_code (TSnnnn), error_message mistyped")
    source = obj.get("source") if isinstance(obj.get("source"), str) else None
    project = source.split()[0] if source and "/" in source.split()[0] else default_project
    column = obj.get("column") if isinstance(obj.get("column"), int) else None
    snippet = obj.get("code_snippet") if isinstance(obj.get("code_snippet"), str) else None
    return TsDiagnostic(project, path, line, column, code, msg, snippet, source)


def read_diagnostics(
    paths: Iterable[Path], project: str
) -> tuple[list[TsDiagnostic], list[tuple[str, str]]]:
    """Read ``.jsonl`` files as records and any other file as ``tsc`` output.

    Returns ``(diagnostics, malformed)``, each malformed item ``(file:line, reason)``.
    """
    diagnostics: list[TsDiagnostic] = []
    malformed: list[tuple[str, str]] = []
    for path in paths:
        if path.suffix == ".jsonl":
            for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    diagnostics.append(parse_jsonl_record(json.loads(raw), project))
                except (json.JSONDecodeError, MalformedInputError) as exc:
                    malformed.append((f"{path}:{lineno}", str(exc)))
        else:
            diagnostics.extend(parse_tsc_output(path.read_text(encoding="utf-8"), project))
    return diagnostics, malformed


def store_diagnostics(db: Database, diagnostics: Sequence[TsDiagnostic]) -> int:
    """Insert diagnostics as ``pending`` errors; idempotent on (project, path, line, code,
    message). Returns how many were new."""
    if not diagnostics:
        return 0
    created = 0
    with db.session() as session:
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


class FixSuggestion(BaseModel):
    """The model's answer for one error (structured output)."""

    model_config = ConfigDict(extra="forbid")
    fixed_code: str = Field(min_length=1, max_length=600, description="The snippet, corrected.")
    explanation: str = Field(min_length=1, max_length=240)
    confidence: float = Field(ge=0, le=1)


SYSTEM = (
    "You fix TypeScript compiler errors. Given the error and the code, reply with JSON only: "
    "fixed_code (the corrected code), explanation (one sentence) and confidence (0 to 1)."
)


def fix_messages(error: TypeScriptError, examples: Sequence[CodeAnalysis]) -> list[dict[str, str]]:
    """Chat messages for one error; each accepted example becomes an earlier user/assistant turn."""

    def ask(code: str, message: str, snippet: str | None) -> str:
        return f"error {code}: {message}\n\nCode:\n{snippet or '(no code given)'}"

    messages = [{"role": "system", "content": SYSTEM}]
    for ex in examples:
        messages.append(
            {"role": "user", "content": ask(ex.error_code, ex.error_message, ex.code_snippet)}
        )
        answer = {
            "fixed_code": ex.fixed_code,
            "explanation": ex.explanation or "",
            "confidence": ex.confidence or 0.8,
        }
        messages.append({"role": "assistant", "content": json.dumps(answer)})
    messages.append(
        {"role": "user", "content": ask(error.error_code, error.error_message, error.code_snippet)}
    )
    return messages


def parse_fix(text_out: str, finish_reason: str) -> FixSuggestion:
    """Validate a fix.

    Raises:
        ModelOutputError: truncated, invalid, or blank ``fixed_code``.
    """
    fix = validate_output(FixSuggestion, text_out, finish_reason)
    if not fix.fixed_code.strip():
        raise ModelOutputError("empty fixed_code")
    return fix


@dataclass
class BatchSummary:
    """What one batch did (the ``--json`` summary of ``patterns errors process``)."""

    processed: int = 0
    suggested: int = 0
    failed: int = 0
    retrieved_examples: int = 0
    seconds: float = 0.0
    locked_out: bool = False
    tsc_checked: int = 0
    tsc_compiles: int = 0
    tsc_resolved: int = 0
    failures: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "processed": self.processed,
            "suggested": self.suggested,
            "failed": self.failed,
            "retrieved_examples": self.retrieved_examples,
            "seconds": round(self.seconds, 2),
            "locked_out": self.locked_out,
            "tsc_checked": self.tsc_checked,
            "tsc_compiles": self.tsc_compiles,
            "tsc_resolved": self.tsc_resolved,
        }


def claim(db: Database, limit: int, stale_after_s: float) -> list[int]:
    """Claim up to ``limit`` errors for this batch (``FOR UPDATE SKIP LOCKED``), in id order.

    Concurrent claimers get disjoint rows. A row left ``processing`` for longer than
    ``stale_after_s`` (a crashed batch) can be claimed again.
    """
    with db.session() as session:
        ids = session.scalars(
            text(
                """
                UPDATE typescript_errors SET status = 'processing', updated_at = now()
                WHERE id IN (
                    SELECT id FROM typescript_errors
                    WHERE status = 'pending'
                       OR (status = 'processing'
                           AND updated_at < now() - make_interval(secs => :stale))
                    ORDER BY id
                    LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING id
                """
            ),
            {"limit": limit, "stale": stale_after_s},
        ).all()
    return sorted(ids)


def process_batch(
    *,
    db: Database,
    engine: StructuredLLM,
    embedder: Embedder,
    settings: Settings,
    limit: int | None = None,
) -> BatchSummary:
    """Run one error-fix batch (see the module docstring). Returns its summary.

    If another batch holds the lock, returns at once with ``locked_out=True``.

    Raises:
        RetryableError / PermanentError: from the engine when nothing could be generated; the
            claimed rows go back to ``pending``.
    """
    started = time.perf_counter()
    summary = BatchSummary()
    with db.engine.connect() as lock_conn:
        got = lock_conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": BATCH_LOCK_KEY})
        lock_conn.commit()
        if not got:
            summary.locked_out = True
            return summary
        try:
            ids = claim(
                db, limit or settings.errorfix_batch_size, settings.errorfix_claim_timeout_s
            )
            if ids:
                try:
                    _process(db, engine, embedder, settings, ids, summary)
                except PipelineError:
                    with db.session() as session:
                        session.execute(
                            update(TypeScriptError)
                            .where(
                                TypeScriptError.id.in_(ids), TypeScriptError.status == "processing"
                            )
                            .values(status="pending", updated_at=func.now())
                        )
                    raise
        finally:
            lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": BATCH_LOCK_KEY})
            lock_conn.commit()
    summary.seconds = time.perf_counter() - started
    log.info("errorfix_batch_done", **summary.as_dict())
    return summary


def _embed_text(error: TypeScriptError) -> str:
    return f"{error.error_code}: {error.error_message}\n{error.code_snippet or ''}".strip()


def _process(
    db: Database,
    engine: StructuredLLM,
    embedder: Embedder,
    settings: Settings,
    ids: list[int],
    summary: BatchSummary,
) -> None:
    with db.session() as session:
        errors = list(
            session.scalars(
                select(TypeScriptError)
                .where(TypeScriptError.id.in_(ids))
                .order_by(TypeScriptError.id)
            )
        )
    vectors = embedder.encode([_embed_text(e) for e in errors])
    examples: dict[int, list[CodeAnalysis]] = {}
    with db.session() as session:
        session.execute(
            update(TypeScriptError),
            [{"id": e.id, "embedding": v} for e, v in zip(errors, vectors, strict=True)],
        )
        # One query for the whole batch: the EXAMPLES nearest accepted fixes of each error's
        # project, by cosine distance to the embedding just stored (pgvector ``<=>``).
        nearest = session.execute(
            text(
                """
                SELECT e.id AS error_id, near.id AS example_id
                FROM typescript_errors e
                CROSS JOIN LATERAL (
                    SELECT c.id, c.embedding <=> e.embedding AS distance
                    FROM code_analysis c
                    WHERE c.project_id = e.project_id
                      AND c.status = 'accepted'
                      AND c.embedding IS NOT NULL
                      AND c.typescript_error_id IS DISTINCT FROM e.id
                    ORDER BY c.embedding <=> e.embedding
                    LIMIT :k
                ) AS near
                WHERE e.id = ANY(:ids)
                ORDER BY e.id, near.distance
                """
            ),
            {"ids": [e.id for e in errors], "k": EXAMPLES},
        ).all()
        pairs: list[tuple[int, int]] = [(row.error_id, row.example_id) for row in nearest]
        wanted = {example_id for _, example_id in pairs}
        rows = (
            {
                c.id: c
                for c in session.scalars(select(CodeAnalysis).where(CodeAnalysis.id.in_(wanted)))
            }
            if wanted
            else {}
        )
        for error in errors:
            examples[error.id] = []
        for error_id, example_id in pairs:
            examples[error_id].append(rows[example_id])
        summary.retrieved_examples = len(pairs)
    schema = FixSuggestion.model_json_schema()
    by_id = {e.id: e for e in errors}

    def request(error_id: int, retry: RetryDecision | None) -> GenerationRequest:
        return GenerationRequest(
            fix_messages(by_id[error_id], examples[error_id]),
            schema,
            retry.max_tokens if retry else settings.errorfix_max_tokens,
            retry.temperature if retry else 0.0,
            seed=settings.seed + error_id,
            task_type=TASK_TYPE,
        )

    attempts = generate_with_retries(
        engine,
        list(by_id),
        request=request,
        parse=parse_fix,
        decide=lambda attempt, exc: one_retry(
            attempt,
            exc,
            max_tokens=settings.errorfix_retry_max_tokens,
            temperature=settings.extract_retry_temperature,
            max_attempts=MAX_ATTEMPTS,
        ),
        task_type=TASK_TYPE,
    )
    results: dict[int, FixSuggestion] = attempts.results
    # The local engine never defers; were one to, the error fails with the engine's reason.
    reasons = {**attempts.failed, **attempts.deferred}

    tsc = find_tsc(settings.tsc_path)
    checks = (
        check_fixes(tsc, {i: (f.fixed_code, by_id[i].error_code) for i, f in results.items()})
        if tsc
        else {}
    )
    summary.tsc_checked = len(checks)
    summary.tsc_compiles = sum(1 for c in checks.values() if c.compiles)
    summary.tsc_resolved = sum(1 for c in checks.values() if c.error_resolved)
    with db.session() as session:
        session.execute(insert(LLMCall), attempts.calls)
        for error, vec in zip(errors, vectors, strict=True):
            summary.processed += 1
            fix = results.get(error.id)
            if fix is None:
                summary.failed += 1
                summary.failures[error.id] = reasons.get(error.id, "no output")
                session.execute(
                    update(TypeScriptError).where(TypeScriptError.id == error.id).values(
                        status="failed", failure_reason=summary.failures[error.id],
                        updated_at=func.now(),
                    )
                )  # fmt: skip
                continue
            summary.suggested += 1
            session.add(
                CodeAnalysis(
                    project_id=error.project_id, typescript_error_id=error.id,
                    error_code=error.error_code, error_message=error.error_message,
                    code_snippet=error.code_snippet, fixed_code=fix.fixed_code,
                    explanation=fix.explanation, confidence=fix.confidence,
                    model=engine.model_name, embedding=vec,
                    retrieved_example_ids=[ex.id for ex in examples[error.id]],
                    compiles=checks[error.id].compiles if error.id in checks else None,
                    error_resolved=(
                        checks[error.id].error_resolved if error.id in checks else None
                    ),
                )
            )  # fmt: skip
            session.execute(
                update(TypeScriptError).where(TypeScriptError.id == error.id).values(
                    status="ai_suggested", suggested_fix=fix.fixed_code,
                    fix_explanation=fix.explanation, fix_model=engine.model_name,
                    fix_confidence=fix.confidence, failure_reason=None, updated_at=func.now(),
                )
            )  # fmt: skip


@dataclass(frozen=True)
class TscCheck:
    """Result of compiling a suggested fix.

    ``compiles``: tsc reports nothing. ``error_resolved``: the original error code is no longer
    reported *and* the fix parses (no TS1xxx syntax error): text that is not code would otherwise
    "resolve" any error.
    """

    compiles: bool
    error_resolved: bool


def find_tsc(configured: str | None) -> str | None:
    """The ``tsc`` to check fixes with: the configured path, ``tsc`` on PATH, or the one
    ``make install`` puts in ``.tools/node_modules/.bin``; ``None`` when there is none."""
    if configured:
        return configured if Path(configured).exists() else None
    on_path = shutil.which("tsc")
    if on_path:
        return on_path
    local = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / ".bin" / "tsc"
    return str(local) if local.exists() else None


def check_fixes(
    tsc: str, fixes: dict[int, tuple[str, str]], timeout_s: float = 120
) -> dict[int, TscCheck]:
    """Compile each fix with ``tsc --noEmit`` in one run, one file per fix.

    Args:
        fixes: error id → (fixed code, original error code such as ``TS2322``).

    Each file ends with ``export {}`` so that it is a module and the fixes' declarations do not
    collide. Returns a check per error id; empty if tsc could not run.
    """
    if not fixes:
        return {}
    syntax = re.compile(r"TS1\d{3}")
    with tempfile.TemporaryDirectory(prefix="tsfix-") as tmp:
        names: dict[int, str] = {}
        for error_id, (code, _) in fixes.items():
            names[error_id] = f"fix_{error_id}.ts"
            (Path(tmp) / names[error_id]).write_text(f"{code}\nexport {{}};\n", encoding="utf-8")
        reported = _run_tsc(tsc, tmp, list(names.values()), timeout_s)
        if reported is None:
            return {}
        # tsc reports no semantic errors for a program with a syntax error anywhere in it: compile
        # the files that parse again, on their own.
        broken = {n for n, codes in reported.items() if any(syntax.fullmatch(c) for c in codes)}
        if broken:
            rest = [n for n in names.values() if n not in broken]
            again = _run_tsc(tsc, tmp, rest, timeout_s) if rest else {}
            if again is None:
                return {}
            reported = {**{n: reported[n] for n in broken}, **again}
    return {
        error_id: TscCheck(
            compiles=not reported.get(name),
            error_resolved=name not in broken
            and fixes[error_id][1] not in reported.get(name, set()),
        )
        for error_id, name in names.items()
    }


def _run_tsc(tsc: str, cwd: str, files: list[str], timeout_s: float) -> dict[str, set[str]] | None:
    """Run ``tsc --noEmit`` on ``files``; file name → error codes reported, or None if it failed."""
    try:
        proc = subprocess.run(
            [tsc, "--noEmit", "--pretty", "false", "--skipLibCheck", "--target", "es2022", *files],
            cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("tsc_failed", error=str(exc))
        return None
    reported: dict[str, set[str]] = {}
    for diag in parse_tsc_output(proc.stdout, "check"):
        reported.setdefault(Path(diag.file_path).name, set()).add(diag.error_code)
    return reported


def review(db: Database, error_id: int, accepted: bool) -> None:
    """Mark an error's latest suggestion accepted or rejected. Accepted fixes become examples.

    Raises:
        MalformedInputError: no suggestion exists for ``error_id``.
    """
    status = "accepted" if accepted else "rejected"
    with db.session() as session:
        latest = session.scalar(
            select(CodeAnalysis)
            .where(CodeAnalysis.typescript_error_id == error_id)
            .order_by(CodeAnalysis.id.desc())
            .limit(1)
        )
        if latest is None:
            raise MalformedInputError(f"typescript error {error_id} has no suggestion to review")
        latest.status = status
        session.execute(
            update(TypeScriptError).where(TypeScriptError.id == error_id).values(
                status=status, updated_at=func.now()
            )
        )  # fmt: skip


def acceptance(db: Database) -> dict[str, Any]:
    """Errors by status and the acceptance rate of reviewed suggestions (accepted / reviewed)."""
    with db.session() as session:
        by_status = dict(
            session.execute(
                select(TypeScriptError.status, func.count()).group_by(TypeScriptError.status)
            ).all()
        )
    accepted, rejected = by_status.get("accepted", 0), by_status.get("rejected", 0)
    reviewed = accepted + rejected
    return {
        "by_status": {k: int(v) for k, v in by_status.items()},
        "accepted": int(accepted),
        "rejected": int(rejected),
        "acceptance_rate": round(accepted / reviewed, 4) if reviewed else None,
    }
