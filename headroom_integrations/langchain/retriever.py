"""HeadroomMemoryRetriever: memories as LangChain Documents."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, ValidationError, field_validator

from headroom_integrations.adapter_core import engine_of
from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory import (
    MemoryCategory,
    MemoryScope,
    SearchResult,
)
from headroom_integrations.memory.models import as_count
from headroom_integrations.memory.validation import identifier

__all__ = ["HeadroomMemoryRetriever", "format_docs"]


def _document(hit: SearchResult) -> Document:
    m = hit.memory
    return Document(
        page_content=m.content,
        id=m.id,
        metadata={
            "id": m.id, "category": m.category.value, "scope": m.scope.value, "importance": m.importance,
            "created_at": m.created_at.isoformat(), "valid_from": m.valid_from.isoformat() if m.valid_from else None,
            "valid_to": m.valid_to.isoformat() if m.valid_to else None, "score": hit.score,
            "user_id": m.user_id, "session_id": m.session_id,
        },
    )


def format_docs(docs: list[Document]) -> str:
    """Join retrieved memories into one block of text for a prompt (one per line)."""
    return "\n".join(f"- {doc.page_content}" for doc in docs)


class HeadroomMemoryRetriever(BaseRetriever):
    """Retrieve a user's memories (hybrid search) as ``Document`` objects.

    ``page_content`` is the memory text; metadata carries id, category, scope, importance,
    created_at, valid_from/valid_to and score. ``k`` is set on the retriever or per call
    (``retriever.invoke(query, k=3)``). The store: ``memory`` (an open one to share),
    ``db_path``, ``db_url`` or ``config`` (see :class:`~headroom_integrations.adapter_core.StoreOptions`).

    Example::

        retriever = HeadroomMemoryRetriever(db_path="memory.db", user_id="alice", k=4)
        chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | model
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(exclude=True)
    user_id: str
    session_id: str | None = None
    agent_id: str | None = None
    k: int = 5
    categories: list[str] | None = None
    scopes: list[str] | None = None
    include_superseded: bool = False
    min_score: float | None = None

    def __init__(self, **fields: Any) -> None:
        engine = fields.pop("engine", None) or engine_of(fields)
        try:
            super().__init__(engine=engine, **fields)
        except ValidationError as exc:  # one clear error of ours instead of pydantic's report
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
            )
            raise InvalidInputError(f"HeadroomMemoryRetriever: {problems}") from None

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str) -> str:
        return identifier(value, "user_id", required=True)  # type: ignore[return-value]

    @field_validator("session_id", "agent_id")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return identifier(value, "session_id / agent_id")

    @field_validator("k")
    @classmethod
    def _k(cls, value: int) -> int:
        return as_count(value, "k", minimum=1)

    @field_validator("categories", "scopes", mode="before")
    @classmethod
    def _kinds(cls, value: Any, info: Any) -> list[str] | None:
        kind = MemoryCategory if info.field_name == "categories" else MemoryScope
        parsed = kind.parse_many(value)  # one name is one item; an unknown name fails here
        return None if parsed is None else [member.value for member in parsed]

    def _search(self, query: object, k: object) -> list[Document]:
        if not isinstance(query, str):
            raise InvalidInputError(f"the retriever's query must be a string, got {type(query).__name__}")
        top_k = self.k if k is None else as_count(k, "k", minimum=1)
        hits = self.engine.search(
            query, self.user_id, self.session_id, self.agent_id, top_k=top_k, categories=self.categories,
            scopes=self.scopes, include_superseded=self.include_superseded, min_score=self.min_score,
        )
        return [_document(hit) for hit in hits]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        return self._search(query, k)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        return await asyncio.to_thread(self._search, query, k)
