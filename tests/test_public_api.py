"""The public surface: names, version, typing marker."""

from __future__ import annotations

from pathlib import Path

import headroom_integrations
import headroom_integrations.memory


def test_all_names_exist_and_are_sorted_exports() -> None:
    import headroom_integrations.inline
    import headroom_integrations.langchain
    import headroom_integrations.langgraph
    import headroom_integrations.llama_index
    import headroom_integrations.openai

    modules = (headroom_integrations, headroom_integrations.memory, headroom_integrations.inline,
               headroom_integrations.openai, headroom_integrations.langchain, headroom_integrations.llama_index,
               headroom_integrations.langgraph)
    for module in modules:
        assert module.__all__, module
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is in __all__ but missing"


def test_decided_names_are_exported() -> None:
    import headroom_integrations.langchain as lc
    import headroom_integrations.llama_index as li

    decided = {"HierarchicalMemory", "MemoryConfig", "EmbedderBackend", "MemoryCategory", "MemoryScope", "MemoryFilter",
               "with_memory"}
    assert decided <= set(headroom_integrations.__all__)
    assert {"HeadroomChatMessageHistory", "HeadroomMemoryRetriever", "HeadroomMemoryCallbackHandler",
            "HeadroomMemoryMiddleware"} <= set(lc.__all__)
    assert {"HeadroomMemory", "HeadroomMemoryBlock", "HeadroomRetriever", "HeadroomMemoryEventHandler",
            "with_memory_llm"} <= set(li.__all__)


def test_version_comes_from_package_metadata() -> None:
    from importlib.metadata import version

    assert headroom_integrations.__version__ == version("headroom-integrations")


def test_package_is_typed() -> None:
    assert (Path(headroom_integrations.__file__).parent / "py.typed").exists()


def test_engine_imports_no_llm_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, headroom_integrations.memory\n"
        "bad = [m for m in ('openai', 'langchain', 'langchain_core', 'llama_index') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
