"""The import graph of ``orchestrator/`` (read with ast, lazy imports included): no cycle, no upward arrow.

Each sub-package's ``__init__`` docstring states its rule (``May import:`` and ``Never imports:`` lines); this
file reads those lines and holds every module of the package to them. Layers (docs/architecture.md):
commands -> sweep -> {search, tracking} -> trial -> {prune, deploy} -> yolo, with ``study`` readable from above
and the root's leaves from anywhere.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"
LEAVES = ("errors", "urls", "bounded_yaml", "vocabulary", "faults")
ROOT_MODULES = {"__init__", "__main__", "cli", *LEAVES}
TENSOR_LIBS = ("torch", "torchvision", "onnx", "onnxruntime")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports, anywhere in it (function-level imports count: they run too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)  # `from .prune import layers` imports a module
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path) if m in files and m != name}
        graph[name] |= {m for m in _imports(path) if not m.startswith("orchestrator")}
    return graph


def _in(module: str, layers: tuple[str, ...]) -> bool:
    short = module.removeprefix("orchestrator.")
    return any(short == layer or short.startswith(layer + ".") for layer in layers)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles():
    graph = _graph()
    internal = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    # a package's __init__ re-exporting its own modules is not a cycle between modules
    for m, deps in internal.items():
        internal[m] = {d for d in deps if not (m.startswith(d + ".") and d in graph)}
    assert _cycles(internal) == []


def _packages() -> list[str]:
    return sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def _rule(package: str, label: str) -> tuple[str, ...]:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
    m = re.search(rf"^{label}: (.+)$", doc, re.M)
    return tuple(w.strip() for w in m.group(1).split(",")) if m else ()


def test_every_package_states_its_rule():
    assert {p: _rule(p, "May import") for p in _packages() if not _rule(p, "May import")} == {}


def test_the_root_holds_only_the_cli_errors_and_leaves():
    assert {p.stem for p in PACKAGE.glob("*.py")} <= ROOT_MODULES
    assert len(list(PACKAGE.glob("*.py"))) <= 8


def test_leaves_import_only_leaves():
    bad = {
        m: sorted(d for d in deps if d.startswith("orchestrator.") and not _in(d, LEAVES))
        for m, deps in _graph().items()
        if _in(m, LEAVES)
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_each_package_imports_only_what_its_rule_allows():
    graph = _graph()
    bad = {}
    for package in _packages():
        allowed = _rule(package, "May import")
        if allowed[0].startswith("anything"):
            continue
        allowed = tuple(a for a in allowed if a != "leaves") + (LEAVES if "leaves" in allowed else ())
        never = _rule(package, "Never imports")
        for m, deps in graph.items():
            if not _in(m, (package,)):
                continue
            wrong = [d for d in deps if d.startswith("orchestrator.") and not _in(d, allowed)]
            wrong += [d for d in deps if d.split(".")[0] in never]
            if wrong:
                bad[m] = sorted(wrong)
    assert bad == {}


def test_the_real_and_the_fake_trial_do_not_import_each_other():
    graph = _graph()
    assert "orchestrator.trial.real" not in graph["orchestrator.trial.fake"]
    assert "orchestrator.trial.fake" not in graph["orchestrator.trial.real"]
