"""The web inspector: browse a memory store's users, memories and version chains in a browser,
search them with the score parts shown, forget a memory or roll a fact back.

Server-rendered HTML (Starlette + Jinja2, no JavaScript needed) bound to 127.0.0.1 by default.
It has no login: keep it on loopback (see docs/inspector.md). Needs the ``ui`` extra
(``pip install 'headroom-integrations[ui]'``); ``headroom-memory --db memory.db ui`` starts it.

Example::

    from headroom_integrations import MemoryEngine
    from headroom_integrations.inspector import create_app, serve

    engine = MemoryEngine("memory.db")
    app = create_app(engine, read_only=True)   # an ASGI app for any server
    serve(engine, port=8765)                   # or run it here with uvicorn (blocks)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from headroom_integrations.errors import MissingDependencyError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from headroom_integrations.memory import MemoryEngine

__all__ = ["create_app", "serve"]


_NEEDS = (("starlette", ("starlette",)), ("jinja2", ("jinja2",)),
          ("python-multipart", ("python_multipart", "multipart")))  # its module's newer name first


def _require_ui(*extra: tuple[str, tuple[str, ...]]) -> None:
    """Raise :class:`MissingDependencyError` naming the ``ui`` extra if one of its packages is missing."""
    import importlib.util

    for package, modules in (*_NEEDS, *extra):
        if not any(importlib.util.find_spec(module) is not None for module in modules):
            raise MissingDependencyError(package, "ui", "The web inspector")


def create_app(engine: MemoryEngine, *, read_only: bool = False) -> Starlette:
    """The inspector as an ASGI app (a Starlette application) over ``engine``.

    The app answers only requests addressed to a loopback name (``127.0.0.1``, ``localhost``,
    ``[::1]``); :func:`serve` also admits the host it binds to.

    Args:
        engine: the store to show (the app never closes it).
        read_only: hide the Forget and Roll back buttons and answer every POST with 403.

    Raises:
        MissingDependencyError: the ``ui`` extra (starlette, jinja2, python-multipart) is missing.

    Example::

        app = create_app(MemoryEngine("memory.db"))
        # run it with any ASGI server: uvicorn.run(app, host="127.0.0.1", port=8765)
    """
    _require_ui()
    from headroom_integrations.inspector.app import create_app as build

    return build(engine, read_only=read_only)


def serve(engine: MemoryEngine, *, host: str = "127.0.0.1", port: int = 8765, read_only: bool = False) -> None:
    """Serve the inspector with uvicorn until interrupted (Ctrl-C).

    Args:
        engine: the store to show (not closed on exit: the caller owns it).
        host: the address to listen on; the default is loopback only. The app has no login, so
            another address exposes every memory to whoever can reach it.
        port: the TCP port.
        read_only: hide the buttons and refuse every POST.

    Raises:
        MissingDependencyError: the ``ui`` extra is missing.

    Example::

        serve(MemoryEngine("memory.db"), port=8765, read_only=True)  # blocks; open http://127.0.0.1:8765/
    """
    _require_ui(("uvicorn", ("uvicorn",)))
    import uvicorn

    from headroom_integrations.inspector.app import create_app as build
    from headroom_integrations.inspector.security import allowed_hosts_for

    app = build(engine, read_only=read_only, allowed_hosts=allowed_hosts_for(host))
    config = uvicorn.Config(app, host=host, port=port, proxy_headers=False, server_header=False, log_level="info")
    uvicorn.Server(config).run()
