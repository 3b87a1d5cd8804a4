"""The exact response cache: a model's accepted output, kept in Postgres (``llm_response_cache``)
and served again, with no model call, to a request that is the same to the byte.

**Key** (:class:`CacheKey`): the project, the task type, the model, the prompt version, the
output-schema version and the SHA-256 of the canonical first-attempt request
(:func:`request_sha256`: chat messages, JSON schema, token limit, temperature). The seed is left
out: it is derived from the interaction id, and greedy first attempts do not use it. The project
is part of the key, and the table is under row-level security like every project-scoped table:
one project's output never serves another's request.

**Value** (:class:`CachedOutput`): the output text that parsed (on whichever attempt: a retry's
sampled answer is kept for the first-attempt request), and the token counts of the call that
produced it. Failed outputs (invalid, truncated, engine errors, deferred) are never stored.

**Exact only.** There is no semantic (embedding-similarity) cache for extraction: two different
pull requests with similar text must not share patterns, so only a byte-identical prompt (the
interaction's text as cut to ``extract_input_chars``, the same instructions) is served from here.

Postgres holds the cache in both local modes (vLLM in process, an OpenAI-compatible server) and
for Claude; Redis only carries work. ``PATTERNS_RESPONSE_CACHE=false`` turns lookups and writes
off (:attr:`pipeline.settings_extract.ExtractSettings.response_cache`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import ResponseCacheEntry
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.types import TaskType


@dataclass(frozen=True)
class Versions:
    """What, besides the request's text, an output's meaning depends on: the task and the
    versions of its prompt and output schema (bumped when parsing or cleaning rules change
    without the prompt's wording changing)."""

    task_type: TaskType
    prompt_version: str
    schema_version: str


@dataclass(frozen=True)
class CacheKey:
    """The primary key of one ``llm_response_cache`` row; ``prompt_sha256`` is 64 hex digits."""

    project_id: uuid.UUID
    task_type: str
    model: str
    prompt_version: str
    schema_version: str
    prompt_sha256: str

    def as_tuple(self) -> tuple[uuid.UUID, str, str, str, str, str]:
        """The key in the table's primary-key column order."""
        return (self.project_id, self.prompt_sha256, self.task_type, self.model,
                self.prompt_version, self.schema_version)  # fmt: skip


@dataclass(frozen=True)
class CachedOutput:
    """An accepted output: its text and the token counts of the model call that produced it."""

    text: str
    tokens_in: int
    tokens_out: int


def request_sha256(request: GenerationRequest) -> str:
    """SHA-256 (64 lower-case hex digits) of the canonical JSON of what decides a request's
    output: ``messages``, ``json_schema``, ``max_tokens`` and ``temperature`` (keys sorted, no
    whitespace, UTF-8). ``seed``, ``task_type``, ``interaction_id`` and ``priority`` are left
    out: they describe the work, not the prompt."""
    canonical = json.dumps(
        {
            "messages": request.messages,
            "json_schema": request.json_schema,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cache_key(
    request: GenerationRequest, *, project_id: uuid.UUID, model: str, versions: Versions
) -> CacheKey:
    """The cache key of a first-attempt ``request`` for ``project_id`` on ``model``."""
    return CacheKey(
        project_id=project_id,
        task_type=versions.task_type.value,
        model=model,
        prompt_version=versions.prompt_version,
        schema_version=versions.schema_version,
        prompt_sha256=request_sha256(request),
    )


_KEY_COLUMNS = (
    ResponseCacheEntry.project_id,
    ResponseCacheEntry.prompt_sha256,
    ResponseCacheEntry.task_type,
    ResponseCacheEntry.model,
    ResponseCacheEntry.prompt_version,
    ResponseCacheEntry.schema_version,
)


def lookup(session: Session, keys: Mapping[int, CacheKey]) -> dict[int, CachedOutput]:
    """Item → cached output, for the items of ``keys`` (item → key) that have one; one query.
    The session's scope must admit the keys' projects (row-level security hides the rest)."""
    if not keys:
        return {}
    rows = session.execute(
        select(*_KEY_COLUMNS, ResponseCacheEntry.output, ResponseCacheEntry.tokens_in,
               ResponseCacheEntry.tokens_out)
        .where(tuple_(*_KEY_COLUMNS).in_(sorted({k.as_tuple() for k in keys.values()})))
    ).all()  # fmt: skip
    found = {tuple(row[:6]): CachedOutput(row[6], int(row[7]), int(row[8])) for row in rows}
    return {item: found[key.as_tuple()] for item, key in keys.items() if key.as_tuple() in found}


def remember(
    session: Session, keys: Mapping[int, CacheKey], outputs: Mapping[int, Generation]
) -> int:
    """Store the accepted ``outputs`` (item → the engine's output that parsed) under their
    items' ``keys``; items without a key are skipped, and a key stored already (another worker,
    an earlier run) keeps its first output. Returns the rows inserted."""
    rows = {
        keys[item].as_tuple(): {
            "project_id": keys[item].project_id,
            "prompt_sha256": keys[item].prompt_sha256,
            "task_type": keys[item].task_type,
            "model": keys[item].model,
            "prompt_version": keys[item].prompt_version,
            "schema_version": keys[item].schema_version,
            "output": gen.text,
            "tokens_in": gen.tokens_in,
            "tokens_out": gen.tokens_out,
        }
        for item, gen in outputs.items()
        if item in keys
    }
    if not rows:
        return 0
    inserted = session.scalars(
        insert(ResponseCacheEntry)
        # In key order: two batches storing overlapping keys wait for each other, never in a cycle.
        .values([rows[key] for key in sorted(rows)])
        .on_conflict_do_nothing()
        .returning(ResponseCacheEntry.prompt_sha256)
    ).all()
    return len(inserted)


def lookup_outputs(
    db: Database,
    requests: Mapping[int, GenerationRequest],
    projects: Mapping[int, uuid.UUID],
    *,
    model: str,
    versions: Versions,
    enabled: bool = True,
) -> tuple[dict[int, CacheKey], dict[int, CachedOutput]]:
    """The keys of a batch's first-attempt ``requests`` (item → request; ``projects``: item →
    its project) and the outputs the cache holds for them, in one transaction across projects.
    With ``enabled`` false, nothing is looked up or keyed: ``({}, {})``.

    Raises:
        DatabaseUnavailableError: the database cannot be reached.
    """
    if not enabled or not requests:
        return {}, {}
    keys = {
        item: cache_key(request, project_id=projects[item], model=model, versions=versions)
        for item, request in requests.items()
    }
    with db.session(ALL_PROJECTS) as session:
        return keys, lookup(session, keys)
