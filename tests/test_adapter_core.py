"""The piece every adapter shares: store resolution, checked options, the inject/instruct policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from headroom_integrations import InvalidInputError, MemoryConfig, MemoryEngine
from headroom_integrations.adapter_core import AdapterCore, engine_of
from headroom_integrations.inline import MEMORY_INSTRUCTION


def test_engine_of_takes_the_store_options_out_and_leaves_the_rest(tmp_path: Path) -> None:
    fields = {"db_path": tmp_path / "m.db", "user_id": "u", "k": 3}
    engine = engine_of(fields)
    assert fields == {"user_id": "u", "k": 3}
    assert engine.config.resolved_db_path == tmp_path / "m.db"
    engine.close()


@pytest.mark.parametrize("options", [
    {"memory": "not a store"},
    {"db_path": ":memory:", "db_url": "sqlite:///x.db"},
    {"memory": None, "db_path": ":memory:", "config": MemoryConfig(db_path=":memory:")},
])
def test_ambiguous_or_wrong_stores_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        engine_of(dict(options))


def test_a_shared_engine_is_used_as_it_is(engine: MemoryEngine) -> None:
    assert AdapterCore("u", memory=engine).engine is engine
    assert AdapterCore("u", memory=engine).engine is AdapterCore("v", memory=engine).engine


@pytest.mark.parametrize("options", [
    {"user_id": ""}, {"user_id": None}, {"user_id": "u", "session_id": 7}, {"user_id": "u", "top_k": 0},
    {"user_id": "u", "token_budget": -1}, {"user_id": "u", "min_score": 2.0}, {"user_id": "u", "inject": "yes"},
    {"user_id": "u", "instruct": 1},
])
def test_bad_options_fail_when_the_adapter_is_built(engine: MemoryEngine, options: dict[str, object]) -> None:
    options = dict(options)  # the parameter is shared by every backend's run
    user = options.pop("user_id")
    with pytest.raises(InvalidInputError):
        AdapterCore(user, memory=engine, **options)  # type: ignore[arg-type]


def test_an_unknown_option_is_a_type_error(engine: MemoryEngine) -> None:
    with pytest.raises(TypeError, match="topk"):
        AdapterCore("u", memory=engine, topk=3)  # type: ignore[call-arg]


def test_the_instruction_is_added_once_and_only_when_asked(engine: MemoryEngine) -> None:
    core = AdapterCore("u", memory=engine)
    once = core.instructed("Be brief.")
    assert once == "Be brief.\n\n" + MEMORY_INSTRUCTION
    assert core.instructed(once) == once and core.instructed(None) == MEMORY_INSTRUCTION
    assert AdapterCore("u", memory=engine, instruct=False).instructed("Be brief.") == "Be brief."


def test_memories_are_injected_only_when_asked_and_found(engine: MemoryEngine) -> None:
    engine.add("Prefers Go for performance-critical code", user_id="u", category="preference")
    core = AdapterCore("u", memory=engine, session_id="s1")
    assert "Prefers Go" in core.recall("Which language for a fast service?").text
    assert core.recall("   ").text == ""
    assert AdapterCore("u", memory=engine, inject=False).recall("Which language?").text == ""
    assert AdapterCore("someone-else", memory=engine).recall("Which language?").text == ""


def test_a_conversation_for_another_session_keeps_the_other_options(engine: MemoryEngine) -> None:
    core = AdapterCore("u", memory=engine, session_id="s1", agent_id="a", top_k=2, token_budget=50)
    assert core.conversation() is core.memory and core.conversation("s1") is core.memory
    other = core.conversation("t7")
    assert (other.user_id, other.session_id, other.agent_id, other.top_k, other.token_budget) == ("u", "t7", "a", 2, 50)
