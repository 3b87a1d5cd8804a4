"""A loopback HTTP server speaking Anthropic's Messages API wire format, for tests and manual runs.

Claude's API cannot run here, so tests point the real ``anthropic`` SDK at this server instead
(``anthropic.Anthropic(api_key="test", base_url=server.base_url)``). It is standard library only:
``http.server.ThreadingHTTPServer`` in a daemon thread on ``127.0.0.1`` (port 0 picks a free one).

Endpoints (shapes follow ``anthropic`` 2.11.0: ``types/message.py``, ``types/usage.py``,
``types/messages/message_batch*.py``):

* ``POST /v1/messages`` -> a ``Message``. With ``output_config.format`` of type ``json_schema``
  the text is a JSON document generated to validate against that schema
  (:func:`generate_instance`); otherwise a short plain-text reply.
* ``POST /v1/messages/count_tokens`` -> ``{"input_tokens": n}``.
* ``POST /v1/messages/batches``, ``GET /v1/messages/batches[/{id}[/results]]``,
  ``POST /v1/messages/batches/{id}/cancel``, ``DELETE /v1/messages/batches/{id}``.

What is approximated, and why:

* Tokens: ``ceil(chars / 4)`` per text (the usual rule of thumb for English; Anthropic does not
  publish its tokenizer), see :func:`count_input_tokens`. The same function feeds
  ``count_tokens`` and ``usage`` so callers' budgets can be checked exactly.
* Prompt caching: a prefix is cached forever once written (no 5-minute expiry, no minimum length
  unless ``min_cacheable_tokens`` is set); only ``system`` blocks carry breakpoints here.
* Batches end after ``batch_polls_until_ended`` retrievals instead of after real work; results come
  back in a shuffled order, as the real API does not keep submission order.

Errors use the real body ``{"type": "error", "error": {"type": ..., "message": ...}}`` and the
real statuses: 400 invalid_request_error, 401 authentication_error (neither ``x-api-key`` nor
``Authorization: Bearer``: SDK 2.11.0 sends its ``api_key`` as a Bearer token), 404
not_found_error, 429 rate_limit_error, 500 api_error, 529 overloaded_error. Every response
carries a ``request-id`` header.

Run on its own for a manual end-to-end run: ``python tests/support/messages_api.py --port 8765``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "CHARS_PER_TOKEN",
    "MESSAGE_OVERHEAD_TOKENS",
    "REQUEST_OVERHEAD_TOKENS",
    "ApiError",
    "Fault",
    "InputTokens",
    "MessagesAPIServer",
    "RecordedRequest",
    "approx_tokens",
    "count_input_tokens",
    "generate_instance",
]

#: Characters per token of the approximation (a common rule of thumb for English text).
CHARS_PER_TOKEN = 4
#: Tokens added per message for the role and turn markers (an approximation, as above).
MESSAGE_OVERHEAD_TOKENS = 3
#: Tokens added once per request (the real API also counts a small fixed preamble).
REQUEST_OVERHEAD_TOKENS = 1

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_WORD = re.compile(r"[A-Za-z0-9_]+")
_FALLBACK_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: ``headers`` with lower-cased names, ``body`` raw bytes,
    ``received_at`` from ``time.monotonic()`` (seconds) to measure retry gaps."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = 0.0

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Fault:
    """One injected outcome for a ``/v1/messages`` or ``count_tokens`` request.

    * ``status`` other than 200: an error body of the real shape for that status
      (429 rate_limit_error, 529 overloaded_error, 500 api_error, ...).
    * ``retry_after`` (seconds) sets ``retry-after``; ``retry_after_ms`` sets ``retry-after-ms``;
      each only when given. ``should_retry`` sets ``x-should-retry: true|false``.
    * ``malformed_output``: a 200 Message whose text is truncated JSON (not valid for the schema).
    * ``invalid_json_body``: a 200 whose HTTP body is not JSON at all.
    * ``delay_s``: sleep this long before answering (longer than the client's timeout: a
      timeout; the answer then goes to a closed connection).
    """

    status: int = 200
    retry_after: float | None = None
    retry_after_ms: float | None = None
    should_retry: bool | None = None
    message: str | None = None
    malformed_output: bool = False
    invalid_json_body: bool = False
    delay_s: float = 0.0


class ApiError(Exception):
    """An error answer: HTTP ``status``, the API's error ``type`` and a ``message``."""

    def __init__(self, status: int, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _ERROR_TYPES.get(status, "api_error")


@dataclass(frozen=True)
class InputTokens:
    """Input token count of one request: ``total`` tokens, of which the first ``cacheable``
    belong to the system prefix up to the last ``cache_control`` block; ``prefix_key`` is a hash
    of that prefix (``None`` without a breakpoint)."""

    total: int
    cacheable: int = 0
    prefix_key: str | None = None


@dataclass
class _Batch:
    id: str
    sequence: int
    created_at: datetime
    requests: list[dict[str, Any]]
    #: custom_id -> "succeeded" | "errored" | "expired", decided at submission.
    planned: dict[str, str]
    polls: int = 0
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Token counting (pure)
# --------------------------------------------------------------------------------------------


def approx_tokens(text: str) -> int:
    """``ceil(len(text) / CHARS_PER_TOKEN)``: 0 for the empty string."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _block_text(block: Any) -> str:
    """The text a content block contributes: ``text`` for text blocks, else its JSON."""
    if isinstance(block, dict) and block.get("type") == "text":
        return str(block.get("text", ""))
    return json.dumps(block, sort_keys=True)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_block_text(block) for block in content)
    return json.dumps(content, sort_keys=True)


def _system_blocks(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    return [block for block in system if isinstance(block, dict)]


def count_input_tokens(body: dict[str, Any]) -> InputTokens:
    """Approximate input tokens of a Messages request body (``max_tokens`` plays no part).

    ``total = REQUEST_OVERHEAD_TOKENS + sum(approx_tokens(system block text))
    + sum(MESSAGE_OVERHEAD_TOKENS + approx_tokens(message text))
    + approx_tokens(json.dumps(output_config.format.schema, sort_keys=True))
    + approx_tokens(json.dumps(tools, sort_keys=True))`` (the last two only when present).

    A message's text is its string content or its text blocks joined by newlines (other blocks
    count as their JSON). The cacheable prefix is ``REQUEST_OVERHEAD_TOKENS`` plus the system
    blocks up to and including the last one with ``cache_control``.
    """
    total = REQUEST_OVERHEAD_TOKENS
    cacheable = 0
    prefix_key: str | None = None
    blocks = _system_blocks(body.get("system"))
    for index, block in enumerate(blocks):
        total += approx_tokens(_block_text(block))
        if block.get("cache_control"):
            cacheable = total
            prefix = [
                {k: v for k, v in b.items() if k != "cache_control"} for b in blocks[: index + 1]
            ]
            material = json.dumps([body.get("model"), prefix], sort_keys=True)
            prefix_key = hashlib.sha256(material.encode()).hexdigest()
    for message in body.get("messages") or []:
        total += MESSAGE_OVERHEAD_TOKENS + approx_tokens(_content_text(message.get("content")))
    schema = _output_schema(body)
    if schema is not None:
        total += approx_tokens(json.dumps(schema, sort_keys=True))
    if body.get("tools"):
        total += approx_tokens(json.dumps(body["tools"], sort_keys=True))
    return InputTokens(total=total, cacheable=cacheable, prefix_key=prefix_key)


def _output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    config = body.get("output_config")
    if not isinstance(config, dict):
        return None
    fmt = config.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else None
    return None


# --------------------------------------------------------------------------------------------
# JSON-schema instance generation (pure)
# --------------------------------------------------------------------------------------------


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    """Resolve a local JSON pointer such as ``#/$defs/Name`` against ``root``."""
    if not ref.startswith("#"):
        raise ApiError(400, f"output_config.format.schema: unsupported $ref {ref!r}")
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node  # type: ignore[no-any-return]


