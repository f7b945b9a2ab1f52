"""The package's import structure: no import circle, and the shared run lifecycle loads no
family until a run asks for one."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "distill"
FAMILIES = ("distill.diffusion", "distill.kd", "distill.lm")


def module_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package modules it imports (module- and function-level imports both
    count); an import of a module's own enclosing package `__init__` is left out."""
    files = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                own_package = files.get(target, Path()).name == "__init__.py" and name.startswith(target + ".")
                if target in files and target != name and not own_package:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def in_family(module: str, family: str) -> bool:
    return module == family or module.startswith(family + ".")


def test_the_graph_sees_function_level_imports_and_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub.b import g\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\nfrom pkg.sub import helper\n")
    graph = module_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and "pkg.a" in graph["pkg.sub.b"]
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    assert "pkg.sub" not in graph["pkg.sub.b"]  # its own package's __init__ does not count


def test_the_package_has_no_import_cycle():
    assert cycles(module_graph()) == []


def test_the_shared_lifecycle_imports_no_family_and_families_import_no_other():
    graph = module_graph()
    shared_core = ("distill.runner", "distill.cli", "distill.config", "distill.task",
                   "distill.registry", "distill.method", "distill.teachers")
    for module in shared_core:
        family_imports = sorted(t for t in graph[module] if any(in_family(t, f) for f in FAMILIES))
        assert family_imports == [], f"{module} imports family modules {family_imports}"
    for family in ("distill.kd", "distill.lm"):
        for module, targets in graph.items():
            if in_family(module, family):
                assert not [t for t in targets if in_family(t, "distill.diffusion")], module


def test_importing_the_runner_loads_no_family_until_a_run_asks():
    code = ("import sys, distill.runner, distill.config, distill.cli\n"
            f"print(sorted(m for m in sys.modules if m.startswith({FAMILIES!r})))\n"
            "from distill.registry import METHODS\n"
            "METHODS.get('kd')\n"
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('distill.') and m.count('.') > 1}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = out.strip().splitlines()
    assert before == "[]"
    assert all(f"'{f.split('.')[1]}'" in after for f in FAMILIES)  # the first lookup registers them
