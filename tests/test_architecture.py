"""The layer rule of docs/architecture.md, checked on the source: every import inside deepfm
points down (or sideways within a layer), training and inference never import each other,
no module is part of an import cycle, and no private name is imported from another module.

Function-local and ``TYPE_CHECKING`` imports count like any other: a cycle hidden inside a
function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deepfm"
# Bottom to top; a module may import its own layer and those before it.
LAYERS = [
    {"errors", "_version", "_deprecated", "util"},
    {"data"},
    {"features"},
    {"config"},
    {"model"},
    {"bundle", "scoring"},
    {"integrations"},
    {"training", "inference"},
    {"analysis"},
    {"estimator", "cli", "__init__", "__main__"},
]
SIBLINGS = {"training", "inference"}  # one layer, but never each other


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()
# The aliases of deepfm 0.1's module paths: they import from above, and nothing imports them.
DEPRECATED = {name for name, path in MODULES.items() if "\ndeprecated_module(" in path.read_text()}


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of deepfm in module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "deepfm"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] != "deepfm":
                continue
            for alias in node.names:  # `from deepfm import plots` imports a module
                sub = f"{base}.{alias.name}"
                out.append((sub, [], node.lineno) if sub in MODULES else (base, [alias.name], node.lineno))
    return out


def _layer(module: str) -> tuple[int, str]:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i, top
    raise AssertionError(
        f"{module}: in no layer of tests/test_architecture.py (add it to LAYERS and docs/architecture.md)"
    )


CODE = sorted(set(MODULES) - DEPRECATED)


@pytest.mark.parametrize("module", CODE)
def test_imports_point_down(module: str) -> None:
    level, top = _layer(module)
    for target, _, line in _imports(module):
        assert target not in DEPRECATED, f"{module}:{line} imports the deprecated alias {target}"
        their_level, their_top = _layer(target)
        assert their_level <= level, f"{module}:{line} imports {target}, a layer above it"
        assert not (top in SIBLINGS and their_top in SIBLINGS and top != their_top), (
            f"{module}:{line}: {top} imports {their_top}"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_from_another_module(module: str) -> None:
    for target, names, line in _imports(module):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private or target == module, f"{module}:{line} imports private {private} from {target}"


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    # A package's __init__ re-exports its modules: importing it means importing them.
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t) :] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


# Small files you can read top to bottom: a module over this many lines wants splitting, a
# function over this many wants parts.
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 60


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for module, path in MODULES.items():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{module}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{module}.{node.name} (line {node.lineno}): {lines} lines")
    assert not too_long, "split these: " + "; ".join(too_long)


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md stays true to the tree: each module (aliases aside) is named there."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    unnamed = [m for m in CODE if MODULES[m].name != "__init__.py" and MODULES[m].name not in page]
    assert not unnamed, f"docs/architecture.md does not mention {unnamed}"
