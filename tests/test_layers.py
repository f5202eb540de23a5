"""The house rules of the package (README "Architecture"), checked on the source: layers import
only downwards, no module imports itself back through others, and backup/ reaches the cluster
through its API only (cluster/api.py API)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cluster_sim.cluster.api import API

ROOT = Path(__file__).resolve().parent.parent / "cluster_sim"

# lowest first; a module may import its own package and any lower layer, never a higher one
LAYERS: list[set[str]] = [
    {"kernel", "version"},
    {"scenario"},
    {"cluster"},
    {"data"},
    {"backup"},
    {"results"},
    {"audit"},
    {"simulation"},
    {"studies", "sweep", "plan"},
    {"report"},
    {"cli", "__main__", "testing"},  # testing: the pytest plugin and its helpers (issue 19)
    {"<root>"},  # cluster_sim/__init__.py: the public facade
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _exists(mod: str) -> bool:
    rel = Path(*mod.split("."))
    return (ROOT.parent / rel).with_suffix(".py").exists() or (ROOT.parent / rel / "__init__.py").exists()


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(module, line) of every cluster_sim import outside `if TYPE_CHECKING:` blocks (deferred
    imports inside functions count: a circle through them is still a circle)."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cluster_sim":
            for alias in node.names:  # `from cluster_sim import plan_tune` imports a module
                sub = f"{node.module}.{alias.name}"
                out.append((sub if _exists(sub) else node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "cluster_sim")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {_module(p): _imports(ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(ROOT.rglob("*.py"))}


def _top(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_every_top_level_module_of_the_package_has_a_layer() -> None:
    tops = {_top(m) for m in _graph()}
    assert tops <= set(RANK), f"give these a layer in tests/test_layers.py: {sorted(tops - set(RANK))}"


def test_layers_import_only_downwards() -> None:
    upward = []
    for mod, deps in _graph().items():
        for dep, line in deps:
            a, b = _top(mod), _top(dep)
            if a != b and RANK.get(b, -1) > RANK.get(a, -1):
                upward.append(f"{mod}:{line} imports {dep} ({a} is below {b})")
    assert not upward, "\n".join(upward)


def test_no_module_imports_itself_back_through_others() -> None:
    graph = {m: sorted({d for d, _ in deps if d in _graph_names()}) for m, deps in _graph().items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def walk(m: str, path: list[str]) -> None:
        seen[m] = 1
        for d in graph.get(m, []):
            if d == m or d.startswith(m + "."):  # a package importing its own submodules
                continue
            if seen.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d):] + [d]) if d in path else f"{m} -> {d}")
            elif d not in seen:
                walk(d, path + [d])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            walk(m, [m])
    assert not circles, "\n".join(circles)


def _graph_names() -> set[str]:
    return {_module(p) for p in ROOT.rglob("*.py")}


@pytest.mark.parametrize("path", sorted((ROOT / "backup").glob("*.py")), ids=lambda p: p.name)
def test_backup_uses_the_cluster_through_its_api_only(path: Path) -> None:
    """`cm.<name>` (or `<anything>.cm.<name>`) in backup/ must be in cluster/api.py API."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            base = node.value
            is_cm = (isinstance(base, ast.Name) and base.id == "cm") or (
                isinstance(base, ast.Attribute) and base.attr == "cm")
            if is_cm and node.attr not in API:
                bad.append(f"{path.name}:{node.lineno} cm.{node.attr}")
    assert not bad, "not in the cluster's API: " + ", ".join(bad)


def test_the_cluster_imports_nothing_from_the_layers_above_it() -> None:
    above = {"data", "backup", "report", "audit", "simulation", "results"}
    bad = [f"{m}:{line} imports {d}" for m, deps in _graph().items() if _top(m) == "cluster"
           for d, line in deps if _top(d) in above]
    assert not bad, "\n".join(bad)
