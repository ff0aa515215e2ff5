"""Every tutorial notebook in ``notebooks/`` runs top to bottom in a fresh kernel of this interpreter.

The notebooks assert as they go, so a behaviour change in the engine fails here. They run with
``HF_HUB_OFFLINE=1`` in a temporary working directory. The kernel is the ``python3`` kernelspec
when it starts this very interpreter (the venv's); otherwise a kernelspec written by ``ipykernel``
for ``sys.executable`` is used, so the notebooks never run against another installation.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "python3"
TIMEOUT_S = 600

# jupyter_client launches these bare names with the interpreter that starts the kernel
_THIS_PYTHON_ALIASES = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


def _starts_this_interpreter(argv: list[str]) -> bool:
    """True if a kernelspec's command line runs ``sys.executable`` with ipykernel."""
    if not argv or "ipykernel_launcher" not in " ".join(argv[1:]):
        return False
    return argv[0] in _THIS_PYTHON_ALIASES or os.path.abspath(argv[0]) == os.path.abspath(sys.executable)


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec manager whose ``python3`` kernel runs this interpreter.

    Returns:
        The default manager when its ``python3`` spec already starts ``sys.executable``; otherwise
        one that only knows a ``python3`` spec written by ``ipykernel`` for ``sys.executable``.
    """
    default = KernelSpecManager()
    try:
        if _starts_this_interpreter(default.get_kernel_spec(KERNEL_NAME).argv):
            return default
    except NoSuchKernel:
        pass
    return _ipykernel_specs(tmp_path_factory.mktemp("kernels"))


def _ipykernel_specs(directory: Path) -> KernelSpecManager:
    """A kernelspec manager knowing only a ``python3`` spec that ipykernel writes for ``sys.executable``.

    Args:
        directory: an empty directory to write the spec into.
    """
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(directory / KERNEL_NAME)
    return KernelSpecManager(kernel_dirs=[str(directory)], ensure_native_kernel=False)


def _run(nb: nbformat.NotebookNode, cwd: Path, kernel_specs: KernelSpecManager) -> nbformat.NotebookNode:
    """Execute ``nb`` in place in a fresh kernel started in ``cwd``; return it with its outputs."""
    manager = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb, km=manager, kernel_name=KERNEL_NAME, timeout=TIMEOUT_S, allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return client.execute(env=env)


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in nb.cells if cell.cell_type == "code"
        for output in cell.get("outputs", []) if output.get("name") == "stdout"
    )


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


def test_fallback_kernelspec_starts_this_interpreter(tmp_path: Path) -> None:
    spec = _ipykernel_specs(tmp_path).get_kernel_spec(KERNEL_NAME)
    assert spec.argv[0] == sys.executable
    assert _starts_this_interpreter(spec.argv)
    assert not _starts_this_interpreter(["/opt/elsewhere/bin/python3.9", "-m", "ipykernel_launcher", "-f", "x"])


@pytest.mark.parametrize("which", ["chosen", "ipykernel-fallback"])
def test_kernel_runs_this_interpreter(which: str, kernel_specs: KernelSpecManager, tmp_path: Path) -> None:
    if which == "ipykernel-fallback":
        (tmp_path / "kernels").mkdir()
        kernel_specs = _ipykernel_specs(tmp_path / "kernels")
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import json, os, sys\n"
        "print(json.dumps({'prefix': sys.prefix, 'cwd': os.getcwd(), 'offline': os.environ.get('HF_HUB_OFFLINE')}))"
    )])
    seen: dict[str, Any] = json.loads(_stdout(_run(probe, tmp_path, kernel_specs)))

    assert os.path.realpath(seen["prefix"]) == os.path.realpath(sys.prefix)
    assert os.path.realpath(seen["cwd"]) == os.path.realpath(tmp_path)
    assert seen["offline"] == "1"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL_NAME
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} of {path.name} has outputs; clear them before committing"
            assert cell.execution_count is None, f"cell {index} of {path.name} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path: Path, tmp_path: Path, kernel_specs: KernelSpecManager) -> None:
    nb = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name} has no code"

    _run(nb, tmp_path, kernel_specs)  # raises CellExecutionError (with the traceback) if a cell fails

    assert all(cell.execution_count is not None for cell in code_cells)
