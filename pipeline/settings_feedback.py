"""Settings of feedback loops: people's verdicts on our GitHub feedback comments (the beat poll
of :mod:`pipeline.github.verdicts`), and the compiler's on suggested TypeScript fixes (the
compiler-in-the-loop retry of :mod:`pipeline.errorfix.loop`).

:class:`FeedbackSettings` is a base of :class:`pipeline.settings.Settings` (one object, read
from the environment once at the entry point); it holds fields only, no configuration of its own.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class FeedbackSettings(BaseSettings):
    """Feedback-loop settings (``PATTERNS_<FIELD NAME>``); see
    :class:`pipeline.settings.Settings`."""

    verdicts_poll_interval_s: float = Field(
        default=900,
        ge=0,
        description="Seconds between beat's polls of reactions and replies on our feedback "
        "comments (needs PATTERNS_GITHUB_TOKEN); 0 disables them.",
    )
    verdicts_window_days: float = Field(
        default=14,
        gt=0,
        description="Feedback comments are polled for verdicts this many days after posting.",
    )
    verdicts_max_threads: int = Field(
        default=100,
        ge=1,
        description="Issue or pull request threads read per poll, least recently polled first "
        "(each costs 1 request per page of comments plus 1 per feedback comment in it).",
    )
    errorfix_compile_retry: bool = Field(
        default=True,
        description="Send a suggested fix that tsc does not verify (it does not compile or "
        "still reports its error code) back to the model once, with tsc's diagnostics.",
    )
    errorfix_compile_retry_max_tokens: int = Field(
        default=384, ge=16, description="Token limit of the compiler-in-the-loop retry."
    )
    errorfix_compile_retry_temperature: float = Field(
        default=0.7,
        ge=0,
        description="Sampling temperature of the compiler-in-the-loop retry (greedy decoding "
        "mostly repeats the rejected fix: pipeline.errorfix.loop).",
    )
