"""The layers point one way and no module imports itself back.

Every import counts, including those inside functions (a lazy import is still a
dependency; it only hides a cycle). Read from source with `ast`, so nothing is imported.

    infra_tasks  (the engine, resource kinds, names, desired state)
       ^
    flows        (Prefect flows and their CLIs)       deployments (CI's flow deployer)
       ^                                                   ^
    bench        (may use any product layer, never tests/)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("infra_tasks", "flows", "deployments", "bench")
# What each layer may import from the project (besides itself).
ALLOWED: dict[str, set[str]] = {
    "infra_tasks": set(),
    "flows": {"infra_tasks"},
    "deployments": {"infra_tasks"},
    "bench": {"infra_tasks", "flows", "deployments"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def project_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (anywhere in its source)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: project_imports(name, path, known) for name, path in mods.items()}


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "infra_tasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\ndef f():\n    from flows.x import y\n")
    known = {"infra_tasks", "infra_tasks.a", "infra_tasks.b", "flows", "flows.x"}
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert project_imports("infra_tasks.a", pkg / "a.py", known) == {"infra_tasks", "infra_tasks.b", "flows.x"}
    finally:
        ROOT = saved


@pytest.mark.parametrize("layer", PACKAGES)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    g = graph()
    wrong = sorted(f"{m} imports {dep}" for m, deps in g.items() if m.split(".")[0] == layer
                   for dep in deps if dep.split(".")[0] not in ALLOWED[layer] | {layer})
    assert not wrong, "\n".join(wrong)


def test_no_product_module_imports_the_tests() -> None:
    wrong = []
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                mod = (node.module if isinstance(node, ast.ImportFrom) else
                       node.names[0].name if isinstance(node, ast.Import) else None)
                if mod and mod.split(".")[0] == "tests":
                    wrong.append(f"{p.relative_to(ROOT)} imports {mod}")
    assert not wrong, "\n".join(wrong)


def find_cycles(g: dict[str, set[str]]) -> list[str]:
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    return cycles


def test_the_cycle_finder_finds_a_cycle_through_three_modules() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(g) == ["a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
