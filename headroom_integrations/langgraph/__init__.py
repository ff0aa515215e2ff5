"""LangGraph adapter: :class:`HeadroomStore`, a ``langgraph.store.base.BaseStore`` over the memory
engine (long-term memory of LangGraph graphs, ``langchain.agents.create_agent`` and LangMem).

Needs ``pip install 'headroom-integrations[langgraph]'``.
"""

from headroom_integrations.errors import MissingDependencyError

try:
    import langgraph.store.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("langgraph", "langgraph", "The LangGraph store") from exc

from headroom_integrations.langgraph.store import HeadroomStore

__all__ = ["HeadroomStore"]
