"""LangChain adapters over the headroom memory engine.

Needs ``pip install 'headroom-integrations[langchain]'`` (langchain-core 1.x, langchain 1.x).

* :class:`HeadroomChatMessageHistory` — persistent chat history that also extracts memories.
* :class:`HeadroomMemoryRetriever` — memories as ``Document`` objects, for RAG chains.
* :class:`HeadroomMemoryCallbackHandler` — stores the memories a model writes, plus the two
  Runnables a chain needs around it (:meth:`~HeadroomMemoryCallbackHandler.injector`,
  :meth:`~HeadroomMemoryCallbackHandler.stripper`).
* :class:`HeadroomMemoryMiddleware` — memory for agents built with ``langchain.agents.create_agent``.
"""

from headroom_integrations.errors import MissingDependencyError

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("langchain-core", "langchain", "The LangChain adapters") from exc

from headroom_integrations.langchain.callbacks import (
    AsyncHeadroomMemoryCallbackHandler,
    HeadroomMemoryCallbackHandler,
)
from headroom_integrations.langchain.history import HeadroomChatMessageHistory
from headroom_integrations.langchain.retriever import HeadroomMemoryRetriever

__all__ = [
    "AsyncHeadroomMemoryCallbackHandler",
    "HeadroomChatMessageHistory",
    "HeadroomMemoryCallbackHandler",
    "HeadroomMemoryMiddleware",
    "HeadroomMemoryRetriever",
]


def __getattr__(name: str) -> object:
    # The middleware needs the `langchain` package (agents), not only langchain-core.
    if name == "HeadroomMemoryMiddleware":
        from headroom_integrations.langchain.middleware import HeadroomMemoryMiddleware

        return HeadroomMemoryMiddleware
    raise AttributeError(name)
