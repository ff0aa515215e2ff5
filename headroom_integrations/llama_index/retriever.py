"""HeadroomRetriever: a user's memories as LlamaIndex nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Unpack

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from headroom_integrations.adapter_core import StoreOptions, engine_of
from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory import (
    MemoryCategory,
    MemoryScope,
    SearchResult,
)
from headroom_integrations.memory.models import as_count, as_number
from headroom_integrations.memory.validation import identifier

__all__ = ["HeadroomRetriever", "node_from"]

# Metadata that helps a model read a memory; the rest is kept on the node but not shown to it.
_SHOWN = {"category", "created_at"}


def node_from(hit: SearchResult) -> NodeWithScore:
    """A search hit as a ``NodeWithScore`` (node id = memory id, text = memory content)."""
    m = hit.memory
    metadata: dict[str, Any] = {
        "category": m.category.value,
        "scope": m.scope.value,
        "importance": m.importance,
        "created_at": m.created_at.isoformat(),
        "valid_from": m.valid_from.isoformat() if m.valid_from else None,
        "valid_to": m.valid_to.isoformat() if m.valid_to else None,
        "user_id": m.user_id,
        "session_id": m.session_id,
        "agent_id": m.agent_id,
        "chain_id": m.chain_id,
    }
    hidden = [key for key in metadata if key not in _SHOWN]
    node = TextNode(
        text=m.content, id_=m.id, metadata=metadata,
        excluded_llm_metadata_keys=hidden, excluded_embed_metadata_keys=hidden,
    )
    return NodeWithScore(node=node, score=hit.score)


class HeadroomRetriever(BaseRetriever):
    """Retrieve a user's memories (hybrid vector + keyword search) as LlamaIndex nodes.

    Each node's text is the memory, its id the memory id, its metadata category, scope,
    importance, created_at, valid_from/valid_to and ids; the score is the search score. Works
    wherever a retriever does: ``RetrieverQueryEngine``, ``ContextChatEngine``,
    ``CondensePlusContextChatEngine``, ``RetrieverEvaluator``.

    Args:
        user_id: whose memories to search (never another user's).
        session_id: also see this session's session-level memories.
        agent_id: also see this agent's agent-level memories.
        similarity_top_k: how many memories at most.
        categories: only these categories.
        scopes: only these scopes.
        include_superseded: also return older versions of facts.
        min_score: drop hits whose cosine similarity is below this.
        **store: the store: ``memory`` (an open one to share), ``db_path``, ``db_url`` or ``config``
            (see :class:`~headroom_integrations.adapter_core.StoreOptions`).

    Example::

        retriever = HeadroomRetriever(user_id="alice", db_path="memory.db", similarity_top_k=4)
        query_engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
        print(query_engine.query("Which language does Alice prefer?"))
    """

    def __init__(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        similarity_top_k: int = 5,
        categories: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
        include_superseded: bool = False,
        min_score: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **store: Unpack[StoreOptions],
    ) -> None:
        self.user_id = identifier(user_id, "user_id", required=True)
        self.session_id = identifier(session_id, "session_id")
        self.agent_id = identifier(agent_id, "agent_id")
        self.similarity_top_k = as_count(similarity_top_k, "similarity_top_k", minimum=1)
        self.categories = MemoryCategory.parse_many(categories)  # "fact" is one category, not four letters
        self.scopes = MemoryScope.parse_many(scopes)
        self.include_superseded = include_superseded
        self.min_score = as_number(min_score, "min_score", -1.0, 1.0)
        self.engine = engine_of(dict(store))
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _search(self, query: object) -> list[NodeWithScore]:
        if not isinstance(query, str):
            raise InvalidInputError(f"the retriever's query must be a string, got {type(query).__name__}")
        hits = self.engine.search(
            query, self.user_id, self.session_id, self.agent_id, top_k=self.similarity_top_k,
            categories=self.categories, scopes=self.scopes, include_superseded=self.include_superseded,
            min_score=self.min_score,
        )
        return [node_from(hit) for hit in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._search, query_bundle.query_str)
