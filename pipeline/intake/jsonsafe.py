"""Parsed JSON made safe to store: what Postgres and UTF-8 cannot hold is replaced or refused.

Pure, no I/O. The producer endpoints parse request bodies with :func:`load_json` (strict); the
normaliser passes what it builds through :func:`safe_text` and, for free-form metadata,
:func:`sanitize_json` with ``strict=False``, so files read by ``patterns run`` obey the same rules.

The rules (README, "API"):

- **Text** (values and object keys): U+0000 and lone surrogates (U+D800-U+DFFF, which JSON's
  ``\\ud800`` escapes can produce) become U+FFFD, the replacement character. Postgres ``text``
  and ``jsonb`` cannot hold U+0000 ("PostgreSQL text fields cannot contain NUL"), and a lone
  surrogate cannot be encoded as UTF-8; a real delivery with a NUL in a pull-request body is still
  stored and extracted.
- **Numbers**: a float that is not finite (the non-standard literals ``NaN``, ``Infinity``, or a
  literal beyond the double range such as ``1e999``) or an integer outside the signed 64-bit range
  (Postgres ``bigint``) is refused, naming its path (:class:`UnsafeJsonError`, HTTP 422).
  Lenient mode keeps it as its string form.
- **Nesting**: arrays and objects nested deeper than :data:`MAX_DEPTH` levels are refused
  (:class:`JsonTooDeepError`, HTTP 400). Lenient mode replaces the too-deep value with ``null``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pipeline.errors import MalformedInputError

#: Most levels of arrays and objects in a document (the document's own object is level 1). A
#: GitHub delivery uses under 10; ``POST /v1/interactions`` metadata gets what a bulk array and
#: its item leave (62).
MAX_DEPTH = 64
#: Postgres ``bigint``, the widest integer column (``projects.github_repo_id``).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: What a stored string may not contain: NUL and (necessarily lone, in a Python string) surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"

Loc = tuple[str | int, ...]


class UnsafeJsonError(MalformedInputError):
    """A number that cannot be stored faithfully. ``loc`` is its path (keys and indexes)."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(f"{dotted(loc)}: {msg}")
        self.loc = loc
        self.msg = msg


class JsonTooDeepError(MalformedInputError, ValueError):
    """Arrays and objects nested deeper than :data:`MAX_DEPTH`. ``loc`` is where it crossed."""

    def __init__(self, loc: Loc, max_depth: int) -> None:
        where = f" at {dotted(loc)}" if loc else ""
        super().__init__(f"JSON nested deeper than {max_depth} levels{where}")
        self.loc = loc


#: Longest path quoted in a message (the path of a deep refusal can be long).
MAX_PATH_CHARS = 200


def dotted(loc: Loc) -> str:
    """A path as text: ``pull_request.labels[0].name`` (``<root>`` for the empty path), cut to
    its last :data:`MAX_PATH_CHARS` characters."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(out) > MAX_PATH_CHARS:
        out = "..." + out[-MAX_PATH_CHARS:]
    return out or "<root>"


def safe_text(value: str) -> str:
    """``value`` with U+0000 and lone surrogates replaced by U+FFFD (the same string object
    when there is none: the check is one regular-expression scan)."""
    if _UNSTORABLE.search(value) is None:
        return value
    return _UNSTORABLE.sub(REPLACEMENT, value)


def _number(value: int | float, loc: Loc, strict: bool) -> int | float | str:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        problem = "number is not finite (NaN, Infinity, or beyond the double range)"
    elif INT64_MIN <= value <= INT64_MAX:
        return value
    else:
        problem = "integer outside the signed 64-bit range"
    if strict:
        raise UnsafeJsonError(loc, problem)
    return str(value)


def sanitize_json(value: Any, *, strict: bool = True, max_depth: int = MAX_DEPTH) -> Any:
    """A copy of a parsed JSON value (dicts, lists, str, int, float, bool, None) that obeys the
    module's rules: text cleaned by :func:`safe_text`, keys included.

    Args:
        strict: refuse unusable numbers and nesting (raise); else keep numbers as strings and
            drop too-deep values to ``None``.
        max_depth: most levels of arrays and objects, counting ``value``'s own.

    Raises:
        UnsafeJsonError: strict, a non-finite float or an integer outside 64 bits.
        JsonTooDeepError: strict, nesting deeper than ``max_depth``.
    """

    def walk(item: Any, loc: Loc) -> Any:
        if isinstance(item, str):
            return safe_text(item)
        if item is None or isinstance(item, bool):
            return item
        if isinstance(item, int | float):
            return _number(item, loc, strict)
        if not isinstance(item, dict | list):
            return safe_text(str(item))  # not a JSON type: keep what it says
        if len(loc) >= max_depth:  # the path's containers plus this one exceed the limit
            if strict:
                raise JsonTooDeepError(loc, max_depth)
            return None
        if isinstance(item, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(item)]
        out = {}
        for k, v in item.items():
            key = safe_text(str(k))  # the path of a refusal is echoed: it must be encodable
            out[key] = walk(v, (*loc, key))
        return out

    return walk(value, ())


def load_json(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body and :func:`sanitize_json` it (strict).

    Raises:
        ValueError: not JSON, or not UTF-8 (``UnicodeDecodeError``), or an integer literal of
            over 4,300 digits (Python's limit), or nested too deep for the parser itself
            (:class:`JsonTooDeepError`).
        JsonTooDeepError: nesting deeper than ``max_depth``.
        UnsafeJsonError: a non-finite number or an integer outside 64 bits, with its path.
    """
    try:
        data = json.loads(raw)
    except RecursionError as exc:  # far deeper than max_depth: the C parser gave up first
        raise JsonTooDeepError((), max_depth) from exc
    return sanitize_json(data, strict=True, max_depth=max_depth)
