"""The inspector's ASGI app: routes, rendering, the POST checks and error pages.

Every engine call blocks, so each request gathers its page in a worker thread
(``run_in_threadpool``) and only renders on the event loop.

Example::

    app = create_app(MemoryEngine("memory.db"), read_only=True)
    uvicorn.run(app, host="127.0.0.1", port=8765)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from headroom_integrations.errors import (
    HeadroomError,
    InvalidInputError,
    MemoryAlreadySupersededError,
    MemoryNotFoundError,
)
from headroom_integrations.inspector import views
from headroom_integrations.inspector.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CsrfGuard,
    Shield,
    allowed_hosts_for,
    same_origin,
)
from headroom_integrations.memory import MemoryEngine

__all__ = ["Inspector", "create_app"]

HERE = Path(__file__).parent
T = TypeVar("T")

FLASH = {
    "forgot": "Forgot version {id}.",
    "forgot-all": "Forgot every version of the fact ({id}).",
    "rolled-back": "Rolled back: version {id} is current now.",
}


def _status_of(exc: HeadroomError) -> int:
    if isinstance(exc, MemoryNotFoundError):
        return 404
    if isinstance(exc, MemoryAlreadySupersededError):
        return 409
    if isinstance(exc, InvalidInputError):
        return 400
    return 503  # the store cannot be read or written right now


class Inspector:
    """One inspector instance: an engine, its CSRF token and its templates.

    Args:
        engine: the store to show.
        read_only: hide every button and answer every POST with 403.

    Example::

        app = Inspector(engine, read_only=False).app(allowed_hosts=["127.0.0.1", "localhost"])
    """

    def __init__(self, engine: MemoryEngine, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self.csrf = CsrfGuard()
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(when=views.when, score=views.score)
        self.env.filters["short"] = lambda value: value if len(value) <= 8 else f"{value[:8]}…"
        self.env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str)

    # -- helpers --------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await run_in_threadpool(fn, self.engine, *args)

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a template with the common context (links, CSRF token, read-only flag, flash).

        Example::

            return self.render(request, "memory.html", memory=memory, history=history, has_current=True)
        """
        flash = None
        code = request.query_params.get("done")
        if code in FLASH:
            ident = request.query_params.get("id", "")
            flash = FLASH[code].format(id=ident if len(ident) <= 12 else ident[:12] + "…")
        html = self.env.get_template(name).render(
            links=views.Links(request.scope.get("root_path", "")), csrf_field=CSRF_FIELD,
            csrf_token=self.csrf.token, read_only=self.read_only, flash=flash, **context)
        response = HTMLResponse(html, status_code=status)
        response.set_cookie(CSRF_COOKIE, self.csrf.token, httponly=True, samesite="strict",
                            path=request.scope.get("root_path", "") or "/")
        return response

    def error(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        """An error page with this status.

        Example::

            return self.error(request, 404, "Not found", "There is no such page.")
        """
        return self.render(request, "error.html", status=status, title=title, message=message)

    async def _checked_form(self, request: Request) -> dict[str, str] | Response:
        """The POSTed form when the request may change the store; else the 403 page."""
        if self.read_only:
            return self.error(request, 403, "Read-only", "This inspector is read-only: nothing can be changed.")
        if not same_origin(request.headers, request.url.scheme):
            return self.error(request, 403, "Forbidden", "The form was sent from another site.")
        form = await request.form(max_files=0, max_fields=8)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not self.csrf.valid(request.cookies.get(CSRF_COOKIE), fields.get(CSRF_FIELD)):
            return self.error(request, 403, "Forbidden",
                              "The form's security token is missing or stale: reload the page and try again.")
        return fields

    # -- pages ----------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        """``/``: the users with counts and the store's stats."""
        return self.render(request, "index.html", **await self._call(views.index_page))

    async def user(self, request: Request) -> Response:
        """``/users/{user_id}``: a user's memories, filters, charts and search (200 for an unknown user)."""
        user_id = request.path_params["user_id"]
        view = views.UserQuery.parse(request.query_params)
        try:
            context = await self._call(views.user_page, user_id, view)
        except InvalidInputError as exc:
            return self.error(request, 400, "Bad filter", str(exc))
        return self.render(request, "user.html", **context)

    async def memory(self, request: Request, error: str | None = None, status: int = 200) -> Response:
        """``/memories/{memory_id}``: one memory and its version chain (404 when unknown)."""
        context = await self._call(views.memory_page, request.path_params["memory_id"])
        return self.render(request, "memory.html", status=status, error=error, **context)

    async def forget(self, request: Request) -> Response:
        """``POST /memories/{memory_id}/forget``: delete this version (``all_versions=1``: every version)."""
        fields = await self._checked_form(request)
        if isinstance(fields, Response):
            return fields
        memory_id = request.path_params["memory_id"]
        every = fields.get("all_versions") == "1"
        user_id, left = await self._call(views.forget, memory_id, every)
        links = views.Links(request.scope.get("root_path", ""))
        code = "forgot-all" if every else "forgot"
        target = links.memory(left, done=code, id=memory_id) if left else links.user(user_id, done=code, id=memory_id)
        return RedirectResponse(target, status_code=303)

    async def rollback(self, request: Request) -> Response:
        """``POST /memories/{memory_id}/rollback``: make this older version current again."""
        fields = await self._checked_form(request)
        if isinstance(fields, Response):
            return fields
        try:
            new = await run_in_threadpool(self.engine.rollback, request.path_params["memory_id"])
        except (InvalidInputError, MemoryAlreadySupersededError) as exc:
            return await self.memory(request, error=f"Cannot roll back: {exc}", status=_status_of(exc))
        links = views.Links(request.scope.get("root_path", ""))
        return RedirectResponse(links.memory(new.id, done="rolled-back", id=new.id), status_code=303)

    async def stylesheet(self, request: Request) -> Response:
        """``/static/inspector.css``."""
        css = (HERE / "static" / "inspector.css").read_text(encoding="utf-8")
        return Response(css, media_type="text/css", headers={"cache-control": "max-age=300"})

    # -- errors ---------------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Unknown pages (404), wrong methods (405) and other HTTP errors."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return self.error(request, 404, "Not found", "There is no such page.")
        return self.error(request, status, "Error", str(getattr(exc, "detail", "")) or "The request failed.")

    async def headroom_error(self, request: Request, exc: Exception) -> Response:
        """The engine's errors as a readable page: not found 404, bad input 400, storage 503."""
        assert isinstance(exc, HeadroomError)
        status = _status_of(exc)
        title = {404: "Not found", 400: "Bad request", 409: "Conflict"}.get(status, "Store unavailable")
        return self.error(request, status, title, str(exc))

    def app(self, allowed_hosts: Sequence[str]) -> Starlette:
        """The Starlette app serving this inspector, accepting only these ``Host`` names.

        Example::

            app = Inspector(engine).app(allowed_hosts_for("127.0.0.1"))
        """
        routes = [
            Route("/", self.index),
            Route("/static/inspector.css", self.stylesheet),
            Route("/users/{user_id:path}", self.user),
            Route("/memories/{memory_id:path}/forget", self.forget, methods=["POST"]),
            Route("/memories/{memory_id:path}/rollback", self.rollback, methods=["POST"]),
            Route("/memories/{memory_id:path}", self.memory),
        ]
        app = Starlette(
            routes=routes,
            middleware=[Middleware(Shield, allowed_hosts=list(allowed_hosts))],
            exception_handlers={HTTPException: self.http_error, HeadroomError: self.headroom_error},
        )
        app.state.inspector = self
        return app


def create_app(
    engine: MemoryEngine, *, read_only: bool = False, allowed_hosts: Sequence[str] | None = None
) -> Starlette:
    """The inspector as an ASGI app (Starlette) over ``engine``.

    Args:
        engine: the store to show; the app does not close it.
        read_only: hide the Forget and Roll back buttons and refuse every POST (403).
        allowed_hosts: ``Host`` names the app answers (others get 400, which defeats DNS
            rebinding); by default the loopback names (``127.0.0.1``, ``localhost``, ``[::1]``).

    Example::

        app = create_app(MemoryEngine("memory.db"), read_only=True)
        uvicorn.run(app, host="127.0.0.1", port=8765)
    """
    hosts = allowed_hosts if allowed_hosts is not None else allowed_hosts_for("127.0.0.1")
    return Inspector(engine, read_only=read_only).app(hosts)
