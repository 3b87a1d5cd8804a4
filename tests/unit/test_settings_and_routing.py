"""Unit tests of settings (environment and ``.env``) and the Celery app's queues and routing.

No broker is contacted: apps are configured and inspected, and the one publishing test uses
kombu's in-process ``memory://`` transport.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery
from pydantic import SecretStr, ValidationError

from pipeline.queues import (
    QUEUE_CLAUDE,
    QUEUE_EMBED,
    QUEUE_ERRORFIX,
    QUEUE_EXTRACT,
    QUEUE_HOUSEKEEPING,
    QUEUES,
    ROLE_QUEUES,
)
from pipeline.settings import Settings, get_settings
from workers.app import TASK_ROUTES, make_celery

# --- Settings ----------------------------------------------------------------------------------


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.database_url is None
    assert s.redis_url is None
    assert s.anthropic_api_key is None
    assert s.extract_max_tokens == 512
    assert s.extract_retry_max_tokens == 1024
    assert s.extract_retry_temperature == 0.3
    assert s.extract_input_chars == 2000
    assert s.broker_visibility_timeout_s == 7200
    assert s.title_match_cutoff == 0.85
    assert s.embedding_dim == 384
    assert isinstance(s.data_dir, Path)
    assert "pattern-pipeline" in str(s.data_dir)


@pytest.mark.parametrize("name", ["DATABASE_URL", "PATTERNS_DATABASE_URL"])
def test_database_url_from_env(clean_env: pytest.MonkeyPatch, name: str) -> None:
    clean_env.setenv(name, "postgresql+psycopg://u:p@db:5432/patterns")
    assert Settings().database_url == "postgresql+psycopg://u:p@db:5432/patterns"


@pytest.mark.parametrize("name", ["REDIS_URL", "PATTERNS_REDIS_URL"])
def test_redis_url_from_env(clean_env: pytest.MonkeyPatch, name: str) -> None:
    clean_env.setenv(name, "redis://cache:6379/2")
    assert Settings().redis_url == "redis://cache:6379/2"


def test_secrets_without_prefix_are_hidden(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ANTHROPIC_API_KEY", "sk-ant-test-123")
    clean_env.setenv("GITHUB_WEBHOOK_SECRET", "hook-secret")
    clean_env.setenv("ANTHROPIC_BASE_URL", "http://localhost:9999")
    s = Settings()
    assert isinstance(s.anthropic_api_key, SecretStr)
    assert s.anthropic_api_key.get_secret_value() == "sk-ant-test-123"
    assert s.github_webhook_secret is not None
    assert s.github_webhook_secret.get_secret_value() == "hook-secret"
    assert s.anthropic_base_url == "http://localhost:9999"
    assert "sk-ant-test-123" not in repr(s)
    assert "hook-secret" not in repr(s)


def test_prefixed_fields_from_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("PATTERNS_EXTRACT_MAX_TOKENS", "256")
    clean_env.setenv("PATTERNS_EXTRACT_RETRY_TEMPERATURE", "0.5")
    clean_env.setenv("PATTERNS_TITLE_MATCH_CUTOFF", "0.9")
    clean_env.setenv("PATTERNS_VLLM_ENFORCE_EAGER", "false")
    clean_env.setenv("PATTERNS_DATA_DIR", str(tmp_path / "data"))
    clean_env.setenv("PATTERNS_BROKER_VISIBILITY_TIMEOUT_S", "900")
    s = Settings()
    assert s.extract_max_tokens == 256
    assert s.extract_retry_temperature == 0.5
    assert s.title_match_cutoff == 0.9
    assert s.vllm_enforce_eager is False
    assert s.data_dir == tmp_path / "data"
    assert s.broker_visibility_timeout_s == 900


def test_env_names_are_case_insensitive(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("patterns_seed", "7")
    assert Settings().seed == 7


def test_unprefixed_field_names_are_ignored(clean_env: pytest.MonkeyPatch) -> None:
    """Pipeline fields are only read with the ``PATTERNS_`` prefix."""
    clean_env.setenv("EXTRACT_MAX_TOKENS", "300")
    clean_env.setenv("SEED", "4")
    s = Settings()
    assert s.extract_max_tokens == 512
    assert s.seed == 0


def test_unknown_prefixed_variables_are_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PATTERNS_NO_SUCH_SETTING", "1")
    clean_env.setenv("PATTERNS_WORKER_ROLE", "extract")  # set by workers.worker, not a field
    Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PATTERNS_EXTRACT_MAX_TOKENS", "8"),
        ("PATTERNS_EXTRACT_MAX_TOKENS", "many"),
        ("PATTERNS_EXTRACT_RETRY_MAX_TOKENS", "15"),
        ("PATTERNS_EXTRACT_RETRY_TEMPERATURE", "-0.1"),
        ("PATTERNS_EXTRACT_BATCH_SIZE", "0"),
        ("PATTERNS_EXTRACT_INPUT_CHARS", "100"),
        ("PATTERNS_VLLM_MEMORY_FRACTION", "0"),
        ("PATTERNS_VLLM_MEMORY_FRACTION", "1.5"),
        ("PATTERNS_TITLE_MATCH_CUTOFF", "1.5"),
        ("PATTERNS_MERGE_MAX_DISTANCE", "3"),
    ],
)
def test_invalid_values_are_rejected(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_dotenv_in_cwd_is_read_and_env_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "REDIS_URL=redis://from-dotenv:6379/0\n"
        "DATABASE_URL=postgresql://dotenv/db\n"
        "PATTERNS_SEED=5\n"
        "PATTERNS_EXTRACT_BATCH_SIZE=8\n",
        encoding="utf-8",
    )
    s = Settings()
    assert s.redis_url == "redis://from-dotenv:6379/0"
    assert s.database_url == "postgresql://dotenv/db"
    assert (s.seed, s.extract_batch_size) == (5, 8)
    clean_env.setenv("PATTERNS_SEED", "9")
    clean_env.setenv("REDIS_URL", "redis://from-env:6379/1")
    s = Settings()
    assert s.seed == 9
    assert s.redis_url == "redis://from-env:6379/1"


def test_init_arguments_by_field_name_win(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "redis://from-env:6379/0")
    clean_env.setenv("PATTERNS_SEED", "3")
    s = Settings(redis_url="redis://explicit:6379/0", database_url="postgresql://x/y", seed=11)
    assert s.redis_url == "redis://explicit:6379/0"
    assert s.database_url == "postgresql://x/y"
    assert s.seed == 11


def test_get_settings_is_cached(clean_env: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        clean_env.setenv("PATTERNS_SEED", "21")
        first = get_settings()
        clean_env.setenv("PATTERNS_SEED", "22")
        assert get_settings() is first
        assert first.seed == 21
    finally:
        get_settings.cache_clear()


# --- Celery app --------------------------------------------------------------------------------


def _app(**settings: object) -> Celery:
    return make_celery(Settings(**settings))  # type: ignore[arg-type]


@pytest.mark.parametrize("redis_url", [None, ""])
def test_without_redis_the_app_is_eager(
    clean_env: pytest.MonkeyPatch, redis_url: str | None
) -> None:
    conf = _app(redis_url=redis_url).conf
    assert conf.task_always_eager is True
    assert conf.task_eager_propagates is True
    assert conf.broker_url == "memory://"


def test_with_redis_the_app_uses_the_broker(clean_env: pytest.MonkeyPatch) -> None:
    conf = _app(redis_url="redis://cache:6379/4").conf
    assert conf.task_always_eager is False
    assert conf.broker_url == "redis://cache:6379/4"


def test_redis_url_from_env_reaches_the_app(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "redis://cache:6379/5")
    conf = make_celery(Settings()).conf
    assert conf.task_always_eager is False
    assert conf.broker_url == "redis://cache:6379/5"


@pytest.mark.parametrize("redis_url", [None, "redis://cache:6379/0"])
def test_reliability_settings(clean_env: pytest.MonkeyPatch, redis_url: str | None) -> None:
    conf = _app(redis_url=redis_url, broker_visibility_timeout_s=4321).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 4321
    assert conf.task_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.task_default_queue == QUEUE_EXTRACT
    assert [q.name for q in conf.task_queues] == list(QUEUES)
    assert conf.task_routes == TASK_ROUTES


def test_visibility_timeout_default_exceeds_an_hour(clean_env: pytest.MonkeyPatch) -> None:
    """Must exceed the longest task (an extract batch, bounded by run_timeout_s)."""
    s = Settings()
    conf = make_celery(s).conf
    assert conf.broker_transport_options["visibility_timeout"] == s.broker_visibility_timeout_s
    assert s.broker_visibility_timeout_s > s.run_timeout_s


def test_queue_names() -> None:
    assert QUEUES == ("extract.local", "embed", "claude", "errorfix", "housekeeping")
    assert (QUEUE_EXTRACT, QUEUE_EMBED, QUEUE_CLAUDE, QUEUE_ERRORFIX, QUEUE_HOUSEKEEPING) == QUEUES


def test_task_routes() -> None:
    assert TASK_ROUTES == {
        "patterns.extract_batch": {"queue": "extract.local"},
        "patterns.analyze_local": {"queue": "extract.local"},
        "patterns.claude_batch": {"queue": "claude"},
        "patterns.embed_patterns": {"queue": "embed"},
        "patterns.sweep_outbox": {"queue": "housekeeping"},
        "patterns.post_feedback": {"queue": "embed"},
        "patterns.errorfix_batch": {"queue": "errorfix"},
        "patterns.github_recover": {"queue": "housekeeping"},
        "patterns.github_verdicts": {"queue": "housekeeping"},
        "patterns.cross_check": {"queue": "claude"},
    }
    assert {route["queue"] for route in TASK_ROUTES.values()} <= set(QUEUES)


def test_role_queues() -> None:
    assert set(ROLE_QUEUES) == {"extract", "embed", "claude", "errorfix", "all"}
    assert ROLE_QUEUES["extract"] == ("extract.local",)
    assert ROLE_QUEUES["embed"] == ("embed", "housekeeping")
    assert ROLE_QUEUES["claude"] == ("claude",)
    assert ROLE_QUEUES["errorfix"] == ("errorfix",)
    assert set(ROLE_QUEUES["all"]) == set(QUEUES)
    singles = [q for role, qs in ROLE_QUEUES.items() if role != "all" for q in qs]
    assert sorted(singles) == sorted(QUEUES)  # every queue has exactly one role


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("patterns.extract_batch", "extract.local"),
        ("patterns.embed_patterns", "embed"),
        ("patterns.sweep_outbox", "housekeeping"),
        ("patterns.post_feedback", "embed"),
        ("patterns.not_routed", "extract.local"),  # the default queue
    ],
)
def test_router_resolves_queues(clean_env: pytest.MonkeyPatch, task: str, queue: str) -> None:
    app = _app(redis_url="redis://cache:6379/0")
    route = app.amqp.router.route({}, task, (), {})
    assert route["queue"].name == queue


def test_published_tasks_land_on_their_queue_only(clean_env: pytest.MonkeyPatch) -> None:
    """Publish through kombu's in-process memory transport and count messages per queue."""
    app = _app(redis_url=None)
    app.conf.task_always_eager = False  # publish instead of running in process
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        queues = [q(channel) for q in app.amqp.queues.values()]
        for q in queues:
            q.declare()
            q.purge()
        try:
            app.send_task("patterns.embed_patterns", args=[["0" * 32]], connection=conn)
            app.send_task("patterns.extract_batch", args=[[1, 2]], connection=conn)
            app.send_task("patterns.extract_batch", args=[[3]], connection=conn)
            sizes = {q.name: channel._size(q.name) for q in queues}
        finally:
            for q in queues:
                q.purge()
    assert sizes == {"extract.local": 2, "embed": 1, "claude": 0, "errorfix": 0, "housekeeping": 0}


