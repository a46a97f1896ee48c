"""The import graph of jepa/trainer, read from the source (every import statement, module level or
inside a function): no cycles, no function-local imports of jepa modules, imports point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import jepa

PACKAGE_DIR = Path(jepa.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(folder: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((PACKAGE_DIR / folder).rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported jepa module, line, inside a function)`` for every import of ``path``.

    ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, local) for a in child.names if a.name.split(".")[0] == "jepa")
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0 and child.module.split(".")[0] == "jepa":
                for a in child.names:
                    target = f"{child.module}.{a.name}"
                    found.append((target if target in known else child.module, child.lineno, local))
            visit(child, inner)

    visit(tree, False)
    return found


def _graph(folder: str) -> tuple[dict[str, set[str]], list[str]]:
    """Edges between the modules of ``jepa/<folder>`` (the package ``__init__`` left out: it may
    import all of them) and the function-local imports of jepa modules found there."""
    all_modules = set(_modules("")) | {"jepa"}
    mods = _modules(folder)
    package = f"jepa.{folder}"
    edges: dict[str, set[str]] = {m: set() for m in mods if m != package}
    local: list[str] = []
    for name, path in mods.items():
        for target, line, inside in _imports(path, all_modules):
            if inside:
                local.append(f"{path.name}:{line} imports {target} inside a function")
            if name != package and target in edges and target != name:
                edges[name].add(target)
    return edges, local


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    # the check itself can fail: a -> b -> c -> a is reported, the acyclic d -> a is not
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_trainer_modules_import_each_other_without_cycles():
    edges, _ = _graph("trainer")
    assert len(edges) >= 15  # the modules were found
    assert "jepa.trainer.builders" in edges["jepa.trainer.trainer"]  # and their imports
    assert _cycles(edges) == []


def test_no_function_local_imports_of_jepa_modules_in_the_trainer():
    _, local = _graph("trainer")
    assert local == []


def test_leaf_modules_import_nothing_from_the_trainer_package():
    edges, _ = _graph("trainer")
    for leaf in ("batches", "checks", "modes", "checkpoints", "nonfinite", "fixed_views"):
        assert {m for m in edges[f"jepa.trainer.{leaf}"] if m != "jepa.trainer.checks"} == set(), leaf
    # the loop's glue never imports the loop back
    for glue in ("distributed", "builders", "callbacks", "eval", "objective", "losses"):
        assert "jepa.trainer.trainer" not in edges[f"jepa.trainer.{glue}"], glue


def test_models_never_import_the_trainer():
    all_modules = set(_modules("")) | {"jepa"}
    for name, path in _modules("models").items():
        targets = {t for t, _, _ in _imports(path, all_modules)}
        assert not any(t.startswith("jepa.trainer") for t in targets), name
