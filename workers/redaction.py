"""Redacted task-argument summaries for monitoring (Flower, ``celery events``, worker logs).

Celery message protocol 2 carries, beside the real arguments in the body, two display strings in
the headers: ``argsrepr`` and ``kwargsrepr``. Workers log them, the ``task-sent`` and
``task-received`` events carry them, and Flower shows and stores them (its persistent state file
included). By default they are ``saferepr`` of the arguments, which would put prompt text, model
output or a token on an operator's screen. Here they are replaced by a summary: id lists become
``[32 ids: 101..132]``, long strings and values under secret-looking keys become
``'<redacted N chars>'``; the body, which the worker runs, is untouched.

The summary is made where Celery builds the message (:class:`RedactingAMQP`), not in a
``before_task_publish`` handler: the ``task-sent`` event is built from the same strings before
that signal fires, so a handler would redact the headers but not the event Flower records first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from celery.app.amqp import AMQP

from pipeline.logging import BODY_KEYS, is_secret_key

#: Strings longer than this (characters) are never shown.
MAX_SHOWN_CHARS = 64
#: Containers with more entries than this are summarised by their size only.
MAX_SHOWN_ITEMS = 8
#: Nesting shown before a container is summarised by its size only.
MAX_DEPTH = 3
#: What an id looks like when given as a string: a UUID, a numeric id, a short slug.
_ID_PATTERN = re.compile(r"[\w.:-]{1,64}")


def _is_secret_key(key: object) -> bool:
    """The logs' rule (:func:`pipeline.logging.is_secret_key`: api keys, tokens, secrets,
    passwords, signatures) plus the keys that hold prompt or body text (``BODY_KEYS``)."""
    name = str(key)
    return is_secret_key(name) or name.lower() in BODY_KEYS


def _redacted(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return f"'<redacted {len(text)} chars>'"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids_summary(items: list[Any]) -> str | None:
    """``[N ids: first..last]`` for a list of int ids (min..max) or id-like strings (in order)."""
    if not items:
        return None
    noun = "id" if len(items) == 1 else "ids"
    if all(_is_int(item) for item in items):
        low, high = min(items), max(items)
        span = str(low) if low == high else f"{low}..{high}"
        return f"[{len(items)} {noun}: {span}]"
    if len(items) > 1 and all(
        isinstance(item, str) and _ID_PATTERN.fullmatch(item) for item in items
    ):
        return f"[{len(items)} {noun}: {items[0]}..{items[-1]}]"
    return None


def _summary(value: object, depth: int = 0) -> str:
    if value is None or isinstance(value, bool | float) or _is_int(value):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= MAX_SHOWN_CHARS else _redacted(value)
    if isinstance(value, Mapping):
        if len(value) > MAX_SHOWN_ITEMS or (value and depth >= MAX_DEPTH):
            return f"{{{len(value)} {'entry' if len(value) == 1 else 'entries'}}}"
        return _mapping_summary(value, depth)
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
        ids = _ids_summary(items)
        if ids is not None:
            return ids
        if len(items) > MAX_SHOWN_ITEMS or (items and depth >= MAX_DEPTH):
            return f"[{len(items)} {'item' if len(items) == 1 else 'items'}]"
        inner = ", ".join(_summary(item, depth + 1) for item in items)
        if isinstance(value, tuple):
            return f"({inner},)" if len(items) == 1 else f"({inner})"
        return f"[{inner}]"
    # Objects the JSON serializer would not even carry: name the type, never their repr.
    return f"<{type(value).__name__}>"


def _mapping_summary(mapping: Mapping[Any, Any], depth: int) -> str:
    parts = []
    for key, item in mapping.items():
        # Numbers, bools and None stay visible under any key (``max_tokens``: a count, not a
        # token); every other value under a secret-looking key is hidden, whatever its length.
        plain = item is None or isinstance(item, bool | int | float)
        secret = _is_secret_key(key) and not plain
        shown = _redacted(item) if secret else _summary(item, depth + 1)
        parts.append(f"{_summary(key, depth + 1)}: {shown}")
    return "{" + ", ".join(parts) + "}"


def redact_repr(
    args: list[Any] | tuple[Any, ...] | None, kwargs: Mapping[str, Any] | None
) -> tuple[str, str]:
    """``(argsrepr, kwargsrepr)`` of a task call with nothing sensitive in them.

    - ints, floats, bools, ``None`` and strings up to :data:`MAX_SHOWN_CHARS` characters: as
      ``repr``;
    - longer strings: ``'<redacted N chars>'`` (N is the length);
    - a value other than a number, bool or ``None`` under a secret or body key
      (:func:`_is_secret_key`; keyword arguments and dict entries): ``'<redacted N chars>'``
      (N is the length of the string, or of the ``repr`` of anything else);
    - a list of int ids: ``[32 ids: 101..132]`` (count, min..max); of id-like strings such as
      UUIDs: ``[5 ids: first..last]``;
    - other containers: element by element up to :data:`MAX_SHOWN_ITEMS` entries and
      :data:`MAX_DEPTH` levels, else ``[N items]`` / ``{N entries}``;
    - anything else: ``<TypeName>``.

    The positional arguments are shown as a tuple, like Celery's own ``argsrepr``.
    """
    positional = tuple(args or ())
    shown = ", ".join(_summary(arg, 1) for arg in positional)
    argsrepr = f"({shown},)" if len(positional) == 1 else f"({shown})"
    return argsrepr, _mapping_summary(dict(kwargs or {}), 0)


class RedactingAMQP(AMQP):  # type: ignore[misc]
    """Celery's AMQP helper, building protocol-2 messages with :func:`redact_repr` display
    strings unless the caller gave its own (``apply_async(argsrepr=...)``).

    Used as ``Celery(amqp=RedactingAMQP)``; covers ``delay``/``apply_async``, ``send_task``
    (beat), retries and the ``task-sent`` event alike.
    """

    def as_task_v2(
        self,
        task_id: str,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        *rest: Any,
        **options: Any,
    ) -> Any:
        if options.get("argsrepr") is None and options.get("kwargsrepr") is None:
            options["argsrepr"], options["kwargsrepr"] = redact_repr(args, kwargs)
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **options)
