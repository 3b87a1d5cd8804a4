"""Queue and task names: what travels on which Redis list.

The library names the queues and the tasks; ``workers/`` builds the Celery app from these names
and registers the task functions under them. Keeping the names here lets the library publish
(:mod:`pipeline.dispatch`), measure (``celery_queue_length``) and route without importing Celery.
"""

from __future__ import annotations

from enum import StrEnum

#: Interactions waiting for local extraction, and local strategic analysis (GPU workers).
QUEUE_EXTRACT = "extract.local"
#: Work routed to Claude under the daily budget.
QUEUE_CLAUDE = "claude"
#: Patterns waiting for their embedding, then GitHub feedback (CPU workers).
QUEUE_EMBED = "embed"
#: The TypeScript error-fix batch (beat, every 10 minutes).
QUEUE_ERRORFIX = "errorfix"
#: Periodic housekeeping (beat, every minute: the outbox sweep), on the CPU ``embed`` workers,
#: so the GPU extract workers can scale to zero.
QUEUE_HOUSEKEEPING = "housekeeping"
#: Every queue, in the order the workers' ``all`` role consumes them.
QUEUES = (QUEUE_EXTRACT, QUEUE_EMBED, QUEUE_CLAUDE, QUEUE_ERRORFIX, QUEUE_HOUSEKEEPING)


class TaskName(StrEnum):
    """The name each Celery task is registered and published under (``patterns.<verb>``)."""

    EXTRACT = "patterns.extract_batch"
    ANALYZE_LOCAL = "patterns.analyze_local"
    CLAUDE = "patterns.claude_batch"
    EMBED = "patterns.embed_patterns"
    FEEDBACK = "patterns.post_feedback"
    SWEEP_OUTBOX = "patterns.sweep_outbox"
    ERRORFIX = "patterns.errorfix_batch"
    GITHUB_RECOVER = "patterns.github_recover"
    GITHUB_VERDICTS = "patterns.github_verdicts"
    CROSS_CHECK = "patterns.cross_check"


#: Task → queue. Nothing that beat schedules goes to the extract queue, whose GPU workers scale
#: to zero when it is empty: the outbox sweep has its own light queue, consumed by the embed
#: workers, and holds its re-publishing while extract messages are waiting, so a backlog is not
#: mistaken for lost messages (:func:`pipeline.ops.housekeeping.sweep`). The hourly
#: missed-delivery recovery and the poll of people's verdicts on our feedback comments go where
#: the sweep goes. The error-fix batch is the work itself (Claude calls), on its own workers.
#: Feedback follows embedding on the embed workers.
TASK_QUEUES: dict[TaskName, str] = {
    TaskName.EXTRACT: QUEUE_EXTRACT,
    TaskName.ANALYZE_LOCAL: QUEUE_EXTRACT,
    TaskName.CLAUDE: QUEUE_CLAUDE,
    TaskName.EMBED: QUEUE_EMBED,
    TaskName.SWEEP_OUTBOX: QUEUE_HOUSEKEEPING,
    TaskName.FEEDBACK: QUEUE_EMBED,
    TaskName.ERRORFIX: QUEUE_ERRORFIX,
    TaskName.GITHUB_RECOVER: QUEUE_HOUSEKEEPING,
    TaskName.GITHUB_VERDICTS: QUEUE_HOUSEKEEPING,
    TaskName.CROSS_CHECK: QUEUE_CLAUDE,
}


class Role(StrEnum):
    """A worker role (``patterns worker --role``): which queues one worker process consumes."""

    EXTRACT = "extract"
    EMBED = "embed"
    CLAUDE = "claude"
    ERRORFIX = "errorfix"
    ALL = "all"


#: Role → the queues it consumes. ``all`` runs every role in one process. The embed workers (CPU,
#: always one running) also take the housekeeping queue.
ROLE_QUEUES: dict[Role, tuple[str, ...]] = {
    Role.EXTRACT: (QUEUE_EXTRACT,),
    Role.EMBED: (QUEUE_EMBED, QUEUE_HOUSEKEEPING),
    Role.CLAUDE: (QUEUE_CLAUDE,),
    Role.ERRORFIX: (QUEUE_ERRORFIX,),
    Role.ALL: QUEUES,
}
