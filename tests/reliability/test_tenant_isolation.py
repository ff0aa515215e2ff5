"""Check 8: tenant isolation. A seeded random program of adds (every scope), supersessions,
deletions, clears and searches over 60 users, 12 sessions and 6 agents runs against the engine
and against a model of the scope table (DESIGN.md); every search result must be a current memory
the searcher may see (0 foreign results), and a search for a visible memory's own words finds it."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest
from scale import scaled
from stores import Store

from headroom_integrations import MemoryEngine

USERS = [f"user{i}" for i in range(60)]
SESSIONS = [None, *(f"s{i}" for i in range(12))]
AGENTS = [None, *(f"a{i}" for i in range(6))]
TURNS = [None, "t1", "t2"]
QUERIES = scaled(1200)
WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "hazel", "indigo", "jasper", "kelp", "lilac", "maple", "nectar", "onyx", "pearl", "quill", "raven", "sable", "thyme", "umber", "violet", "willow", "xenon", "yarrow", "zinnia"]


@dataclass(frozen=True)
class Stored:
    """What the model knows of one memory."""

    id: str
    user: str
    scope: str
    session: str | None
    agent: str | None
    turn: str | None
    content: str
    current: bool = True


def visible(m: Stored, user: str, session: str | None, agent: str | None, turn: str | None) -> bool:
    """The scope table, written out once more, independently of the engine's own code."""
    if m.user != user or not m.current:
        return False
    return {
        "user": True,
        "session": session is not None and m.session == session,
        "agent": agent is not None and m.session == session and m.agent == agent,
        "turn": turn is not None and (m.session, m.agent, m.turn) == (session, agent, turn),
    }[m.scope]


def _ids(rng: random.Random) -> tuple[str, str | None, str | None, str | None]:
    return rng.choice(USERS[:20] if rng.random() < 0.7 else USERS), rng.choice(SESSIONS), rng.choice(AGENTS), \
        rng.choice(TURNS)


@pytest.mark.parametrize("brute_force_max", [8192, 0], ids=["exact", "hnsw"])
def test_no_search_ever_sees_another_tenant(store: Store, brute_force_max: int, record_property) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(brute_force_max + 8)
    model: dict[str, Stored] = {}
    queries = foreign = missed = 0
    with MemoryEngine(store.config(brute_force_max=brute_force_max)) as engine:
        while queries < QUERIES:
            roll = rng.random()
            user, session, agent, turn = _ids(rng)
            if roll < 0.45:
                content = " ".join(rng.sample(WORDS, 4)) + f" {len(model)}"
                m = engine.add(content, user_id=user, session_id=session, agent_id=agent, turn_id=turn,
                               scope=rng.choice([None, "user"]), defer_embedding=rng.random() < 0.3)
                model[m.id] = Stored(m.id, user, m.scope.value, session, agent, turn, content)
            elif roll < 0.52 and model:
                old = model[rng.choice(sorted(model))]
                if not old.current:
                    continue
                content = " ".join(rng.sample(WORDS, 4)) + f" {len(model)}"
                new = engine.supersede(old.id, content)
                model[old.id] = replace(old, current=False)
                model[new.id] = replace(old, id=new.id, content=content)
            elif roll < 0.55 and model:
                gone = rng.choice(sorted(model))
                engine.delete(gone)
                del model[gone]
            elif roll < 0.57:
                kwargs = {"session_id": session} if session is not None and rng.random() < 0.5 else {}
                engine.clear(user, **kwargs)
                model = {k: m for k, m in model.items()
                         if not (m.user == user and ("session_id" not in kwargs or m.session == session))}
            else:
                targets = [m for m in model.values() if m.current]
                target = rng.choice(targets) if targets and rng.random() < 0.7 else None
                query = target.content if target is not None else " ".join(rng.sample(WORDS, 2))
                hits = engine.search(query, user_id=user, session_id=session, agent_id=agent, turn_id=turn, top_k=5)
                queries += 1
                for hit in hits:
                    known = model.get(hit.id)
                    if known is None or not visible(known, user, session, agent, turn):
                        foreign += 1
                if target is not None and visible(target, user, session, agent, turn) and brute_force_max:
                    missed += target.id not in [h.id for h in hits]
    record_property("queries", queries)
    record_property("memories", len(model))
    assert foreign == 0
    assert missed == 0
    assert len({m.user for m in model.values()}) >= 50
