"""Layout rules: methods never import each other; the harness never imports a method by name."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_methods_never_import_each_other() -> None:
    packages = sorted(p for p in (REPO / "methods").iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert len(packages) >= 2
    bad = []
    for pkg in packages:
        for f in pkg.rglob("*.py"):
            for mod in _imports(f):
                parts = mod.split(".")
                if parts[0] == "methods" and len(parts) > 1 and parts[1] != pkg.name:
                    bad.append(f"{f.relative_to(REPO)} imports {mod}")
    assert not bad, bad


def test_harness_never_imports_a_method() -> None:
    bad = []
    for f in (REPO / "fssbench").rglob("*.py"):
        for mod in _imports(f):
            if mod == "methods" and f.name != "methods.py" or mod.startswith("methods."):
                bad.append(f"{f.relative_to(REPO)} imports {mod}")
    assert not bad, bad
