"""The error hierarchy: one root, a retryable and a permanent branch.

Adapters wrap driver and HTTP errors at the boundary (``raise ... from exc``): the database
adapter turns a lost connection into :class:`DatabaseUnavailableError` (retryable), the engines
turn provider failures into :class:`RetryableError` or :class:`PermanentError`. Celery tasks list
:class:`RetryableError` in ``autoretry_for`` and let :class:`PermanentError` fail the task; the
HTTP layer maps :class:`NotFoundError`, :class:`ForbiddenError` and :class:`ConflictError` to
404, 403 and 409.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error this project raises on purpose."""


class RetryableError(PipelineError):
    """A transient failure (connection lost, server busy): the same call may succeed later."""


class DatabaseUnavailableError(RetryableError):
    """Postgres could not be reached or dropped the connection (a restart, a failover, a network
    cut). The message is the driver's, without the statement's bound parameters."""


class PermanentError(PipelineError):
    """A failure that the same call will not fix again (bad input, missing model, bad config)."""


class ConfigurationError(PermanentError):
    """Settings or the environment are wrong: a model path that does not exist, a bad URL."""


class MalformedInputError(PermanentError):
    """An input record (delivery, interaction) cannot be understood. Carries the reason."""


class InvalidValueError(PermanentError, ValueError):
    """An argument outside its domain (a negative cost, zero days). Also a ``ValueError``."""


class NotFoundError(PermanentError):
    """The object asked for does not exist (or is not visible to the caller)."""


class ForbiddenError(PermanentError):
    """The object exists but belongs to another project than the caller's."""


class ConflictError(PermanentError):
    """The object is not in a state that allows the operation (e.g. no fix to review yet)."""


class ModelOutputError(PipelineError):
    """A model's output is truncated or does not validate against the result schema.

    ``truncated`` is true when generation stopped at the token limit (finish reason ``length``).
    """

    def __init__(self, reason: str, *, truncated: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.truncated = truncated