def test_registered_tasks_match_routes() -> None:
    """The task modules register exactly the routed names on the module-level app."""
    import workers.claude
    import workers.embed
    import workers.errorfix
    import workers.extract
    import workers.feedback
    import workers.recover
    import workers.sweep
    import workers.verdicts
    from workers.app import app

    assert workers.extract.extract_batch_task.name == "patterns.extract_batch"
    assert workers.extract.analyze_local_task.name == "patterns.analyze_local"
    assert workers.claude.claude_batch_task.name == "patterns.claude_batch"
    assert workers.embed.embed_patterns_task.name == "patterns.embed_patterns"
    assert workers.sweep.sweep_outbox_task.name == "patterns.sweep_outbox"
    assert workers.feedback.post_feedback_task.name == "patterns.post_feedback"
    assert workers.errorfix.errorfix_batch_task.name == "patterns.errorfix_batch"
    assert workers.recover.github_recover_task.name == "patterns.github_recover"
    assert workers.verdicts.github_verdicts_task.name == "patterns.github_verdicts"
    assert workers.claude.cross_check_task.name == "patterns.cross_check"
    ours = {name for name in app.tasks if name.startswith("patterns.")}
    assert ours == set(TASK_ROUTES)


def test_worker_roles() -> None:
    from workers.worker import ROLE_POOL, run_worker

    assert set(ROLE_POOL) == set(ROLE_QUEUES)
    assert ROLE_POOL["extract"] == "solo"  # vLLM spawns processes; prefork children may not
    with pytest.raises(ValueError, match="unknown role"):
        run_worker("gpu")


