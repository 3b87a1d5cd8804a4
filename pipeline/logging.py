"""Log configuration: structlog to stderr, JSON for machines or key-value for people.

Every line carries the context bound with :mod:`structlog.contextvars` (``task_id`` and ``task``
in workers, ``interaction_id`` and ``project`` where one interaction is handled, ``delivery_id``
in the webhook), a level and an ISO timestamp, and goes through :func:`redact_event`: secret
values never reach a log, and prompt or body text only at DEBUG. stdlib loggers (Celery, uvicorn,
SQLAlchemy) are rendered by the same processors through structlog's ``ProcessorFormatter``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

#: Value that replaces a secret in a log line.
REDACTED = "<redacted>"

#: A key is secret when one of these is a whole ``_``-separated part of it (``api_key``,
#: ``x_hub_signature_256``, ``github_webhook_secret``), so counters such as ``tokens_out`` pass.
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:api_?key|authorization|token|secret|password|signature)(?:_|$)"
)

#: Keys holding prompt or body text: at INFO and above only their length is logged, as
#: ``<key>_chars``.
BODY_KEYS = frozenset({"prompt", "messages", "content", "body", "text"})

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

#: Third-party loggers that are chatty at INFO.
_NOISY = ("vllm", "transformers", "sentence_transformers", "httpx", "alembic")

#: Marks the root handler :func:`configure_logging` installs, so a second call replaces it.
_HANDLER_FLAG = "_patterns_handler"


def is_secret_key(key: str) -> bool:
    """Whether a log key names a secret (case and ``-`` versus ``_`` do not matter)."""
    return _SECRET_KEY.search(key.lower().replace("-", "_")) is not None


def _chars(value: Any) -> int:
    """Characters of a body: a string's length; for chat messages, the sum of their contents."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(
            _chars(item.get("content", "")) if isinstance(item, Mapping) else _chars(item)
            for item in value
        )
    return len(str(value))


def _redact_secrets(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else _redact_secrets(v)
            for k, v in value.items()
        }
    return value


def redact_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace secret values with ``"<redacted>"`` (nested mappings too)
    and, at INFO and above, replace prompt/body keys (:data:`BODY_KEYS`) with their length in
    characters under ``<key>_chars``. Pure: returns a new dict, ``event_dict`` is left as is.

    The level is the logger method's name (``info``, ``warning``...); an unknown one counts as
    INFO, so bodies are dropped when in doubt.
    """
    level = _LEVELS.get(method_name, logging.INFO)
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if is_secret_key(key):
            out[key] = REDACTED
        elif key in BODY_KEYS and level >= logging.INFO:
            if value is not None:
                out[f"{key}_chars"] = _chars(value)
        else:
            out[key] = _redact_secrets(value)
    return out


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_event,
    ]


def configure_logging(*, json_logs: bool, level: str = "INFO") -> None:
    """structlog and stdlib logging to stderr at ``level`` (a logging level name, e.g.
    ``"INFO"``): one JSON object per line with ``json_logs``, else coloured key-value lines.
    Quiets chatty third-party loggers to WARNING. Safe to call more than once: the last call wins.

    Raises:
        AttributeError: ``level`` is not a logging level name.
    """
    numeric = getattr(logging, level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    # JSON needs tracebacks as a string; the console renderer formats exceptions itself.
    tail: list[Any] = [structlog.processors.format_exc_info] if json_logs else []
    structlog.configure(
        processors=[*_shared_processors(), *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_shared_processors()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    setattr(handler, _HANDLER_FLAG, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
