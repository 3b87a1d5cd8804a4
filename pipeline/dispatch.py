"""Publishing work: the :class:`Dispatcher` protocol the library hands its follow-ups to.

The library never imports Celery (DESIGN.md: ``pipeline/`` never imports ``workers/``). Entry
points build a dispatcher (``workers.dispatch.CeleryDispatcher``: Redis, or in process without
``REDIS_URL``) and pass it in; the task names and queues it publishes to are in
:mod:`pipeline.queues`. Message shapes are part of the interface: a message published by an older
producer, or re-published by the outbox sweeper, must still run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Protocol

from pipeline.types import ClaudeMode, TaskType


class Dispatcher(Protocol):
    """Publishes work. ``eager`` is true when publishing runs the work before returning.

    Every method raises :class:`~pipeline.errors.RetryableError` when the broker cannot be
    reached (nothing was published).
    """

    eager: bool

    def extract(
        self,
        interaction_ids: Sequence[int],
        *,
        route: bool = True,
        claude_mode: ClaudeMode = ClaudeMode.SYNC,
    ) -> None:
        """Publish one extract task (``patterns.extract_batch``) for a batch of interactions.

        ``route=False``: the batch was routed already (Claude handed it back), extract all of it
        locally. ``claude_mode`` ``batch``: what is routed to Claude goes through the Message
        Batches API.
        """
        ...

    def claude(
        self,
        interaction_ids: Sequence[int],
        task_type: TaskType,
        *,
        claude_mode: ClaudeMode = ClaudeMode.SYNC,
    ) -> None:
        """Publish one Claude task (``task_type`` over the interactions) to the claude queue."""
        ...

    def analyze_local(
        self, interaction_ids: Sequence[int], route_reasons: Mapping[int, str] | None = None
    ) -> None:
        """Publish strategic analysis of the interactions on the local model (extract queue);
        ``route_reasons[id]`` is recorded with each model call."""
        ...

    def embed(self, pattern_ids: Sequence[uuid.UUID]) -> None:
        """Publish the embedding of new patterns (embed queue)."""
        ...

    def feedback(self, interaction_ids: Sequence[int]) -> None:
        """Publish GitHub feedback comments for the interactions' deliveries (embed queue)."""
        ...

    def cross_check(self, interaction_ids: Sequence[int]) -> None:
        """Publish the Claude cross-check of the interactions' local extractions (claude
        queue; :func:`pipeline.quality.crosscheck.cross_check_batch`)."""
        ...
