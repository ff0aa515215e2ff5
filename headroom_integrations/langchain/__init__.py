"""LangChain adapters over the headroom memory engine.

Needs ``pip install 'headroom-integrations[langchain]'`` (langchain-core 1.x, langchain 1.x).

* :class:`HeadroomChatMessageHistory` — persistent chat history that also extracts memories.
* :class:`HeadroomMemoryRetriever` — memories as ``Document`` objects, for RAG chains.
* :class:`HeadroomMemoryCallbackHandler` — stores the memories a model writes, plus the two
  Runnables a chain needs around it (:meth:`~HeadroomMemoryCallbackHandler.injector`,
  :meth:`~HeadroomMemoryCallbackHandler.stripper`).
* :class:`HeadroomMemoryMiddleware` — memory for agents built with ``langchain.agents.create_agent``.
* :data:`MEMORY_INSTRUCTION_TEMPLATE` — the extraction instruction
  (:data:`~headroom_integrations.inline.MEMORY_INSTRUCTION`) with its braces escaped, for the
  system message of a ``ChatPromptTemplate``.

The instruction shows the block's JSON, whose braces a ``ChatPromptTemplate`` (f-string format)
would read as variables; the template form formats back to the instruction exactly.

Example:
    >>> from langchain_core.prompts import ChatPromptTemplate
    >>> from headroom_integrations.inline import MEMORY_INSTRUCTION
    >>> prompt = ChatPromptTemplate.from_messages([("system", MEMORY_INSTRUCTION_TEMPLATE), ("human", "{question}")])
    >>> prompt.input_variables
    ['question']
    >>> prompt.invoke({"question": "Hi"}).messages[0].content == MEMORY_INSTRUCTION
    True
"""

from headroom_integrations.errors import MissingDependencyError
from headroom_integrations.inline import MEMORY_INSTRUCTION

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

MEMORY_INSTRUCTION_TEMPLATE = MEMORY_INSTRUCTION.replace("{", "{{").replace("}", "}}")
"""``MEMORY_INSTRUCTION`` as prompt-template text: braces doubled, so that
``ChatPromptTemplate.from_messages([("system", MEMORY_INSTRUCTION_TEMPLATE), ...])`` (the default
f-string format) builds a template without variables of its own that formats to
``MEMORY_INSTRUCTION`` exactly. Put it in the system prompt of a chain whose history or callback
should store the ``<memory>`` blocks the model writes."""

__all__ = [
    "AsyncHeadroomMemoryCallbackHandler",
    "HeadroomChatMessageHistory",
    "HeadroomMemoryCallbackHandler",
    "HeadroomMemoryMiddleware",
    "HeadroomMemoryRetriever",
    "MEMORY_INSTRUCTION_TEMPLATE",
]


def __getattr__(name: str) -> object:
    # The middleware needs the `langchain` package (agents), not only langchain-core.
    if name == "HeadroomMemoryMiddleware":
        from headroom_integrations.langchain.middleware import HeadroomMemoryMiddleware

        return HeadroomMemoryMiddleware
    raise AttributeError(name)
