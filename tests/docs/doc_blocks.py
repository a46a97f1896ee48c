"""Run the Python code blocks of a documentation page, in order, in one namespace (as a reader would
run them one after the other), with small real data substituted for the page's ``...`` placeholders."""

from __future__ import annotations

import ast
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"

_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.S | re.M)


def blocks(page: str, language: str = "python") -> list[str]:
    """The fenced code blocks of ``docs/<page>`` in ``language``, in page order."""
    text = (DOCS / page).read_text()
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def _has_ellipsis(tree: ast.AST) -> bool:
    return any(isinstance(node, ast.Constant) and node.value is Ellipsis for node in ast.walk(tree))


def run_page(page: str, namespace: dict, substitutions: dict[str, str] | None = None) -> dict:
    """Execute every Python block of ``page`` in ``namespace``.

    ``substitutions`` maps text of the page to the text run instead (e.g. ``"train_dataset = ..."``
    to ``"train_dataset = PAIRS"``). Every substitution must be used, and no ``...`` may remain in
    executed code: a placeholder without data, or data for a line the page no longer has, fails.
    """
    substitutions = dict(substitutions or {})
    used: set[str] = set()
    found = blocks(page)
    assert found, f"docs/{page} has no Python blocks"
    for index, code in enumerate(found):
        for old, new in substitutions.items():
            if old in code:
                code = code.replace(old, new)
                used.add(old)
        name = f"docs/{page} [python block {index + 1}]"
        tree = ast.parse(code, filename=name)
        assert not _has_ellipsis(tree), f"{name}: a `...` placeholder has no test data:\n{code}"
        exec(compile(tree, name, "exec"), namespace)  # noqa: S102 (the documentation's own examples)
    unused = set(substitutions) - used
    assert not unused, f"docs/{page}: substitutions for text the page no longer has: {sorted(unused)}"
    return namespace
