"""The layering rules, checked from the code's own imports (every `import`, at module level or
inside a function):

- folder path = import path: every first-party module is at the path its name says;
- shared code (`openautoglm.common`, the generated `openautoglm.v1`) imports no service;
- no service imports another service's code or the gateway;
- the gRPC-free cores import neither grpc nor nats, not even through the shared code they use;
- no import cycles among first-party modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = (ROOT / "services", ROOT / "gateway")
SERVICES = ("prompt_generator", "gnn_scheduler", "trainer", "evaluator", "gateway")
SHARED = ("common", "v1")
# Transports the cores must not touch (the OpenTelemetry gRPC interceptors count: they are the gRPC edge).
TRANSPORTS = ("grpc", "grpc_health", "grpc_reflection", "nats", "opentelemetry.instrumentation.grpc")
# The gRPC-free cores: the logic each service wraps (servicers and apps translate at the edge).
CORES = (
    "openautoglm.prompt_generator.search",
    "openautoglm.prompt_generator.policies",
    "openautoglm.prompt_generator.studies",
    "openautoglm.gnn_scheduler.planner",
    "openautoglm.gnn_scheduler.packing",
    "openautoglm.gnn_scheduler.gnn",
    "openautoglm.gnn_scheduler.simulate",
    "openautoglm.gnn_scheduler.heuristics",
    "openautoglm.gnn_scheduler.workflows",
    "openautoglm.gnn_scheduler.workloads",
    "openautoglm.gnn_scheduler.live",
    "openautoglm.gnn_scheduler.cluster",
    "openautoglm.trainer.core",
    "openautoglm.trainer.loop",
    "openautoglm.trainer.runner",
    "openautoglm.trainer.export",
    "openautoglm.trainer.ddp",
    "openautoglm.evaluator.metrics",
    "openautoglm.gateway.controller",
    "openautoglm.gateway.placement",
    "openautoglm.gateway.cost_model",
    "openautoglm.gateway.trial_events",
    "openautoglm.gateway.store",
    "openautoglm.common.spec.schema",
    "openautoglm.common.spec.protos",
    "openautoglm.common.catalogue",
    "openautoglm.common.resources",
    "openautoglm.common.datasets",
)


def _modules() -> dict[str, Path]:
    found = {}
    for root in SOURCE_ROOTS:
        for path in sorted((root / "openautoglm").rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            assert name not in found, f"{name} is defined twice: {found[name]} and {path}"
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports (first-party resolved to modules, others as written)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.add(candidate if candidate in MODULES else base)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _first_party(imported: set[str]) -> set[str]:
    return {m for m in imported if m in MODULES}


def _area(module: str) -> str:
    """The service or shared area a first-party module belongs to ('' for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_first_party(GRAPH[current]))
    return seen


def test_every_module_lives_at_the_path_its_name_says():
    for name, path in MODULES.items():
        expected = Path(*name.split("."))
        relative = path.with_suffix("")
        assert relative.parts[-len(expected.parts):] == expected.parts or (
            relative.name == "__init__" and relative.parent.parts[-len(expected.parts):] == expected.parts
        ), f"{name} is at {path}"
    assert "openautoglm.gateway.controller" in MODULES and "openautoglm.trainer.core" in MODULES


def test_shared_code_imports_no_service():
    offenders = [(m, i) for m in MODULES if _area(m) in SHARED for i in _first_party(GRAPH[m]) if _area(i) in SERVICES]
    assert not offenders, offenders


def test_no_service_imports_another_service_or_the_gateway():
    offenders = [(m, i) for m in MODULES if _area(m) in SERVICES
                 for i in _first_party(GRAPH[m]) if _area(i) in SERVICES and _area(i) != _area(m)]
    assert not offenders, offenders


@pytest.mark.parametrize("core", CORES)
def test_grpc_free_cores_reach_neither_grpc_nor_nats(core):
    assert core in MODULES, f"{core} is listed as a core but does not exist"
    reached = {(m, i) for m in _closure(core) for i in GRAPH[m] if i.startswith(TRANSPORTS) and (
        i in TRANSPORTS or i.split(".")[0] in ("grpc", "nats") or i.startswith("opentelemetry.instrumentation.grpc"))}
    reached |= {(m, m) for m in _closure(core) if m.endswith("_pb2_grpc")}
    assert not reached, f"{core} reaches a transport through {sorted(reached)}"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in _first_party(GRAPH[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_checker_sees_imports_inside_functions():
    """The rules above would be hollow if function-level imports were missed."""
    assert "openautoglm.trainer.app" in _first_party(GRAPH["openautoglm.cli"])  # imported inside a function
    assert any(i.startswith("grpc") for i in GRAPH["openautoglm.common.server"])
