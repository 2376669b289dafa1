"""The package's import graph: no cycles, and the layers only import downwards.

Layers (bottom to top): data and models, then metrics / optim / reporting, the unlearning
contract, tasks, attacks, method families, and the facades (callbacks, cli). A backbone imports
no method, data imports no metric, shared layers import no method family, and families never
import each other, so a new family (federated, class unlearning) is born in its own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "lit_unlearn"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """``lit_unlearn`` modules imported by ``path`` (``from a import b`` counts a and a.b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lit_unlearn")}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("lit_unlearn")
        ):
            module = str(node.module)
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path, top_level_only) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_no_import_cycles_between_modules() -> None:
    graph = _graph(top_level_only=True)  # module-level imports: what runs at import time
    assert sum(map(len, graph.values())) > 100  # the parser does see the package's imports
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_would_catch_a_cycle(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from lit_unlearn.b import x\n")
    b.write_text("import lit_unlearn.a\n")
    assert _imports(a, True) == {"lit_unlearn.b", "lit_unlearn.b.x"}
    assert _imports(b, True) == {"lit_unlearn.a"}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] == "methods" and len(parts) > 2:
        return f"methods.{parts[2]}"
    return parts[1]


# Which layers each layer may import (itself always allowed). Function-level imports count too:
# a lazy import is still a dependency.
ALLOWED: dict[str, set[str]] = {
    "_structural": set(),
    "_exit": set(),
    # Bottom layers shared by all (issue 22): hyperparameter checks, checkpoint fingerprints,
    # the divergence guard.
    "validation": set(),
    "fingerprint": set(),
    "divergence": {"validation"},
    "datamodules": {"_structural", "fingerprint"},
    "models": set(),
    "metrics": set(),
    "optim": {"validation"},
    "reporting": set(),
    # the DataModule protocols the base callback checks; the default guard and fingerprints
    "unlearning": {"datamodules", "divergence", "fingerprint", "validation"},
    "tasks": {"datamodules", "metrics", "models", "unlearning", "_structural", "validation"},
    "attacks": {"datamodules", "reporting", "_structural"},
    "runs": {"datamodules", "tasks", "cli"},
    "methods": set(),
    "methods.attribute": {
        "validation",
        "fingerprint",
        "datamodules",
        "models",
        "metrics",
        "optim",
        "reporting",
        "unlearning",
        "tasks",
        "attacks",
        "runs",
        "_structural",
    },
    "methods.interaction": {
        "validation",
        "fingerprint",
        "datamodules",
        "models",
        "metrics",
        "optim",
        "reporting",
        "unlearning",
        "tasks",
        "runs",
        "_structural",
    },
    "methods.class_unlearning": {
        "validation",
        "fingerprint",
        "datamodules",
        "models",
        "metrics",
        "optim",
        "reporting",
        "unlearning",
        "tasks",
        "attacks",
        "runs",
        "_structural",
    },
    "methods.federated": {
        "validation",
        "fingerprint",
        "datamodules",
        "models",
        "metrics",
        "optim",
        "reporting",
        "unlearning",
        "tasks",
        "attacks",
        "runs",
        "_structural",
    },
    "callbacks": {
        "attacks",
        "divergence",
        "methods.attribute",
        "methods.class_unlearning",
        "methods.federated",
        "methods.interaction",
        "unlearning",
    },
    "trainer": {"attacks", "datamodules", "fingerprint"},
    "cli_app": set(),
    "cli": {"cli_app", "trainer", "root"},
    "root": {"_exit"},
}


def test_layers_import_only_downwards() -> None:
    graph = _graph(top_level_only=False)
    wrong = []
    for module, targets in graph.items():
        layer = _layer(module)
        assert layer in ALLOWED, f"{module}: layer {layer!r} has no rule in ALLOWED"
        for target in targets:
            other = _layer(target)
            if other != layer and other not in ALLOWED[layer]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("models", "methods"),  # a backbone imports no method's solver
        ("datamodules", "metrics"),  # negative sampling is data, not a metric
        ("methods.attribute", "methods.interaction"),  # families never import each other
        ("methods.interaction", "methods.attribute"),
        ("methods.class_unlearning", "methods.attribute"),
        ("methods.class_unlearning", "methods.interaction"),
        ("methods.federated", "methods.attribute"),
        ("methods.federated", "methods.class_unlearning"),
    ],
)
def test_named_rules_hold(module: str, forbidden: str) -> None:
    assert forbidden not in ALLOWED[module]
