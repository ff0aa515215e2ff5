"""LlamaIndex adapters over the headroom memory engine.

Needs ``pip install 'headroom-integrations[llama-index]'`` (llama-index-core 0.14).

* :class:`HeadroomMemory` — a ``BaseMemory``: persistent chat history plus relevant memories,
  for chat engines and agents (``memory=``).
* :class:`HeadroomMemoryBlock` — a long-term block for LlamaIndex's ``Memory``.
* :class:`HeadroomRetriever` — memories as nodes, for query engines, chat engines, evaluators.
* :func:`with_memory_llm` — any LLM with inline memory: injection, extraction instruction,
  block stored and stripped (also from streams).
* :class:`HeadroomMemoryEventHandler` — stores the blocks of every LLM reply it observes.
"""

from headroom_integrations.errors import MissingDependencyError

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("llama-index-core", "llama-index", "The LlamaIndex adapters") from exc

from headroom_integrations.llama_index.events import HeadroomMemoryEventHandler
from headroom_integrations.llama_index.llm import HeadroomFunctionCallingLLM, HeadroomLLM, with_memory_llm
from headroom_integrations.llama_index.memory import HeadroomMemory, HeadroomMemoryBlock
from headroom_integrations.llama_index.retriever import HeadroomRetriever

__all__ = [
    "HeadroomFunctionCallingLLM",
    "HeadroomLLM",
    "HeadroomMemory",
    "HeadroomMemoryBlock",
    "HeadroomMemoryEventHandler",
    "HeadroomRetriever",
    "with_memory_llm",
]
