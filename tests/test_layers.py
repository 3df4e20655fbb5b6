"""The import graph flows one way: a module never imports from a layer above its own
(config -> data/models/weighting/scoring/grouping -> training -> families -> problem/affinity -> search -> cli).
Families sit above training because a family that learns its architecture inside a trial
(``Family.learn``) trains."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "mtlsearch"

# the layer of each top-level module or subpackage of mtlsearch (higher may import lower)
LAYERS = {
    "version": 0, "errors": 0, "limits": 0, "registry": 0, "storage_url": 0, "tasks": 1, "tasks_dense": 1, "config": 1,
    "data": 2, "models": 2, "weighting": 2, "checkpoints": 2, "scoring": 2, "grouping": 2,
    "training": 3, "families": 4, "problem": 5, "affinity": 5, "search": 6, "cli": 7, "__main__": 7, "__init__": 8,
}


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """The mtlsearch modules ``path`` imports (top-level name), with line numbers."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            else:
                target = (node.module or "").split(".")
            if target and target[0] == "mtlsearch":
                if len(target) == 1:  # from . import x / from mtlsearch import x
                    out += [(alias.name, node.lineno) for alias in node.names]
                else:
                    out.append((target[1], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name.split(".")[1], node.lineno) for a in node.names if a.name.startswith("mtlsearch.")]
    return out


def layer_of(path: Path) -> int:
    rel = path.relative_to(PACKAGE).parts
    name = rel[0][:-3] if rel[0].endswith(".py") else rel[0]
    return LAYERS[name]


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = layer_of(path)
        for name, line in imported_modules(path):
            if name in LAYERS and LAYERS[name] > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports mtlsearch.{name}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_every_module_has_a_layer():
    names = {p.stem if p.suffix == ".py" else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert names <= set(LAYERS), f"modules without a layer: {sorted(names - set(LAYERS))}"