# --- beat and retry countdowns ----------------------------------------------------------------


def test_beat_sweeps_the_outbox_every_minute(clean_env: pytest.MonkeyPatch) -> None:
    from workers.app import BEAT_SCHEDULE

    conf = _app(redis_url="redis://cache:6379/0").conf
    assert conf.beat_schedule == BEAT_SCHEDULE
    entry = BEAT_SCHEDULE["sweep-outbox"]
    assert entry == {"task": "patterns.sweep_outbox", "schedule": 60.0}
    assert all(e["task"] in TASK_ROUTES for e in BEAT_SCHEDULE.values())


def _retrying_tasks() -> list[object]:
    import importlib

    from workers.app import app

    for module in app.conf.include:  # every task module the workers load
        importlib.import_module(module)
    return [t for name, t in sorted(app.tasks.items()) if name.startswith("patterns.")]


def test_no_retry_countdown_reaches_the_visibility_timeout(clean_env: pytest.MonkeyPatch) -> None:
    """A retried task waits for its countdown as an unacknowledged message (acks_late); if the
    countdown reached Redis' visibility timeout, Redis would hand the message to a second
    worker. Celery's exponential backoff is capped at ``retry_backoff_max`` (with jitter only
    lowering it); a task without backoff waits ``default_retry_delay``."""
    settings = Settings()
    tasks = _retrying_tasks()
    assert len(tasks) == len(TASK_ROUTES)
    for task in tasks:
        if getattr(task, "autoretry_for", ()):
            longest = (
                task.retry_backoff_max  # type: ignore[attr-defined]
                if getattr(task, "retry_backoff", False)
                else task.default_retry_delay  # type: ignore[attr-defined]
            )
            assert longest < settings.broker_visibility_timeout_s, task.name  # type: ignore[attr-defined]
            assert task.max_retries is not None, task.name  # type: ignore[attr-defined]
    # The sweeper re-publishes well before Redis would redeliver by itself, too.
    assert settings.outbox_stale_after_s < settings.broker_visibility_timeout_s