def _string(schema: dict[str, Any], rng: random.Random, words: list[str]) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2024-01-02T03:04:05Z"
    if fmt == "date":
        return "2024-01-02"
    if fmt == "email":
        return f"{rng.choice(words).lower()}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(words).lower()}"
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    min_len = int(schema.get("minLength", 0))
    max_len = schema.get("maxLength")
    text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
    while len(text) < min_len:
        text += " " + rng.choice(words)
    if max_len is not None:
        text = text[: int(max_len)].rstrip() or text[: int(max_len)]
    return text


def _number(schema: dict[str, Any], rng: random.Random, *, integer: bool) -> int | float:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if schema.get("exclusiveMinimum") is not None:
        low = schema["exclusiveMinimum"] + (1 if integer else 1e-6)
    if schema.get("exclusiveMaximum") is not None:
        high = schema["exclusiveMaximum"] - (1 if integer else 1e-6)
    low = 0 if low is None else low
    high = low + 100 if high is None else high
    if integer:
        return rng.randint(math.ceil(low), math.floor(high))
    return round(rng.uniform(low, high), 4)


_HINT = re.compile(
    r"\b(minimum|maximum|exclusiveMinimum|exclusiveMaximum|minLength|maxLength|minItems|maxItems)"
    r": (-?\d+(?:\.\d+)?)"
)


