"""The error hierarchy: one root, a retryable and a permanent branch.

Adapters wrap driver and HTTP errors at the boundary (``raise ... from exc``); Celery tasks list
:class:`RetryableError` in ``autoretry_for`` and let :class:`PermanentError` fail the task.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error this project raises on purpose."""


class RetryableError(PipelineError):
    """A transient failure (connection lost, server busy): the same call may succeed later."""


class PermanentError(PipelineError):
    """A failure that the same call will not fix again (bad input, missing model, bad config)."""


class ConfigurationError(PermanentError):
    """Settings or the environment are wrong: a model path that does not exist, a bad URL."""


class MalformedInputError(PermanentError):
    """An input record (delivery, interaction) cannot be understood. Carries the reason."""


class ModelOutputError(PipelineError):
    """A model's output is truncated or does not validate against the result schema.

    ``truncated`` is true when generation stopped at the token limit (finish reason ``length``).
    """

    def __init__(self, reason: str, *, truncated: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.truncated = truncated
