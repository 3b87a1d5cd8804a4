"""Log redaction (a pure structlog processor) and the configured JSON output."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog

from pipeline.logging import REDACTED, configure_logging, is_secret_key, redact_event

SECRET = "sk-ant-very-secret-value"


@pytest.mark.parametrize(
    ("method", "event", "expected"),
    [
        # Secret-looking keys are redacted at every level, nested mappings included.
        ("info", {"event": "e", "api_key": SECRET}, {"event": "e", "api_key": REDACTED}),
        (
            "debug",
            {"event": "e", "Authorization": SECRET},
            {"event": "e", "Authorization": REDACTED},
        ),
        ("info", {"access_token": SECRET}, {"access_token": REDACTED}),
        ("info", {"github_webhook_secret": SECRET}, {"github_webhook_secret": REDACTED}),
        ("warning", {"password": SECRET}, {"password": REDACTED}),
        ("info", {"x-hub-signature-256": SECRET}, {"x-hub-signature-256": REDACTED}),
        ("info", {"headers": {"token": SECRET, "a": 1}}, {"headers": {"token": REDACTED, "a": 1}}),
        # Counters that merely contain a secret word pass.
        ("info", {"tokens_out": 12, "tokens_in": 3}, {"tokens_out": 12, "tokens_in": 3}),
        # Bodies: their length at INFO and above, the text itself at DEBUG.
        ("info", {"content": "hello"}, {"content_chars": 5}),
        ("error", {"prompt": "abc", "body": b"xy"}, {"prompt_chars": 3, "body_chars": 2}),
        ("warning", {"text": None}, {}),
        (
            "info",
            {"messages": [{"role": "user", "content": "hey"}, {"role": "system", "content": "x"}]},
            {"messages_chars": 4},
        ),
        ("exception", {"content": "abcd"}, {"content_chars": 4}),
        ("unknown-method", {"content": "ab"}, {"content_chars": 2}),
        ("debug", {"content": "hello", "prompt": "p"}, {"content": "hello", "prompt": "p"}),
        # Everything else untouched.
        (
            "info",
            {"interaction_id": 7, "project": "acme/w"},
            {"interaction_id": 7, "project": "acme/w"},
        ),
    ],
)
def test_redact_event(method: str, event: dict[str, Any], expected: dict[str, Any]) -> None:
    before = dict(event)
    assert redact_event(None, method, event) == expected
    assert event == before  # pure: the input is left alone


def test_is_secret_key() -> None:
    assert all(map(is_secret_key, ["api_key", "APIKEY", "x_api_key", "bearer_token", "signature"]))
    assert not any(map(is_secret_key, ["tokens", "tokens_out", "keyword", "task_id", "secretary"]))


def _json_lines(err: str) -> list[dict[str, Any]]:
    lines = [line for line in err.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # each line is one JSON object


def test_json_logs_carry_bound_context_and_no_secret(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(json_logs=True, level="INFO")
    log = structlog.get_logger("t")
    with structlog.contextvars.bound_contextvars(task_id="abc-123", project="acme/widgets"):
        log.info("did_work", api_key=SECRET, content="a prompt body", tokens_out=5)
        logging.getLogger("some.stdlib.lib").warning("stdlib %s", "line")
    log.debug("hidden", content="x")
    err = capsys.readouterr().err
    assert SECRET not in err and "a prompt body" not in err
    first, second = _json_lines(err)
    assert first["event"] == "did_work" and first["level"] == "info"
    assert first["task_id"] == "abc-123" and first["project"] == "acme/widgets"
    assert first["api_key"] == REDACTED and first["content_chars"] == 13
    assert first["tokens_out"] == 5 and first["timestamp"].endswith("Z")
    assert second["event"] == "stdlib line" and second["level"] == "warning"
    assert second["task_id"] == "abc-123"


def test_configure_twice_keeps_one_stdlib_handler(restore_logging: None) -> None:
    configure_logging(json_logs=True)
    configure_logging(json_logs=False, level="debug")
    mine = [h for h in logging.getLogger().handlers if getattr(h, "_patterns_handler", False)]
    assert len(mine) == 1
    assert logging.getLogger().level == logging.DEBUG
