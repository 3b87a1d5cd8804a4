"""Prompts for pattern extraction.

The example is given as an earlier chat turn (user, then assistant) rather than inside the
instructions: measured on SmolLM2-135M over 32 celery pull requests, an inline example was copied
verbatim in most answers, a separate turn far less often. Patterns that still repeat the
example's titles are dropped by :func:`pipeline.extract.batch.parse_output`.

Version 2 (schema 2, which admits a trivial answer) was chosen by measurement on the shared
gold with ``patterns eval`` (docs/QUALITY.md): 18 variants of instructions, examples (a trivial
one, a configuration one, their order) and the place of ``trivial`` in the answer. The 135M
model copies the shape of the last example: with a trivial example last it called every pull
request trivial, with it first it still missed most lessons, so trivial pull requests are
recognised by rules instead (:mod:`pipeline.extract.trivial`) and the example stays a lesson.
Asking for "the general lesson ... never the pull request's own title" and writing ``trivial``
after the patterns gave the best f1 of the variants.
"""

from __future__ import annotations

from pipeline.text import normalize_title

#: Bump when wording changes: part of the extraction idempotency key.
PROMPT_VERSION = "2"

SYSTEM = (
    "You extract reusable software engineering patterns from one pull request, issue or "
    "comment. Reply with JSON only. patterns: 1 to 3 items, each with a type, a short title "
    "naming the general lesson in your own words (never the pull request's own title), a "
    "one-sentence description, a confidence between 0 and 1 and evidence "
    "quoted from the text. relationships: how the patterns relate, naming source and target by "
    "the exact titles you gave."
)

EXAMPLE_USER = (
    "Pull request #1: fix(worker): reconnect to broker after connection loss\n\n"
    "When Redis restarts the worker hangs. This adds a retry loop with exponential backoff and a "
    "test that drops the connection.\n\nFiles changed (2):\n"
    "- celery/worker/consumer.py (+40/-3)\n- t/unit/worker/test_consumer.py (+25/-0)"
)

EXAMPLE_ASSISTANT = (
    '{"patterns":[{"type":"error_handling","title":"Reconnect with exponential backoff",'
    '"description":"Retry the broker connection with growing delays instead of hanging when the '
    'broker restarts.","confidence":0.8,"evidence":"adds a retry loop with exponential backoff"},'
    '{"type":"testing","title":"Test for dropped broker connection","description":"A unit test '
    'that simulates a dropped connection to cover the reconnect path.","confidence":0.7,'
    '"evidence":"test that drops the connection"}],"relationships":[{"source":"Test for dropped '
    'broker connection","target":"Reconnect with exponential backoff","type":"depends_on",'
    '"strength":0.7,"confidence":0.7}],"trivial":false}'
)

#: Normalised titles of the example's patterns: a pattern with one of these echoes the prompt.
EXAMPLE_TITLES = frozenset(
    normalize_title(t)
    for t in ("Reconnect with exponential backoff", "Test for dropped broker connection")
)


def extraction_messages(content: str, *, max_chars: int) -> list[dict[str, str]]:
    """Chat messages asking for the patterns of one interaction.

    ``content`` is cut to ``max_chars`` characters (the cut is marked) so that a long body cannot
    push the prompt past the model's context.
    """
    if len(content) > max_chars:
        content = content[:max_chars].rstrip() + "\n[... truncated]"
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": EXAMPLE_USER},
        {"role": "assistant", "content": EXAMPLE_ASSISTANT},
        {"role": "user", "content": content},
    ]
