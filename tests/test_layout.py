"""The layout the architecture promises: the domain depends on no edge, and every module says
what it is for."""

import ast
from pathlib import Path

from tests.stack import ROOT

PACKAGES = ("identity", "api", "tasks", "worker", "cli", "bench", "migrations", "clients/python")
# What only the edges may know: HTTP, the queue and the metrics exposition.
EDGE_ONLY = {"api", "tasks", "worker", "cli", "fastapi", "starlette", "celery", "kombu"}
EDGE_ONLY |= {"prometheus_client"}
# A module or a function past these sizes is doing more than one thing.
SIZED = ("identity", "api", "tasks", "worker", "cli", "bench", "tests", "clients/python")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever the import stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_domain_imports_no_edge() -> None:
    reaching_out = {
        str(path.relative_to(ROOT)): sorted(imported(path) & EDGE_ONLY)
        for path in modules("identity")
        if imported(path) & EDGE_ONLY
    }
    assert reaching_out == {}


def test_every_module_opens_with_what_it_is_for() -> None:
    silent = [
        str(path.relative_to(ROOT))
        for path in modules(*PACKAGES)
        if not (ast.get_docstring(ast.parse(path.read_text())) or "").strip()
    ]
    assert silent == []


def test_the_subsystems_are_packages_of_the_domain() -> None:
    packages = {p.name for p in (ROOT / "identity").iterdir() if (p / "__init__.py").exists()}
    assert packages == {"ledger", "graph", "backfill", "scim"}


def oversized(path: Path) -> list[str]:
    """`path:line` of the module if it is too long, and of each function that is: a function
    counts from its `def` to its last line, decorators aside."""
    source = path.read_text()
    name = path.relative_to(ROOT)
    found = []
    if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
        found.append(f"{name}:1 module of {lines} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name} of {length} lines")
    return found


def test_no_module_is_over_400_lines_and_no_function_over_60() -> None:
    assert [entry for path in modules(*SIZED) for entry in oversized(path)] == []
