"""A :class:`pipeline.dispatch.Dispatcher` that publishes nothing and records every call, for
tests of the code that decides what to publish."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RecordingDispatcher:
    """Records ``(method, ids)`` for each publish in ``calls``; ``eager`` as given."""

    def __init__(self, eager: bool = False) -> None:
        self.eager = eager
        self.calls: list[tuple[str, list[Any]]] = []

    def extract(self, interaction_ids: Sequence[int], *a: Any, **kw: Any) -> None:
        self.calls.append(("extract", list(interaction_ids)))

    def claude(self, interaction_ids: Sequence[int], *a: Any, **kw: Any) -> None:
        self.calls.append(("claude", list(interaction_ids)))

    def analyze_local(self, interaction_ids: Sequence[int], *a: Any, **kw: Any) -> None:
        self.calls.append(("analyze_local", list(interaction_ids)))

    def embed(self, pattern_ids: Sequence[Any]) -> None:
        self.calls.append(("embed", list(pattern_ids)))

    def feedback(self, interaction_ids: Sequence[int]) -> None:
        self.calls.append(("feedback", list(interaction_ids)))

    def cross_check(self, interaction_ids: Sequence[int]) -> None:
        self.calls.append(("cross_check", list(interaction_ids)))
