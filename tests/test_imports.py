"""The project's imports go one way: no cycle between its packages or between the modules of one, and
the CLI package (``dcp``) is imported by nothing but itself and the tests.

Every import counts, at module level or inside a function (a lazy import is still a dependency);
only imports under ``if TYPE_CHECKING:`` (annotations) are left out. The walk is ``ast`` over the
sources: nothing is imported."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "dcp", "engines", "nodes", "coordinator", "protocols", "contracts", "scenarios")
SKIP_DIRS = {"node_modules", "__pycache__", ".venv"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if SKIP_DIRS & set(path.relative_to(ROOT).parts):
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (a ``from pkg import sub`` names the submodule ``pkg.sub``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:  # `import a.b.c` where c is an attribute
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    if (m := resolve(a.name)) is not None:
                        found.add(m)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    mod = child.module or ""
                for a in child.names:
                    if f"{mod}.{a.name}" in known:
                        found.add(f"{mod}.{a.name}")
                    elif (m := resolve(mod)) is not None:
                        found.add(m)
            visit(child)

    visit(tree)
    found.discard(name)
    return found


@functools.lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def _witness(edges: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One import per member of a cycle, as ``a -> b`` lines (what to read to break it)."""
    members = set(comp)
    return [f"{a} -> {b}" for a in comp for b in sorted(edges[a] & members)]


def test_no_cycle_between_packages():
    edges = graph()
    top: dict[str, set[str]] = {p: set() for p in PACKAGES}
    why: dict[tuple[str, str], str] = {}
    for a, targets in edges.items():
        for b in targets:
            pa, pb = a.split(".")[0], b.split(".")[0]
            if pa != pb:
                top[pa].add(pb)
                why.setdefault((pa, pb), f"{a} -> {b}")
    found = cycles(top)
    detail = [[why[(a, b)] for a in c for b in sorted(top[a] & set(c))] for c in found]
    assert found == [], f"packages import each other: {detail}"


def test_no_cycle_between_the_modules_of_a_package():
    edges = graph()
    inside = {a: {b for b in t if b.split(".")[0] == a.split(".")[0]} for a, t in edges.items()}
    found = cycles(inside)
    assert found == [], "modules import each other: " + "; ".join(", ".join(_witness(inside, c)) for c in found)


def test_only_the_tests_import_the_cli_package():
    edges = graph()
    bad = sorted(f"{a} -> {b}" for a, t in edges.items() if not a.startswith("dcp") for b in t
                 if b == "dcp" or b.startswith("dcp."))
    assert bad == [], f"the CLI package is imported from outside it: {bad}"


def test_the_walk_sees_the_imports_it_checks():
    """The walk itself: it finds the known one-way edges and a cycle planted in a toy graph."""
    edges = graph()
    assert "engines.base" in edges["engines.registry"]
    assert "engines.secretflow.coordinator" in edges["coordinator.spec"]
    assert "coordinator.service" not in edges["coordinator.ports"]  # under TYPE_CHECKING only
    assert "protocols.he.jobs" in edges["engines.ckks.coordinator"]  # an import inside a function counts
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_coordinator_and_the_nodes_share_only_protocols():
    """Neither side imports the other (protocols/manifest.py: the identifiers and the slice live there)."""
    edges = graph()
    crossing = sorted(f"{a} -> {b}" for a, t in edges.items() for b in t
                      if {a.split(".")[0], b.split(".")[0]} == {"coordinator", "nodes"})
    assert crossing == []


def test_the_identity_roles_are_the_registry_roles():
    """protocols.identity names the Registry's roles without importing contracts: the two lists agree."""
    from contracts.models import Role
    from protocols.identity import ROLE_NAMES

    assert [r.name.lower() for r in sorted(Role)] == list(ROLE_NAMES)
