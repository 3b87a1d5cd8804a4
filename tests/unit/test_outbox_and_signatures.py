"""Unit tests of the pure producer pieces: webhook signatures (GitHub's test vector), the outbox
sweep decision, API keys and the feedback comment."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from pipeline.github.feedback import SimilarPattern, render_comment
from pipeline.intake.apikeys import KEY_PREFIX, generate_key, hash_key
from pipeline.intake.outbox import Dead, Republish, Wait, sweep_decision
from pipeline.intake.signatures import sign, verify_signature
from pipeline.settings import Settings

# docs.github.com, "Validating webhook deliveries", "Testing the webhook payload validation".
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_test_vector() -> None:
    assert sign(GITHUB_SECRET, GITHUB_PAYLOAD) == GITHUB_SIGNATURE
    assert verify_signature(GITHUB_SECRET, GITHUB_PAYLOAD, GITHUB_SIGNATURE)
    assert verify_signature(GITHUB_SECRET.encode(), GITHUB_PAYLOAD, GITHUB_SIGNATURE)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        GITHUB_SIGNATURE.removeprefix("sha256="),  # the prefix is required
        "sha1=" + GITHUB_SIGNATURE.removeprefix("sha256="),
        GITHUB_SIGNATURE.upper(),
        GITHUB_SIGNATURE[:-1] + "0",
        "sha256=",
        "sha256=ü",
    ],
)
def test_wrong_or_missing_signatures_fail(header: str | None) -> None:
    assert not verify_signature(GITHUB_SECRET, GITHUB_PAYLOAD, header)


def test_signature_covers_every_byte() -> None:
    assert not verify_signature(GITHUB_SECRET, GITHUB_PAYLOAD + b" ", GITHUB_SIGNATURE)
    assert not verify_signature("another secret", GITHUB_PAYLOAD, GITHUB_SIGNATURE)


S = Settings(outbox_stale_after_s=600, outbox_max_attempts=5)


@pytest.mark.parametrize(
    ("attempts", "age", "expected"),
    [
        (0, 0.0, Wait),
        (1, 599.9, Wait),
        (5, 599.9, Wait),  # not stale: even the last attempt gets its full time
        (0, 600.0, Republish),  # never published (the publish after commit failed)
        (1, 600.0, Republish),
        (4, 10_000.0, Republish),
        (5, 600.0, Dead),
        (9, 600.0, Dead),
    ],
)
def test_sweep_decision(attempts: int, age: float, expected: type) -> None:
    assert isinstance(sweep_decision(attempts, age, S), expected)


def test_dead_names_the_attempts_and_the_setting() -> None:
    decision = sweep_decision(5, 1234.4, S)
    assert isinstance(decision, Dead)
    assert "5 delivery attempts" in decision.reason
    assert "1234 s" in decision.reason
    assert "PATTERNS_OUTBOX_MAX_ATTEMPTS=5" in decision.reason


def test_sweep_decision_follows_settings() -> None:
    quick = Settings(outbox_stale_after_s=20, outbox_max_attempts=1)
    assert isinstance(sweep_decision(0, 20, quick), Republish)
    assert isinstance(sweep_decision(1, 20, quick), Dead)
    assert isinstance(sweep_decision(1, 19, quick), Wait)


def test_api_keys_are_random_and_hashed() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43
        assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
        assert len(hash_key(key)) == 64


def test_feedback_comment() -> None:
    similar = [
        SimilarPattern(
            uuid.UUID(int=1), "Retry with | backoff", "solution", 0.91234, "https://x/1"
        ),
        SimilarPattern(uuid.UUID(int=2), "Pin\\nversions", "best_practice", 0.5, None),
    ]
    body = render_comment("d-1", "celery/celery", similar)
    lines = body.splitlines()
    assert lines[0] == "<!-- pattern-pipeline:feedback delivery=d-1 -->"
    assert "celery\\/celery" in lines[1]  # Markdown punctuation is escaped (renders as "/")
    assert "| Retry with \\| backoff | solution | 0.91 | [source](https://x/1) |" in lines
    assert "| Pin\\\\nversions | best\\_practice | 0.50 |  |" in lines
