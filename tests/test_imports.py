"""The import graph of ``orchestrator/`` (read with ast, lazy imports included) has no cycle and no upward arrow.

Layers (../shared/DESIGN.md): commands -> driver -> {search, dispatch, tracking} -> trial -> {prune, measure,
export, yolo}. The model code never imports study code, and the study driver never imports tensor code.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"
STUDY_SIDE = (
    "driver",
    "dispatch",
    "search",
    "tracking",
    "spec",
    "study_file",
    "study_check",
    "commands",
    "cli",
    "plots",
)
TENSOR_SIDE = ("yolo", "prune", "measure", "export", "torch", "torchvision", "onnx", "onnxruntime")


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


def test_model_code_imports_no_study_code():
    bad = {
        m: sorted(d for d in deps if d.startswith("orchestrator") and _in(d, (*STUDY_SIDE, "trial", "fake_trial")))
        for m, deps in _graph().items()
        if _in(m, ("yolo", "prune", "measure", "export"))
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_yolo_imports_only_itself_and_leaf_modules():
    # errors and bounded_yaml (a YAML reader with limits) import nothing of the project themselves
    bad = {
        m: sorted(d for d in deps if d.startswith("orchestrator") and not _in(d, ("yolo", "errors", "bounded_yaml")))
        for m, deps in _graph().items()
        if _in(m, ("yolo",))
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_study_driver_touches_no_tensor_code():
    bad = {
        m: sorted(d for d in deps if _in(d, TENSOR_SIDE) or d.split(".")[0] in TENSOR_SIDE)
        for m, deps in _graph().items()
        if _in(m, ("driver", "search", "tracking", "plots", "trial_data"))
    }
    assert {m: d for m, d in bad.items() if d} == {}
    # the study file's reader may name model vocabularies (yolo.hyp's presets: plain dataclasses) but no tensors
    spec = _graph()["orchestrator.spec"]
    assert not {d for d in spec if d.split(".")[0] in TENSOR_SIDE}


def test_the_real_and_the_fake_trial_do_not_import_each_other():
    graph = _graph()
    assert "orchestrator.trial" not in graph["orchestrator.fake_trial"]
