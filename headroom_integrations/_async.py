"""The thin async face: a blocking method exposed as a coroutine run in a worker thread."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["async_face"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def async_face(method: Callable[Concatenate[_T, _P], _R]) -> Callable[Concatenate[Any, _P], Coroutine[Any, Any, _R]]:
    """Turn ``Blocking.method`` into an ``async`` method of a class whose ``sync`` attribute is a ``Blocking``.

    Example::

        class AsyncThing:
            def __init__(self, blocking: Thing) -> None:
                self.sync = blocking

            fetch = async_face(Thing.fetch)   # await AsyncThing(t).fetch(...) runs t.fetch in a thread
    """

    @functools.wraps(method)
    async def run(self: Any, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await asyncio.to_thread(method, self.sync, *args, **kwargs)

    return run
