"""Structure rules read from the source: SQL only in tapearc/catalog, no import cycle, the
layers import downwards only (DESIGN.md, "Who may import whom")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tapearc"
#: A statement's verb in capitals, or in any case followed by what makes it a statement (so
#: lower-case SQL is caught and prose such as "insert a cartridge" is not).
SQL = re.compile(
    r"^\s*(?:(?-i:SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|WITH)\b"
    r"|SELECT\b.*\bFROM\b|INSERT\s+(?:OR\s+\w+\s+)?INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b"
    r"|(?:CREATE|DROP)\s+(?:TABLE|INDEX|UNIQUE|TRIGGER|VIEW|TEMP)\b|ALTER\s+TABLE\b"
    r"|PRAGMA\s+\w+|WITH\s+(?:RECURSIVE\s+)?\w+\s+AS\b)",
    re.IGNORECASE | re.DOTALL)
#: Subpackages that store, move bytes or encode: they never reach up to the composers.
LOWER = ("catalog", "drivers", "format")
UPPER = ("jobs", "cli")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def sql_outside_catalog(root: Path = PACKAGE) -> list[str]:
    """``file:line: text`` for every string constant outside ``catalog/`` that reads as SQL.

    Adjacent literals are one constant to the parser, so a statement split over lines is seen
    whole; an f-string's literal parts are seen one by one (its first part carries the verb).
    """
    found: list[tuple[str, int, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        if rel.parts[1] == "catalog":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and SQL.match(node.value):
                first = node.value.strip().splitlines()[0][:70]
                found.append((str(rel), node.lineno, first))
    return [f"{rel}:{line}: {text}" for rel, line, text in sorted(found)]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any depth: lazy imports count too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from pkg import mod`` imports the module pkg.mod when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("tapearc") and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def subpackage_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle between subpackages (``a -> b -> a``), or None. Type-only imports count too:
    a cycle there still means two packages that cannot be read apart."""
    edges: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        src = _subpackage(mod)
        for dep in deps:
            dst = _subpackage(dep)
            if src and dst and src != dst:
                edges.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_no_sql_outside_the_catalog() -> None:
    found = sql_outside_catalog()
    assert not found, "SQL outside tapearc/catalog:\n" + "\n".join(found)


def test_no_database_driver_outside_the_catalog() -> None:
    """A raw connection elsewhere would be SQL by another road (``conn.backup``, ``execute``)."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        if rel.parts[1] == "catalog":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            wrong += [f"{rel}:{node.lineno}: {n}" for n in names
                      if n.split(".")[0] in ("sqlite3", "sqlite_utils")]
    assert not wrong, "database modules imported outside tapearc/catalog:\n" + "\n".join(wrong)


def test_the_scan_finds_sql(tmp_path: Path) -> None:
    """The scanner itself: it must see a statement split over lines and an f-string, and
    ignore the catalog and prose that merely starts with a keyword in lower case."""
    pkg = tmp_path / "tapearc"
    (pkg / "jobs").mkdir(parents=True)
    (pkg / "catalog").mkdir()
    (pkg / "catalog" / "q.py").write_text('Q = "SELECT 1"\n')
    (pkg / "jobs" / "j.py").write_text(
        'A = ("SELECT id FROM t"\n     " WHERE x = ?")\n'
        'B = f"  update t SET x = {1}"\n'
        'C = "selected cartridges are shipped"\n'
        'D = "Deleted nothing"\n')
    assert sql_outside_catalog(pkg) == [
        "tapearc/jobs/j.py:1: SELECT id FROM t WHERE x = ?",
        "tapearc/jobs/j.py:3: update t SET x =",
    ]


def test_no_import_cycle_between_subpackages() -> None:
    cycle = subpackage_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    graph = {"tapearc.a.x": {"tapearc.b.y"}, "tapearc.b.y": {"tapearc.c"},
             "tapearc.c": {"tapearc.a"}, "tapearc.a": set()}
    assert subpackage_cycle(graph) == ["a", "b", "c", "a"]
    assert subpackage_cycle({"tapearc.a.x": {"tapearc.a.y"}, "tapearc.a.y": {"tapearc.a.x"}}) \
        is None


def test_lower_layers_never_import_jobs_or_cli() -> None:
    graph = import_graph()
    wrong = sorted(f"{mod} imports {dep}" for mod, deps in graph.items()
                   if _subpackage(mod) in LOWER for dep in deps if _subpackage(dep) in UPPER)
    # nothing imports the command line but ``python -m tapearc``
    wrong += sorted(f"{mod} imports {dep}" for mod, deps in graph.items()
                    if _subpackage(mod) not in ("cli", "__main__") for dep in deps
                    if _subpackage(dep) == "cli")
    assert not wrong, "\n".join(wrong)
    # the graph is not empty by accident: the catalog's own modules import each other
    assert any(_subpackage(d) == "catalog" for d in graph["tapearc.jobs.rotation"])
