"""Redacted task-argument summaries (``argsrepr``/``kwargsrepr``) as a table (pure, no I/O)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from workers.redaction import redact_repr

PROMPT = "Summarise the following pull request discussion and list the decisions: " * 3
UUIDS = [str(uuid.UUID(int=n)) for n in (1, 2, 3)]


@pytest.mark.parametrize(
    ("args", "kwargs", "expected_args", "expected_kwargs"),
    [
        ((), {}, "()", "{}"),
        (None, None, "()", "{}"),
        ((list(range(101, 133)),), {}, "([32 ids: 101..132],)", "{}"),
        (([7],), {}, "([1 id: 7],)", "{}"),
        (([132, 101, 120], False, "local"), {}, "([3 ids: 101..132], False, 'local')", "{}"),
        ((UUIDS,), {}, f"([3 ids: {UUIDS[0]}..{UUIDS[-1]}],)", "{}"),
        ((PROMPT,), {}, f"('<redacted {len(PROMPT)} chars>',)", "{}"),
        (("x" * 64,), {}, f"('{'x' * 64}',)", "{}"),
        (("x" * 65,), {}, "('<redacted 65 chars>',)", "{}"),
        (
            (),
            {"api_key": "sk-1", "prompt_tokens": 12},
            "()",
            "{'api_key': '<redacted 4 chars>', 'prompt_tokens': 12}",
        ),
        ((), {"api_key": "sk-1"}, "()", "{'api_key': '<redacted 4 chars>'}"),
        ((), {"prompt": "hi"}, "()", "{'prompt': '<redacted 2 chars>'}"),
        ((), {"Authorization": "Bearer x"}, "()", "{'Authorization': '<redacted 8 chars>'}"),
        ((), {"max_tokens": 512, "retry": True}, "()", "{'max_tokens': 512, 'retry': True}"),
        ((), {"ratio": 0.5, "mode": None}, "()", "{'ratio': 0.5, 'mode': None}"),
        (
            ([1, 2], {"1": PROMPT, "2": "short reason"}),
            {},
            f"([2 ids: 1..2], {{'1': '<redacted {len(PROMPT)} chars>', '2': 'short reason'}})",
            "{}",
        ),
        (
            ({"content": ["a", "b"], "n": 1},),
            {},
            "({'content': '<redacted 10 chars>', 'n': 1},)",
            "{}",
        ),
        (([*range(20), "x y"],), {}, "([21 items],)", "{}"),
        (({str(n): n for n in range(9)},), {}, "({9 entries},)", "{}"),
        ((["a b", 1],), {}, "(['a b', 1],)", "{}"),
        (([[[[1, "a b"]]]],), {}, "([[[1 item]]],)", "{}"),
        ((object(),), {}, "(<object>,)", "{}"),
    ],
)
def test_redact_repr_table(
    args: Any, kwargs: Any, expected_args: str, expected_kwargs: str
) -> None:
    assert redact_repr(args, kwargs) == (expected_args, expected_kwargs)


def test_no_secret_or_long_text_survives() -> None:
    secret = "sk-ant-" + "z" * 40
    argsrepr, kwargsrepr = redact_repr(
        ([1, 2, 3], {"nested": {"token": secret}}, [PROMPT]),
        {"body": PROMPT, "password": "hunter2", "note": PROMPT[:70]},
    )
    shown = argsrepr + kwargsrepr
    for text in (secret, "hunter2", PROMPT[:65]):
        assert text not in shown
    assert "[3 ids: 1..3]" in argsrepr
