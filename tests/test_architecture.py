"""The package's structure: its layers (pyproject.toml's import-linter contracts), and the imports that bend them.

A module imports only from layers below its own, so no import circle can form; imports inside functions are kept
only to keep a light command light (torch, transformers), each saying why on its line."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "bearrec"


def test_the_import_linter_contracts_hold():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(SRC.parent.parent / "pyproject.toml")) == 0  # its report is printed above


def _function_level_imports():
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("bearrec")):
                        yield path.relative_to(SRC.parent), inner.lineno, lines[inner.lineno - 1]


def test_every_import_inside_a_function_says_why():
    silent = [f"{p}:{n}: {line.strip()}" for p, n, line in _function_level_imports() if "#" not in line]
    assert not silent, "imports inside functions without a reason:\n" + "\n".join(silent)


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("bearrec")):
                private += [f"{path.relative_to(SRC.parent)}: {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert not private


@pytest.mark.parametrize("path", sorted(p.relative_to(SRC.parent) for p in SRC.rglob("*.py")), ids=str)
def test_no_module_is_a_room_of_several_concepts(path):
    """About 500 lines at most: past that a module holds several concepts (split it) or says why it is one."""
    lines = (SRC.parent / path).read_text(encoding="utf-8").count("\n")
    assert lines <= 520, f"{path} has {lines} lines"
