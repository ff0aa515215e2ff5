"""Shared fixtures: offline model, loopback-only network, engines over real SQLite files."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh SQLite file path in the test's temporary directory."""
    return tmp_path / "memory.db"


@pytest.fixture
def make_engine(db_path: Path) -> Iterator[Callable[..., MemoryEngine]]:
    """Factory of engines (local MiniLM) on ``db_path`` unless told otherwise; all closed at the end."""
    engines: list[MemoryEngine] = []

    def make(**options: object) -> MemoryEngine:
        options.setdefault("db_path", db_path)
        engine = MemoryEngine(MemoryConfig(**options))  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., MemoryEngine]) -> MemoryEngine:
    """An engine on a fresh database file."""
    return make_engine()


from openai_stub import StubLLM, stub_llm  # noqa: E402  (tests/ is on sys.path)

stub_llm_fixture = pytest.fixture(name="stub_llm")(stub_llm)
__all__ = ["StubLLM"]