def _with_description_hints(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` plus the constraints the SDK's ``transform_schema`` moved into its
    description (``{minimum: 0, maximum: 1}``): the real model reads and follows them."""
    description = schema.get("description")
    if not isinstance(description, str) or "{" not in description:
        return schema
    hints = {
        key: float(value) if "." in value else int(value)
        for key, value in _HINT.findall(description[description.rfind("{") :])
    }
    return {**hints, **schema} if hints else schema


def generate_instance(
    schema: dict[str, Any],
    *,
    rng: random.Random,
    words: list[str],
    root: dict[str, Any] | None = None,
) -> Any:
    """A JSON value that validates against ``schema`` (a pragmatic subset of JSON Schema).

    Supported: ``$ref`` into ``$defs``/``definitions``; ``const``; ``enum``; ``anyOf``/``oneOf``
    (the first non-null branch); ``allOf`` (the first branch); ``type`` as a string or a list
    (the first non-null); objects (every property is produced, so ``required`` and
    ``additionalProperties: false`` hold); arrays with ``minItems``/``maxItems``
    (``max(minItems, min(maxItems or 2, 2))`` items); strings with ``minLength``/``maxLength``
    and a few ``format`` values; numbers and integers with (exclusive) ``minimum``/``maximum``;
    booleans; null. ``pattern`` is not supported. Strings are built from ``words``.
    """
    root = schema if root is None else root
    schema = _with_description_hints(schema)
    words = words or list(_FALLBACK_WORDS)
    if "$ref" in schema:
        return generate_instance(
            _resolve_ref(schema["$ref"], root), rng=rng, words=words, root=root
        )
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = schema[key]
            chosen = next((b for b in branches if b.get("type") != "null"), branches[0])
            return generate_instance(chosen, rng=rng, words=words, root=root)
    if "allOf" in schema:
        return generate_instance(schema["allOf"][0], rng=rng, words=words, root=root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: generate_instance(sub, rng=rng, words=words, root=root)
            for name, sub in properties.items()
        }
    if kind == "array":
        min_items = int(schema.get("minItems", 0))
        max_items = schema.get("maxItems")
        count = max(min_items, min(2 if max_items is None else int(max_items), 2))
        items = schema.get("items", {})
        return [generate_instance(items, rng=rng, words=words, root=root) for _ in range(count)]
    if kind == "string":
        return _string(schema, rng, words)
    if kind == "integer":
        return _number(schema, rng, integer=True)
    if kind == "number":
        return _number(schema, rng, integer=False)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    raise ApiError(400, f"output_config.format.schema: unsupported type {kind!r}")


# --------------------------------------------------------------------------------------------
# Request validation (pure)
# --------------------------------------------------------------------------------------------


def _validate_params(body: Any, *, need_max_tokens: bool, where: str = "") -> dict[str, Any]:
    """Check a Messages body like the real API; raise :class:`ApiError` (400) with the field
    path in the message (``where`` prefixes it, e.g. ``requests.0.params.``)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"{where or 'body'}: Input should be an object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400,
            f"{where}model: Field required"
            if model is None
            else f"{where}model: Input should be a string",
        )
    if need_max_tokens:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise ApiError(400, f"{where}max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiError(400, f"{where}max_tokens: Input should be an integer >= 1")
    messages = body.get("messages")
    if messages is None:
        raise ApiError(400, f"{where}messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"{where}messages: at least one message is required")
    for index, message in enumerate(messages):
        path = f"{where}messages.{index}"
        if not isinstance(message, dict):
            raise ApiError(400, f"{path}: Input should be an object")
        if message.get("role") not in ("user", "assistant"):
            raise ApiError(400, f"{path}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if content is None:
            raise ApiError(400, f"{path}.content: Field required")
        if not isinstance(content, str | list):
            raise ApiError(400, f"{path}.content: Input should be a string or a list of blocks")
        if isinstance(content, list) and not all(
            isinstance(b, dict) and "type" in b for b in content
        ):
            raise ApiError(400, f"{path}.content: every block needs a type")
    system = body.get("system")
    system_ok = isinstance(system, str | None) or (
        isinstance(system, list)
        and all(
            isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
            for b in system
        )
    )
    if not system_ok:
        raise ApiError(400, f"{where}system: Input should be a string or a list of text blocks")
    config = body.get("output_config")
    if config is not None:
        fmt = config.get("format") if isinstance(config, dict) else None
        if fmt is not None and (
            not isinstance(fmt, dict)
            or fmt.get("type") != "json_schema"
            or not isinstance(fmt.get("schema"), dict)
        ):
            raise ApiError(
                400, f"{where}output_config.format: expected a json_schema with a schema"
            )
    return body


def _last_user_words(body: dict[str, Any]) -> list[str]:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return _WORD.findall(_content_text(message.get("content")))
    return []


def _seed(body: dict[str, Any]) -> int:
    material = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")


def _rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class MessagesAPIServer:
    """Messages API on ``127.0.0.1`` in a daemon thread; ``with MessagesAPIServer() as s: ...``.

    Knobs (plain attributes, may be changed while it runs):

    * ``batch_polls_until_ended`` (default 1): a batch ends on its N-th ``GET`` retrieval.
    * ``results_seed`` and ``shuffle_results``: the seeded order of batch result lines.
    * ``expire_custom_ids`` / ``error_custom_ids``: sets of ``custom_id`` s whose batch request
      comes back ``expired`` / ``errored`` (``api_error``). Each id is CONSUMED when a submission
      uses it, so resubmitting that ``custom_id`` in a later batch succeeds.
    * ``batch_expire_fraction`` / ``batch_error_fraction``: each batch request independently
      expires / errors with that probability. The draw is seeded by ``seed``, the request's
      ``params`` and how many batches have carried those params before, so a resubmission
      draws again, and a run is reproducible whatever ``custom_id`` s the client picks.
    * ``overload_fraction``: that share of ``/v1/messages`` and ``count_tokens`` requests get a
      529 (seeded by ``seed``), after any queued :class:`Fault`.
    * ``min_cacheable_tokens`` (default 0): shorter cache prefixes are not cached (the real API
      needs 1024+ tokens; 0 keeps tests small).
    * ``response_delay_s``: sleep before each answer (seconds), to exercise client timeouts.

    ``enqueue_faults([...])`` queues :class:`Fault` s consumed one per ``/v1/messages`` or
    ``count_tokens`` request, in order. ``requests`` is a snapshot of every request received.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        batch_polls_until_ended: int = 1,
        results_seed: int = 0,
        shuffle_results: bool = True,
        expire_custom_ids: Iterable[str] = (),
        error_custom_ids: Iterable[str] = (),
        batch_expire_fraction: float = 0.0,
        batch_error_fraction: float = 0.0,
        overload_fraction: float = 0.0,
        seed: int = 0,
        min_cacheable_tokens: int = 0,
        response_delay_s: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.batch_polls_until_ended = batch_polls_until_ended
        self.results_seed = results_seed
        self.shuffle_results = shuffle_results
        self.expire_custom_ids: set[str] = set(expire_custom_ids)
        self.error_custom_ids: set[str] = set(error_custom_ids)
        self.batch_expire_fraction = batch_expire_fraction
        self.batch_error_fraction = batch_error_fraction
        self.overload_fraction = overload_fraction
        self.seed = seed
        self.min_cacheable_tokens = min_cacheable_tokens
        self.response_delay_s = response_delay_s
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._cached_prefixes: set[str] = set()
        self._batches: dict[str, _Batch] = {}
        self._batch_attempts: dict[int, int] = {}
        self._overload_rng = random.Random(f"overload:{seed}")
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> MessagesAPIServer:
        """Bind and serve in a daemon thread; returns ``self``."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"api": self})
        httpd = ThreadingHTTPServer((self.host, self.port), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="messages-api",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MessagesAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, the SDK's ``base_url`` (only meaningful once started)."""
        return f"http://{self.host}:{self.port}"

    # ---- recording and faults ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str = "POST") -> list[RecordedRequest]:
        """The recorded requests with this exact ``path`` (query string excluded) and method."""
        return [r for r in self.requests if r.method == method and urlsplit(r.path).path == path]

    def enqueue_faults(self, faults: Iterable[Fault]) -> None:
        """Queue faults, consumed one per ``/v1/messages`` or ``count_tokens`` request."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def faults_left(self) -> int:
        """Queued faults not yet consumed."""
        with self._lock:
            return len(self._faults)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self.overload_fraction and self._overload_rng.random() < self.overload_fraction:
                return Fault(status=529)
        return None

    # ---- messages ----------------------------------------------------------------------------

    def count_tokens(self, body: Any) -> dict[str, Any]:
        """``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``."""
        params = _validate_params(body, need_max_tokens=False)
        return {"input_tokens": count_input_tokens(params).total}

    def create_message(
        self, body: Any, *, service_tier: str = "standard", malformed: bool = False
    ) -> dict[str, Any]:
        """``POST /v1/messages``: a ``Message`` dict (see the module docstring)."""
        params = _validate_params(body, need_max_tokens=True)
        rng = random.Random(_seed(params))
        words = _last_user_words(params)
        schema = _output_schema(params)
        if schema is not None:
            instance = generate_instance(schema, rng=rng, words=words)
            text = json.dumps(instance)
            if malformed:
                text = text[: max(1, len(text) // 2)]
        else:
            topic = " ".join(words[:8]) or "nothing in particular"
            text = f"Here is a short answer about {topic}."
            if malformed:
                text = '{"unterminated": '
        stop_reason = "end_turn"
        output_tokens = approx_tokens(text)
        if output_tokens > params["max_tokens"]:
            text = text[: params["max_tokens"] * CHARS_PER_TOKEN]
            output_tokens = params["max_tokens"]
            stop_reason = "max_tokens"
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage(params, output_tokens, service_tier),
        }

    def _usage(
        self, params: dict[str, Any], output_tokens: int, service_tier: str
    ) -> dict[str, Any]:
        counted = count_input_tokens(params)
        created = read = 0
        if counted.prefix_key is not None and counted.cacheable >= max(
            1, self.min_cacheable_tokens
        ):
            with self._lock:
                seen = counted.prefix_key in self._cached_prefixes
                self._cached_prefixes.add(counted.prefix_key)
            if seen:
                read = counted.cacheable
            else:
                created = counted.cacheable
        return {
            "input_tokens": counted.total - created - read,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": created,
                "ephemeral_1h_input_tokens": 0,
            },
            "server_tool_use": None,
            "service_tier": service_tier,
        }

    # ---- batches -----------------------------------------------------------------------------

    def create_batch(self, body: Any) -> dict[str, Any]:
        """``POST /v1/messages/batches``: validate every request, plan each outcome now."""
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise ApiError(400, "requests: at least one request is required")
        seen: set[str] = set()
        for index, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                raise ApiError(
                    400, f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"
                )
            if custom_id in seen:
                raise ApiError(
                    400, f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}"
                )
            seen.add(custom_id)
            _validate_params(
                item.get("params"), need_max_tokens=True, where=f"requests.{index}.params."
            )
        with self._lock:
            sequence = len(self._batches)
            planned: dict[str, str] = {}
            for item in requests:
                custom_id = item["custom_id"]
                digest = _seed(item["params"])
                attempt = self._batch_attempts[digest] = self._batch_attempts.get(digest, 0) + 1
                draw = random.Random(f"batch:{self.seed}:{digest}:{attempt}").random()
                if custom_id in self.expire_custom_ids:
                    self.expire_custom_ids.discard(custom_id)
                    planned[custom_id] = "expired"
                elif custom_id in self.error_custom_ids:
                    self.error_custom_ids.discard(custom_id)
                    planned[custom_id] = "errored"
                elif draw < self.batch_expire_fraction:
                    planned[custom_id] = "expired"
                elif draw < self.batch_expire_fraction + self.batch_error_fraction:
                    planned[custom_id] = "errored"
                else:
                    planned[custom_id] = "succeeded"
            batch = _Batch(
                id=f"msgbatch_{uuid.uuid4().hex[:24]}",
                sequence=sequence,
                created_at=datetime.now(UTC),
                requests=list(requests),
                planned=planned,
            )
            self._batches[batch.id] = batch
        return self._batch_json(batch)

    def _get_batch(self, batch_id: str) -> _Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No message batch found with id {batch_id!r}")
        return batch

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """``GET /v1/messages/batches/{id}``: counts one poll; ends the batch on the N-th."""
        batch = self._get_batch(batch_id)
        with self._lock:
            batch.polls += 1
            should_end = batch.ended_at is None and (
                batch.cancel_initiated_at is not None or batch.polls >= self.batch_polls_until_ended
            )
        if should_end:
            self._finish(batch)
        return self._batch_json(batch)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """``POST .../{id}/cancel``: ``canceling``; the next retrieval ends it, every request
        that had not ended coming back ``canceled``."""
        batch = self._get_batch(batch_id)
        with self._lock:
            if batch.ended_at is None and batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = datetime.now(UTC)
        return self._batch_json(batch)

    def delete_batch(self, batch_id: str) -> dict[str, Any]:
        """``DELETE .../{id}``: only once ended (400 otherwise, as the real API)."""
        batch = self._get_batch(batch_id)
        if batch.ended_at is None:
            raise ApiError(400, f"Message batch {batch_id} is still in progress; cancel it first")
        with self._lock:
            self._batches.pop(batch_id, None)
        return {"id": batch_id, "type": "message_batch_deleted"}

    def list_batches(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """``GET /v1/messages/batches``: newest first; ``limit`` (default 20), ``after_id``,
        ``before_id``."""
        limit = int(query.get("limit", ["20"])[0])
        with self._lock:
            ordered = sorted(self._batches.values(), key=lambda b: b.sequence, reverse=True)
        ids = [b.id for b in ordered]
        if "after_id" in query and query["after_id"][0] in ids:
            ordered = ordered[ids.index(query["after_id"][0]) + 1 :]
        elif "before_id" in query and query["before_id"][0] in ids:
            ordered = ordered[: ids.index(query["before_id"][0])][-limit:]
        page = ordered[:limit]
        data = [self._batch_json(b) for b in page]
        return {
            "data": data,
            "has_more": len(ordered) > len(page),
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def batch_results(self, batch_id: str) -> bytes:
        """``GET .../{id}/results``: JSONL, one ``MessageBatchIndividualResponse`` per line."""
        batch = self._get_batch(batch_id)
        if batch.ended_at is None:
            raise ApiError(400, f"Message batch {batch_id} has not ended; no results yet")
        return b"".join(json.dumps(line).encode() + b"\n" for line in batch.results)

    def _finish(self, batch: _Batch) -> None:
        results: list[dict[str, Any]] = []
        canceled = batch.cancel_initiated_at is not None
        for item in batch.requests:
            outcome = "canceled" if canceled else batch.planned[item["custom_id"]]
            result: dict[str, Any]
            if outcome == "succeeded":
                message = self.create_message(item["params"], service_tier="batch")
                result = {"type": "succeeded", "message": message}
            elif outcome == "errored":
                error = {"type": "api_error", "message": "Internal server error (injected)"}
                result = {"type": "errored", "error": {"type": "error", "error": error}}
            else:
                result = {"type": outcome}
            results.append({"custom_id": item["custom_id"], "result": result})
        if self.shuffle_results:
            random.Random(f"results:{self.results_seed}:{batch.sequence}").shuffle(results)
        with self._lock:
            batch.results = results
            batch.ended_at = datetime.now(UTC)

    def _batch_json(self, batch: _Batch) -> dict[str, Any]:
        with self._lock:
            ended = batch.ended_at is not None
            counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            if ended:
                for line in batch.results:
                    counts[line["result"]["type"]] += 1
            else:
                counts["processing"] = len(batch.requests)
            if ended:
                status = "ended"
            elif batch.cancel_initiated_at is not None:
                status = "canceling"
            else:
                status = "in_progress"
            return {
                "id": batch.id,
                "type": "message_batch",
                "processing_status": status,
                "request_counts": counts,
                "created_at": _rfc3339(batch.created_at),
                "expires_at": _rfc3339(batch.created_at + timedelta(hours=24)),
                "ended_at": _rfc3339(batch.ended_at),
                "cancel_initiated_at": _rfc3339(batch.cancel_initiated_at),
                "archived_at": None,
                "results_url": (
                    f"{self.base_url}/v1/messages/batches/{batch.id}/results" if ended else None
                ),
            }


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning :class:`MessagesAPIServer` (set as the ``api`` class
    attribute by ``start``). HTTP/1.1 with keep-alive, as the SDK's httpx pool expects."""

    api: MessagesAPIServer
    protocol_version = "HTTP/1.1"
    server_version = "messages-api-loopback/1"
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet by default: pytest captures stderr, and the request log is in ``api.requests``.
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ---- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.api._record(RecordedRequest(method, self.path, headers, raw, time.monotonic()))
        if self.api.response_delay_s:
            time.sleep(self.api.response_delay_s)
        try:
            self._route(method, urlsplit(self.path), headers, raw)
        except ApiError as exc:
            self._send_error(exc.status, exc.error_type, exc.message)
        except Exception as exc:  # a bug here should read as a 500, not a dropped connection
            self._send_error(500, "api_error", f"loopback server bug: {exc!r}")

    def _route(self, method: str, url: Any, headers: dict[str, str], raw: bytes) -> None:
        path: str = url.path.rstrip("/")
        # anthropic 2.11.0 sends ``api_key`` as ``Authorization: Bearer``; older SDKs and curl
        # examples use ``x-api-key``: either authenticates.
        authorization = headers.get("authorization", "")
        bearer = (
            authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else ""
        )
        if not headers.get("x-api-key") and not bearer:
            raise ApiError(401, "x-api-key header or Authorization: Bearer is required")
        if not headers.get("anthropic-version"):
            raise ApiError(400, "anthropic-version: header is required")
        if method == "POST" and path in ("/v1/messages", "/v1/messages/count_tokens"):
            fault = self.api._next_fault()
            if fault is not None and fault.delay_s:
                time.sleep(fault.delay_s)
            if fault is not None and fault.status != 200:
                self._send_fault(fault)
                return
            body = self._json_body(raw)
            if path == "/v1/messages/count_tokens":
                answer = self.api.count_tokens(body)
            else:
                malformed = fault is not None and fault.malformed_output
                answer = self.api.create_message(body, malformed=malformed)
            if fault is not None and fault.invalid_json_body:
                # A cut-off body, as a proxy dropping the connection mid-answer would leave.
                self._send(200, json.dumps(answer).encode()[:20], "application/json")
            else:
                self._send_json(200, answer)
            return
        parts = path.split("/")[1:]  # ["v1", "messages", "batches", id?, action?]
        if parts[:3] != ["v1", "messages", "batches"] or len(parts) > 5:
            raise ApiError(404, f"Not found: {method} {path}")
        batch_id = parts[3] if len(parts) > 3 else None
        action = parts[4] if len(parts) > 4 else None
        if method == "POST" and batch_id is None:
            self._send_json(200, self.api.create_batch(self._json_body(raw)))
        elif method == "GET" and batch_id is None:
            self._send_json(200, self.api.list_batches(parse_qs(url.query)))
        elif method == "GET" and batch_id and action is None:
            self._send_json(200, self.api.retrieve_batch(batch_id))
        elif method == "GET" and batch_id and action == "results":
            self._send(200, self.api.batch_results(batch_id), "application/x-jsonl")
        elif method == "POST" and batch_id and action == "cancel":
            self._send_json(200, self.api.cancel_batch(batch_id))
        elif method == "DELETE" and batch_id and action is None:
            self._send_json(200, self.api.delete_batch(batch_id))
        else:
            raise ApiError(404, f"Not found: {method} {path}")

    @staticmethod
    def _json_body(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"There was an error parsing the body: {exc}") from exc

    # ---- responses ---------------------------------------------------------------------------

    def _send_fault(self, fault: Fault) -> None:
        extra: dict[str, str] = {}
        if fault.retry_after is not None:
            extra["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            extra["retry-after-ms"] = f"{fault.retry_after_ms:g}"
        if fault.should_retry is not None:
            extra["x-should-retry"] = "true" if fault.should_retry else "false"
        error_type = _ERROR_TYPES.get(fault.status, "api_error")
        message = fault.message or {
            "rate_limit_error": "Number of request tokens has exceeded your rate limit (injected)",
            "overloaded_error": "Overloaded (injected)",
        }.get(error_type, "Internal server error (injected)")
        self._send_error(fault.status, error_type, message, extra)

    def _send_error(
        self, status: int, error_type: str, message: str, extra: dict[str, str] | None = None
    ) -> None:
        body = {"type": "error", "error": {"type": error_type, "message": message}}
        self._send_json(status, body, extra)

    def _send_json(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", extra)

    def _send(
        self, status: int, payload: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def main(argv: list[str] | None = None) -> None:
    """``python tests/support/messages_api.py --port 8765``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--batch-polls", type=int, default=1, help="retrievals until a batch ends")
    parser.add_argument("--overload-fraction", type=float, default=0.0, help="share of 529s")
    parser.add_argument("--batch-error-fraction", type=float, default=0.0)
    parser.add_argument("--batch-expire-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = MessagesAPIServer(
        host=args.host,
        port=args.port,
        batch_polls_until_ended=args.batch_polls,
        overload_fraction=args.overload_fraction,
        batch_error_fraction=args.batch_error_fraction,
        batch_expire_fraction=args.batch_expire_fraction,
        seed=args.seed,
    )
    with server:
        print(f"Messages API on {server.base_url} (ANTHROPIC_BASE_URL); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print("stopping", flush=True)


if __name__ == "__main__":
    main()
