"""Which model does a piece of work: complexity scoring and :func:`route`, both pure.

Nothing here does I/O: the caller reads the interaction and the day's budget, and hands them in
(DESIGN.md: "Routing is a pure function"). The budget is enforced again, atomically, when a
Claude call reserves its worst-case cost (:func:`pipeline.spend.reservations.reserve`); routing
only avoids sending work to the Claude queue that the budget could not admit anyway.

Complexity (0-1) of one interaction is a weighted sum of four saturating features, each in 0-1:

============  ======  =============================================================================
feature       weight  saturates at
============  ======  =============================================================================
length        0.30    ``log1p(chars) / log1p(2000)``: a 2,000-character body counts as fully long
code          0.10    2 fenced code blocks, or 20 code-looking lines (diff, indented code, traces)
files         0.35    ``log1p(files) / log1p(15)`` or ``log1p(lines changed) / log1p(750)``,
                      whichever is larger
keywords      0.25    2 distinct words of :data:`COMPLEX_KEYWORDS` (design, migration, breaking...)
============  ======  =============================================================================

Metadata is read defensively: a count that is not an integer in ``1..2**53`` (a string, a float,
a bool, a negative, or a number no float holds, such as ``10**400`` written before the API refused
them) counts as absent, and metadata that is not an object counts as none. Scoring never raises
on stored values, so one interaction cannot fail the placement of its batch.

The weights and saturation points are this project's own heuristic, not from a paper: chosen so
that on the 1,933 celery pull requests of ``../shared/data/github`` (mostly small: median 249
characters, 1 file, 11 changed lines) the median scores 0.38, the 90th percentile 0.59, and 2.7%
reach the ``strategic_analysis`` threshold of 0.8 (see
``tests/unit/test_routing.py::test_complexity_distribution_on_the_corpus``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pipeline.queues import QUEUE_CLAUDE, QUEUE_EXTRACT
from pipeline.settings import Settings
from pipeline.spend.budget import BudgetState, admission
from pipeline.types import ROUTED_TASK_TYPES, Priority, Provider, Strategy, TaskType

#: Words that mark design-level or risky work (matched as whole words, case-insensitive).
COMPLEX_KEYWORDS = frozenset(
    {
        "architecture", "design", "migration", "migrate", "breaking", "backward", "compatibility",
        "deprecate", "deprecation", "security", "vulnerability", "performance", "concurrency",
        "race", "deadlock", "refactor", "refactoring", "protocol", "proposal", "rfc", "tradeoff",
        "trade-off", "scalability", "memory", "leak", "regression", "thread", "async",
    }
)  # fmt: skip

_WORD = re.compile(r"[a-z][a-z\-]+")
_FENCE = re.compile(r"^\s*```", re.MULTILINE)
_CODE_LINE = re.compile(r"^(?:    |\t|[+-](?![+-])|\s*at |\s*File \")", re.MULTILINE)
_FILE_LINE = re.compile(r"^- \S+ \(\+\d+/-\d+\)$", re.MULTILINE)

#: Kinds of interaction that strategic analysis looks at (pull requests and issues).
ANALYSED_KINDS = frozenset({"pull_request", "issue"})


@dataclass(frozen=True)
class ComplexityFeatures:
    """What complexity is computed from. ``files`` and ``lines_changed`` are 0 when unknown."""

    chars: int
    code_blocks: int
    code_lines: int
    files: int
    lines_changed: int
    keywords: int


#: Largest count believed from metadata: 2**53, the largest integer a float holds exactly.
MAX_METADATA_COUNT = 2**53


def _int(value: Any) -> int:
    """A usable count from metadata (an int in ``1..MAX_METADATA_COUNT``, not a bool), else 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value if 0 < value <= MAX_METADATA_COUNT else 0


def _log_share(count: int, saturation: int) -> float:
    """``log1p(count) / log1p(saturation)`` capped at 1, for any count (even one past floats)."""
    return min(1.0, math.log1p(min(max(count, 0), MAX_METADATA_COUNT)) / math.log1p(saturation))


def complexity_features(
    content: str, metadata: Mapping[str, Any] | None = None
) -> ComplexityFeatures:
    """Extract :class:`ComplexityFeatures` from an interaction's text and metadata.

    ``metadata`` may carry ``changed_files``, ``files`` (list), ``additions`` and ``deletions``
    (GitHub pull requests, see :mod:`pipeline.intake.normalize`); without them the
    ``- path (+a/-d)`` lines of the text are counted. Unusable values count as absent (module
    docstring); nothing here raises on stored values.
    """
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    files = _int(meta.get("changed_files"))
    if not files and isinstance(meta.get("files"), list):
        files = len(meta["files"])
    if not files:
        files = len(_FILE_LINE.findall(content))
    lines_changed = _int(meta.get("additions")) + _int(meta.get("deletions"))
    words = set(_WORD.findall(content.lower()))
    return ComplexityFeatures(
        chars=len(content),
        code_blocks=len(_FENCE.findall(content)) // 2,
        code_lines=len(_CODE_LINE.findall(content)),
        files=files,
        lines_changed=lines_changed,
        keywords=len(words & COMPLEX_KEYWORDS),
    )


def complexity_score(features: ComplexityFeatures) -> float:
    """Complexity in 0-1 from :class:`ComplexityFeatures` (weights in the module docstring),
    rounded to 3 decimals."""
    length = _log_share(features.chars, 2000)
    code = min(1.0, max(features.code_blocks / 2, features.code_lines / 20))
    files = max(_log_share(features.files, 15), _log_share(features.lines_changed, 750))
    keywords = min(1.0, features.keywords / 2)
    return round(0.30 * length + 0.10 * code + 0.35 * files + 0.25 * keywords, 3)