def test_outbox_and_github_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.outbox_stale_after_s == 600
    assert s.outbox_max_attempts == 5
    assert s.max_request_bytes == 25 * 1024 * 1024
    assert s.github_token is None
    assert s.github_api_url == "https://api.github.com"
    clean_env.setenv("PATTERNS_GITHUB_TOKEN", "ghp_secret")
    clean_env.setenv("PATTERNS_OUTBOX_STALE_AFTER_S", "30")
    clean_env.setenv("PATTERNS_OUTBOX_MAX_ATTEMPTS", "2")
    s = Settings()
    assert s.github_token is not None and s.github_token.get_secret_value() == "ghp_secret"
    assert "ghp_secret" not in repr(s)
    assert (s.outbox_stale_after_s, s.outbox_max_attempts) == (30, 2)


def test_the_dispatcher_publishes_each_follow_up_in_its_documented_shape(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """The message shapes are an interface (the outbox re-publishes old messages, older producers
    keep sending): defaults are left out of an extract message, ids travel as JSON."""
    import uuid

    from pipeline.types import ClaudeMode, TaskType
    from workers.dispatch import CeleryDispatcher

    app = _app(redis_url=None)
    app.conf.task_always_eager = False  # publish to kombu's memory transport
    dispatcher = CeleryDispatcher(app)
    assert not dispatcher.eager
    pattern = uuid.uuid4()
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        queues = {q.name: q(channel) for q in app.amqp.queues.values()}
        for q in queues.values():
            q.declare()
            q.purge()
        try:
            dispatcher.extract([1, 2])
            dispatcher.extract([3], route=False, claude_mode=ClaudeMode.BATCH)
            dispatcher.claude([4], TaskType.STRATEGIC_ANALYSIS, claude_mode=ClaudeMode.BATCH)
            dispatcher.analyze_local([5], {5: "why"})
            dispatcher.embed([pattern])
            dispatcher.feedback([6])
            got: dict[str, list[tuple[str, list[object], dict[str, object]]]] = {}
            for name, q in queues.items():
                while (message := q.get(no_ack=True)) is not None:
                    args, kwargs, _ = message.decode()
                    got.setdefault(name, []).append((message.headers["task"], args, kwargs))
        finally:
            for q in queues.values():
                q.purge()
    assert got == {
        "extract.local": [
            ("patterns.extract_batch", [[1, 2]], {}),
            ("patterns.extract_batch", [[3]], {"route": False, "claude_mode": "batch"}),
            ("patterns.analyze_local", [[5], {"5": "why"}], {}),
        ],
        "claude": [("patterns.claude_batch", [[4], "strategic_analysis", "batch"], {})],
        "embed": [
            ("patterns.embed_patterns", [[str(pattern)]], {}),
            ("patterns.post_feedback", [[6]], {}),
        ],
    }
