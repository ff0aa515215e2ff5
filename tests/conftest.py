"""Shared fixtures: offline model, loopback-only network, engines over real stores.

Every test that takes the ``store`` fixture (directly or through ``make_engine``/``engine``) runs
once per backend: a real SQLite file, and a real PostgreSQL with pgvector (a server started once
per run by ``pgserver``, or the one ``HEADROOM_TEST_PG_URL`` names; each test gets a schema of its
own). Tests marked ``sqlite_only`` (files, sidecars, byte-level checks) run on SQLite alone,
``postgres_only`` ones (the server's side: lost connections, extensions) on PostgreSQL alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from stores import Store, pg_schema_url

from headroom_integrations import MemoryConfig, MemoryEngine

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> None:
    """Refuse any connection that would leave this machine (tests must stay on loopback)."""
    if isinstance(address, tuple) and address:
        host = str(address[0])
        try:
            allowed = ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = host == "localhost"
        if not allowed:
            raise OSError(f"tests may only connect to loopback, not {host}")
    _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    socket.socket.connect = _loopback_only  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test checks SQLite files; it runs on SQLite alone")
    config.addinivalue_line("markers", "postgres_only: the test checks the PostgreSQL server's side")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    kinds = [kind for kind in BACKENDS if metafunc.definition.get_closest_marker(f"{kind}_only") is not None]
    for name, scope in (("store", "function"), ("module_store", "module")):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, kinds or list(BACKENDS), indirect=True, scope=scope)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server with pgvector for the whole run: ``HEADROOM_TEST_PG_URL`` or pgserver's."""
    given = os.environ.get("HEADROOM_TEST_PG_URL")
    if given:
        yield given
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    yield server.get_uri()
    server.cleanup()


@contextlib.contextmanager
def _fresh_store(request: pytest.FixtureRequest, kind: str, directory: Path) -> Iterator[Store]:
    if kind == "sqlite":
        yield Store("sqlite", str(directory / "memory.db"))
        return
    import sqlalchemy

    server = request.getfixturevalue("pg_server_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server.replace("postgresql://", "postgresql+psycopg://", 1),
                                     poolclass=sqlalchemy.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield Store("postgres", pg_schema_url(server, schema))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store on the backend this test runs on (parametrised by ``pytest_generate_tests``)."""
    with _fresh_store(request, request.param, tmp_path) as fresh:
        yield fresh


@pytest.fixture(scope="module")
def module_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Like ``store``, shared by the tests of one module (for module-scoped engines)."""
    with _fresh_store(request, request.param, tmp_path_factory.mktemp("store")) as fresh:
        yield fresh


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh SQLite file path in the test's temporary directory."""
    return tmp_path / "memory.db"


@pytest.fixture
def make_engine(store: Store) -> Iterator[Callable[..., MemoryEngine]]:
    """Factory of engines (local MiniLM) on the test's store unless ``db_path``/``db_url`` is given;
    all closed at the end."""
    engines: list[MemoryEngine] = []

    def make(**options: object) -> MemoryEngine:
        explicit = "db_path" in options or "db_url" in options
        engine = MemoryEngine(MemoryConfig(**options) if explicit else store.config(**options))  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., MemoryEngine]) -> MemoryEngine:
    """An engine on a fresh store."""
    return make_engine()


from openai_stub import StubLLM, stub_llm  # noqa: E402  (tests/ is on sys.path)

stub_llm_fixture = pytest.fixture(name="stub_llm")(stub_llm)
__all__ = ["StubLLM"]