def complexity(content: str, metadata: Mapping[str, Any] | None = None) -> float:
    """:func:`complexity_score` of :func:`complexity_features`."""
    return complexity_score(complexity_features(content, metadata))


def priority_of(metadata: Mapping[str, Any] | None) -> Priority:
    """An interaction's priority: ``emergency`` when its metadata says ``"priority":
    "emergency"`` (set by the client of ``POST /v1/interactions``), else ``normal``."""
    value = metadata.get("priority") if isinstance(metadata, Mapping) else None
    return Priority.EMERGENCY if value == Priority.EMERGENCY.value else Priority.NORMAL


def needs_strategic_analysis(kind: str, score: float, settings: Settings) -> bool:
    """Whether an interaction gets strategic analysis: a pull request or issue whose complexity
    reaches the ``strategic_analysis`` threshold (so, under ``hybrid``, exactly the ones that
    would go to Claude while the budget lasts)."""
    return (
        kind in ANALYSED_KINDS
        and score >= settings.complexity_thresholds[TaskType.STRATEGIC_ANALYSIS]
    )


@dataclass(frozen=True)
class RoutingTask:
    """One piece of work to place.

    Attributes:
        task_type: what the model is asked to do.
        complexity: 0-1, from :func:`complexity`.
        estimated_cost_usd: what the call would cost on Claude at worst (callers estimate the
            tokens; the reservation later uses counted tokens).
        priority: ``emergency`` work may draw on the emergency budget.
        local_failed: the local model already failed this work (``local_fallback``).
    """

    task_type: TaskType
    complexity: float
    estimated_cost_usd: Decimal
    priority: Priority = Priority.NORMAL
    local_failed: bool = False


@dataclass(frozen=True)
class RouteDecision:
    """Where the work goes and why (``reason`` is stored in ``llm_calls.route_reason``)."""

    provider: Provider
    model: str
    queue: str
    reason: str

    @property
    def claude(self) -> bool:
        """Whether the work goes to Claude."""
        return self.provider is Provider.CLAUDE


def _local(settings: Settings, reason: str) -> RouteDecision:
    return RouteDecision(Provider.LOCAL, settings.extract_model or "local", QUEUE_EXTRACT, reason)


def _claude_if_admitted(
    task: RoutingTask, budget: BudgetState, settings: Settings, why: str
) -> RouteDecision:
    if settings.anthropic_api_key is None:
        return _local(settings, f"{why}, but ANTHROPIC_API_KEY is not set")
    decision = admission(task.estimated_cost_usd, budget, task.priority)
    if not decision.admitted:
        return _local(settings, f"{why}, but {decision.reason}")
    return RouteDecision(
        Provider.CLAUDE, settings.claude_model, QUEUE_CLAUDE, f"{why} ({decision.pool} budget)"
    )


def route(task: RoutingTask, budget: BudgetState, settings: Settings) -> RouteDecision:
    """Place one piece of work on the local model or Claude. Pure: no I/O.

    Strategies (``settings.llm_strategy``):

    - ``local_only``: always local.
    - ``claude_only``: Claude while the budget admits the call, else local.
    - ``local_fallback``: local first; work the local model failed goes to Claude if the
      budget admits it (else it stays local, and failed).
    - ``hybrid`` (default): Claude when the task's complexity reaches its type's threshold
      *and* the local model's capability for that type is below ``local_preference``, and
      the budget admits the call; everything else local. With the default scores pattern
      extraction (0.85) and content analysis (0.90) always stay local; strategic analysis
      (0.40) goes to Claude from complexity 0.8.

    "The budget admits" is :func:`pipeline.spend.budget.admission` on the estimated worst-case
    cost: normal priority within the daily budget, ``emergency`` within the emergency budget.
    Without ``ANTHROPIC_API_KEY`` everything is local, and so is the error-fix batch
    (``error_fix`` is not a routed task type).
    """
    strategy = settings.llm_strategy
    kind = task.task_type.value
    if task.task_type not in ROUTED_TASK_TYPES:
        return _local(settings, f"{kind} always runs on the local model")
    if strategy is Strategy.LOCAL_ONLY:
        return _local(settings, "strategy local_only")
    if strategy is Strategy.CLAUDE_ONLY:
        return _claude_if_admitted(task, budget, settings, "strategy claude_only")
    if strategy is Strategy.LOCAL_FALLBACK:
        if not task.local_failed:
            return _local(settings, "strategy local_fallback: local first")
        return _claude_if_admitted(
            task, budget, settings, "strategy local_fallback: the local model failed"
        )
    threshold = settings.complexity_thresholds[task.task_type]
    capability = settings.local_capability[task.task_type]
    if task.complexity < threshold:
        return _local(
            settings, f"hybrid: complexity {task.complexity:.2f} < {threshold:.2f} for {kind}"
        )
    if capability >= settings.local_preference:
        return _local(
            settings,
            f"hybrid: local capability {capability:.2f} >= preference "
            f"{settings.local_preference:.2f} for {kind}",
        )
    return _claude_if_admitted(
        task,
        budget,
        settings,
        f"hybrid: complexity {task.complexity:.2f} >= {threshold:.2f} and local capability "
        f"{capability:.2f} < {settings.local_preference:.2f} for {kind}",
    )


def estimate_tokens(text_chars: int) -> int:
    """A rough token count for routing estimates: about 4 characters per token (Anthropic's
    rule of thumb for English text, docs 'Token counting'); the real reservation counts."""
    return max(1, math.ceil(text_chars / 4))
