"""Every ``>>>`` example in the package's docstrings runs, and none is left out.

``doctest.testmod`` only visits what its finder reaches from a module: the module's docstring and
the functions, classes, methods, properties, static and class methods *defined in that module*
(``__module__`` / ``__globals__``), and ``__test__``. An example anywhere else — a nested
function's docstring, a constant's attribute docstring, a function wrapped by a decorator defined in
another module (``async_face``), a class whose ``__module__`` was changed, a ``__main__`` module
(not imported here) — would silently never run. So besides running every module's examples, this
file scans the source of every module for ``>>>`` examples (every string literal, parsed by
``doctest.DocTestParser``) and fails when one of them was not attempted by the run; an example
marked ``# doctest: +SKIP`` counts as not attempted. Examples that need a model server or an LLM
are shown as ``Example::`` blocks without ``>>>`` instead.

Each module's examples run in a fresh working directory (examples that open a store write there).
"""

from __future__ import annotations

import ast
import doctest
import importlib
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import headroom_integrations

PACKAGE_DIR = Path(headroom_integrations.__file__).resolve().parent
# Every module file of the package (walk_packages would leave out a subpackage that fails to import).
MODULE_FILES = {
    ".".join(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts).removesuffix(".__init__"): str(path)
    for path in PACKAGE_DIR.rglob("*.py") if path.name != "__main__.py"
}
MODULES = sorted(MODULE_FILES)
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

Key = tuple[str, str]  # (resolved file, example source)


@dataclass
class ModuleRun:
    """What running one module's docstring examples gave."""

    file: str
    skipped: str | None = None  # why the module could not be imported (an optional extra)
    error: str | None = None  # the finder could not read a docstring
    failed: int = 0
    attempted: int = 0
    report: str = ""
    ran: Counter[Key] = field(default_factory=Counter)


class _RecordingRunner(doctest.DocTestRunner):
    """A runner that records which examples it attempted (``+SKIP`` ones are never started)."""

    def __init__(self) -> None:
        super().__init__(optionflags=OPTIONS, verbose=False)
        self.ran: Counter[Key] = Counter()

    def report_start(self, out: object, test: doctest.DocTest, example: doctest.Example) -> None:
        self.ran[(str(Path(test.filename or "").resolve()), example.source)] += 1


def _run_module(name: str, directory: Path) -> ModuleRun:
    """Run every example ``doctest.testmod`` would find in module ``name``, inside ``directory``."""
    run = ModuleRun(file=MODULE_FILES[name])
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed
        run.skipped = f"{name}: {exc}"
        return run
    runner = _RecordingRunner()
    out = io.StringIO()
    try:
        tests = doctest.DocTestFinder().find(module, name)
    except ValueError as exc:  # e.g. inconsistent indentation in an example
        run.error = f"{name}: {exc}"
        return run
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        for test in sorted(tests, key=lambda t: t.name):
            runner.run(test, out=out.write)
    finally:
        os.chdir(cwd)
    run.failed, run.attempted = runner.failures, runner.tries
    run.report, run.ran = out.getvalue(), runner.ran
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleRun]:
    """Every module's examples, run once per test session of this file (a few seconds in all)."""
    return {name: _run_module(name, tmp_path_factory.mktemp(name.rsplit(".", 1)[-1])) for name in MODULES}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, runs: dict[str, ModuleRun]) -> None:
    run = runs[name]
    if run.skipped:
        pytest.skip(run.skipped)
    assert run.error is None, run.error
    assert run.failed == 0, f"{run.failed} of {run.attempted} examples failed in {name}:\n{run.report}"


def source_examples(path: Path) -> list[tuple[int, str]]:
    """``(line, source)`` of every ``>>>`` example in any string literal of the file at ``path``."""
    parser = doctest.DocTestParser()
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ">>>" in node.value:
            try:
                examples = parser.get_examples(node.value, f"{path}:{node.lineno}")
            except ValueError:
                examples = []  # reported by the module's own test (the finder fails on it too)
            found.extend((node.lineno + example.lineno, example.source) for example in examples)
    return sorted(found)


def test_source_scan_finds_examples_the_finder_misses(tmp_path: Path) -> None:
    """The scan sees what testmod cannot: a nested function's and a constant's docstring examples."""
    path = tmp_path / "sample.py"
    path.write_text(
        'def outer():\n    def inner():\n        """\n        >>> 1 + 1\n        2\n        """\n'
        'LIMIT = 3\n"""The limit.\n\n>>> LIMIT\n3\n"""\n',
        encoding="utf-8",
    )
    assert source_examples(path) == [(4, "1 + 1\n"), (10, "LIMIT\n")]


def test_every_example_in_the_source_is_attempted(runs: dict[str, ModuleRun]) -> None:
    """No ``>>>`` example in the package's source is left out of the doctest runs above."""
    ran: Counter[Key] = Counter()
    skipped_files = set()
    for run in runs.values():
        ran.update(run.ran)
        if run.skipped or run.error:
            skipped_files.add(run.file)
    attempted = sum(run.attempted for run in runs.values())
    missing = []
    total = 0
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        file = str(path.resolve())
        if file in skipped_files:
            continue
        wanted: Counter[str] = Counter()
        for line, source in source_examples(path):
            total += 1
            wanted[source] += 1
            if wanted[source] > ran[(file, source)]:
                missing.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: >>> {source.splitlines()[0]}")
    assert not missing, (
        f"{len(missing)} of {total} `>>>` examples in the source were never attempted (not reached by doctest's "
        "finder, or marked +SKIP): move them to a docstring testmod visits, or make them an `Example::` block "
        "without `>>>`:\n" + "\n".join(missing)
    )
    assert attempted >= total > 0, (attempted, total)
