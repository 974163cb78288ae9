"""The layer rule of docs/architecture.md, read from the code: every import of a segdeploy module (at the top of a
file or inside a function) goes down the layers or stays in its own package, and no files import each other in a
circle. A new package or top-level module must be given a layer here (and in docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "segdeploy"

# lowest first; a unit is a top-level module or package of segdeploy ("segdeploy" itself: its __init__)
LAYERS = (
    ("segdeploy", "errors", "fileio", "locks", "numerics", "records", "rowkeys", "backends"),  # the core: may import each other
    ("machine", "data", "models"),
    ("run", "evaluation"),
    ("train", "export", "engines", "xai"),
    ("importers",),  # segdeploy.models.importers: models trained elsewhere (they build runs, export, check parity)
    ("bench",),
    ("study",),
    ("analysis",),
    ("report",),
    ("commands",),
    ("__main__",),  # python -m segdeploy
)
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}
CORE = 0


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    if parts[1:3] == ["models", "importers"]:
        return "importers"  # a plugin package above export: it sits in models/ beside the zoo it joins
    return parts[1] if len(parts) > 1 else "segdeploy"


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every segdeploy module ``path`` imports, wherever the import statement is."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "segdeploy"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "segdeploy":
            for alias in node.names:  # `from segdeploy.x import y`: the module y where it is one, else x
                sub = f"{node.module}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES else node.module))
    return found


GRAPH = {m: sorted({t for _, t in imports(p) if t in MODULES and t != m})
         for m, p in MODULES.items()}


def test_every_unit_has_a_layer():
    assert sorted({unit_of(m) for m in MODULES} - set(LAYER)) == []


def test_no_import_goes_up_a_layer():
    wrong = []
    for module, path in MODULES.items():
        here = unit_of(module)
        for line, target in imports(path):
            there = unit_of(target)
            if there == here or (LAYER[here] == CORE and LAYER[there] == CORE):
                continue
            if LAYER[there] >= LAYER[here]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {module} ({here}, layer {LAYER[here]}) "
                             f"imports {target} ({there}, layer {LAYER[there]})")
    assert wrong == [], "\n".join(wrong)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_files_import_each_other_in_a_circle():
    assert _cycles(GRAPH) == []


def test_the_checks_can_fail():
    """The two rules catch what they are for (a test of the test: both would pass on an empty graph)."""
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    up = [t for _, t in imports(MODULES["segdeploy.commands.app"]) if LAYER[unit_of(t)] < LAYER["commands"]]
    assert up, "commands import the layers below them"


@pytest.mark.parametrize("unit", ["study", "analysis"])
def test_running_and_analysis_stay_apart_from_what_sits_on_them(unit):
    above = {u for u, layer in LAYER.items() if layer > LAYER[unit]}
    assert not [t for m, p in MODULES.items() if unit_of(m) == unit for _, t in imports(p) if unit_of(t) in above]
