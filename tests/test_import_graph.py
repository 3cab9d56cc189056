"""The import graph of ``fssbench`` and ``methods`` points one way.

Every module of both packages is parsed (``ast``), imports inside functions included: a
function-level import is still a dependency, only a deferred one. Only the bodies of
``if TYPE_CHECKING:`` are left out (annotations, never executed). The test fails on

* a cycle between modules (it names the modules of one cycle), and
* a private name (``_x``, dunders excepted) imported from another module: what a module keeps
  private is not another module's interface; a name two modules need is public in one of them.

A package's ``__init__.py`` is the module ``pkg``. ``from pkg import sub`` (a submodule) and
``import pkg.sub`` are edges to ``pkg.sub``; ``from pkg import name`` (a name the ``__init__``
defines or re-exports) is an edge to ``pkg``. So an ``__init__`` that imports its submodules and a
submodule that imports a sibling are no cycle unless the graph has one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fssbench", "methods")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(p)] = p
    return out


def _resolve(current: str, is_pkg: bool, level: int, module: str | None) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (imports for annotations
    only, never executed)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def import_edges(modules: dict[str, Path], root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """``module -> modules it imports`` within the packages, and every private-name import."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[str] = []
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in modules:
                        edges[mod].add(a.name)
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, is_pkg, node.level, node.module)
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    if sub in modules:  # ``from pkg import submodule``
                        edges[mod].add(sub)
                        continue
                    if src in modules:
                        edges[mod].add(src)
                        if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__")):
                            private.append(f"{mod} imports {a.name} from {src} ({path.relative_to(root).as_posix()}:{node.lineno})")
        edges[mod].discard(mod)
    return edges, private


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or None (iterative DFS, stable order)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(edges):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(edges[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(edges[nxt]))))
                path.append(nxt)
    return None


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, set[str]], list[str]]:
    return import_edges(_modules())


def test_the_graph_sees_the_package(graph) -> None:
    edges, _ = graph
    assert "fssbench.runner" in edges and "methods.hsnet" in edges
    assert "fssbench.suite" in edges["fssbench.runner"]


def test_no_import_cycles(graph) -> None:
    edges, _ = graph
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_names_across_modules(graph) -> None:
    _, private = graph
    assert not private, "private names imported across modules:\n" + "\n".join(private)


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The cycle finder and the private-name rule on made-up modules (a check that cannot fail is no check)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _resolve("fssbench.executors.task", False, 2, "runner") == "fssbench.runner"
    assert _resolve("fssbench.executors", True, 1, "graph") == "fssbench.executors.graph"
    files = {
        "p/__init__.py": "from p import a\n",
        "p/a.py": "from p.b import thing\n",
        "p/b.py": "def f():\n    from p.c import _hidden, __version__\n",
        "p/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.a import x\n"
                  "def g():\n    import p.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    mods = {"p": tmp_path / "p/__init__.py", **{f"p.{m}": tmp_path / f"p/{m}.py" for m in "abc"}}
    edges, private = import_edges(mods, root=tmp_path)
    assert edges == {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}  # the TYPE_CHECKING import is left out
    assert find_cycle(edges) == ["p.a", "p.b", "p.c", "p.a"]
    assert private == ["p.b imports _hidden from p.c (p/b.py:2)"]
