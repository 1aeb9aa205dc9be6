"""The layering contract of the package (docs/design.md), checked over the import graph of every module,
imports inside functions included:

    core -> data -> specialize -> run -> measure -> workflows -> cli        (each imports only from its left)

- a module imports only from its own layer or the layers below it (never from the ``onceforall`` facade);
- the workflows are siblings: none imports another, except the demo, which chains them;
- no import cycles between modules;
- no module imports another module's private names (``_name``), and private attributes are only reached on
  ``self``/``cls`` or on third-party modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "onceforall"
LAYERS = ("core", "data", "specialize", "run", "measure", "workflows", "cli")
# Workflows that may import other workflows: the demo chains train, eval, search and export.
CHAINS = {"onceforall.workflows.demo"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / Path(*name.split(".")) / "__init__.py").is_file()


def _exists(name: str) -> bool:
    return _is_package(name) or (PACKAGE.parent / Path(*name.split("."))).with_suffix(".py").is_file()


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import statement of module ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [alias.name for alias in node.names]
            out.append((module, names, node.lineno))
            # `from pkg import submodule` imports the submodule too
            out += [(f"{module}.{n}", [], node.lineno) for n in names if _exists(f"{module}.{n}")]
    return [(m, names, line) for m, names, line in out if m == "onceforall" or m.startswith("onceforall.")]


def _layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the facade, onceforall/__init__.py: re-exports the public API, above everything
    if parts[1] in ("__main__", "cli"):
        return LAYERS.index("cli")
    assert parts[1] in LAYERS, f"{name} is in no layer; add it to one (docs/design.md) and to LAYERS here"
    return LAYERS.index(parts[1])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_the_layers(name):
    here = _layer(name)
    for module, _, line in _imports(name):
        assert _exists(module), f"{name}:{line} imports {module}, which does not exist"
        if name == "onceforall":
            continue
        theirs = LAYERS[_layer(module)] if _layer(module) < len(LAYERS) else "facade"
        assert _layer(module) <= here, f"{name}:{line} imports {module}: layer '{theirs}' is above '{LAYERS[here]}'"


def _workflow_imports(name: str) -> list[tuple[str, int]]:
    """(workflow module, line) for every import of another workflow module by workflow ``name``."""
    if not name.startswith("onceforall.workflows."):
        return []
    return [(m, line) for m, _, line in _imports(name)
            if m.startswith("onceforall.workflows.") and m != name and _exists(m)]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_workflows_are_siblings(name):
    if name in CHAINS:
        return
    found = [f"{name}:{line} imports {module}" for module, line in _workflow_imports(name)]
    assert not found, f"{found}: workflows are siblings (move what both need below them)"


def test_the_sibling_rule_sees_a_workflow_importing_a_workflow():
    """Not vacuous: the demo's imports of other workflows are seen (and would fail outside CHAINS)."""
    found = {m for m, _ in _workflow_imports("onceforall.workflows.demo")}
    assert {"onceforall.workflows.train", "onceforall.workflows.evaluate", "onceforall.workflows.export"} <= found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_from_other_modules(name):
    for module, names, line in _imports(name):
        if module == name:
            continue
        assert not any(part.startswith("_") and not part.startswith("__") for part in module.split(".")), \
            f"{name}:{line} imports the private module {module}"
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{name}:{line} imports private names {private} from {module}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_private_attributes_only_on_self_or_third_party(name):
    tree = ast.parse(MODULES[name].read_text())
    third_party = {"self", "cls"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            third_party |= {(a.asname or a.name).split(".")[0] for a in node.names
                            if not a.name.startswith("onceforall")}
        elif isinstance(node, ast.ImportFrom) and not node.level and not (node.module or "").startswith("onceforall"):
            third_party |= {a.asname or a.name for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            assert isinstance(root, ast.Name) and root.id in third_party, \
                f"{name}:{node.lineno} reaches the private attribute .{node.attr} of another object"


def test_no_import_cycles():
    graph = {name: {m for m, _, _ in _imports(name) if m in MODULES and m != name} for name in MODULES}
    graph["onceforall"] = set()  # the facade imports everything and nothing imports it
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_contract_sees_imports_inside_functions(tmp_path):
    """The checker is not vacuous: it reads function-level imports and would reject an upward one."""
    found = {m for m, _, _ in _imports("onceforall.cli")}
    assert "onceforall.workflows.train" in found  # imported inside cmd_train only
    assert _layer("onceforall.workflows.train") > _layer("onceforall.run.rundir") > _layer("onceforall.core.step")
