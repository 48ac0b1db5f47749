"""The package's shape, pinned: no import cycles between modules, each layer imports only the layers
below it, and nothing imports a private Ray module. Read from the source (every `import`, function
level and type-only ones included), so a cycle hidden in a lazy import or an annotation counts
too; and every module is imported alone in a fresh interpreter, which is where a cycle actually
bites."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sweeper"

# Leaf modules: anything may import them, and they import only each other.
LEAVES = {"sweeper", "sweeper.errors", "sweeper.paths", "sweeper.digest", "sweeper.stops"}
# Every folder and top-level module, bottom to top, with the layers it may import from sweeper
# (besides itself and the leaves). Each may name only layers listed before it, so no two layers
# can import each other: engine → methods → training → tasks/projection/search.
LAYERS = {
    "search": set(),
    "projection": set(),
    "tasks": set(),
    "training": {"projection", "tasks"},
    "methods": {"projection", "tasks", "training"},
    "spec": {"methods", "tasks"},
    "store": {"spec"},
    "tracking": {"search", "spec", "store", "methods"},
    "preflight": {"spec", "store", "tracking"},
    "engine": {"search", "projection", "tasks", "methods", "training", "tracking", "spec"},
    "dashboard": {"search", "store", "tracking", "preflight", "methods", "spec"},
    "cluster": {"engine", "store", "tracking", "spec", "preflight", "dashboard", "methods"},
    "doctor": {"cluster", "projection", "tasks"},
    "cli": {
        "cluster",
        "dashboard",
        "doctor",
        "engine",
        "methods",
        "preflight",
        "spec",
        "store",
        "tasks",
        "training",
        "tracking",
    },
    "docs_gen": {"cli", "methods", "spec", "tasks"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The sweeper modules `name` imports, resolved to modules that exist (a name imported from
    a package that is itself a module counts as that module). A module's own parent packages are
    left out: Python runs them before the module in any case."""
    out: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("sweeper") and not f"{name}.".startswith(f"{target}."):
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_imports_itself_back_through_others():
    seen: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for child in sorted(GRAPH.get(node, ())):
            if child in {"sweeper"}:
                continue
            if seen.get(child) == 1:
                cycles.append([*stack[stack.index(child) :], child])
            elif child not in seen:
                visit(child, [*stack, child])
        seen[node] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_the_layers_are_ordered_so_none_imports_one_above_it():
    order = list(LAYERS)
    for layer, below in LAYERS.items():
        above = sorted(other for other in below if order.index(other) >= order.index(layer))
        assert not above, f"{layer} may import {above}, listed above it"


def test_every_module_belongs_to_a_layer():
    unplaced = sorted(m for m in MODULES if m not in LEAVES and _layer(m) not in LAYERS)
    assert not unplaced, f"place these in LAYERS (or LEAVES): {unplaced}"
    beyond = {leaf: GRAPH[leaf] - LEAVES for leaf in LEAVES}
    assert not any(beyond.values()), f"a leaf imports more than leaves: {beyond}"


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for module, targets in GRAPH.items():
        layer = _layer(module)
        if module in LEAVES:
            continue
        for target in targets:
            other = _layer(target)
            if target in LEAVES or other == layer or other in LAYERS[layer]:
                continue
            if other == "tasks" and target == "sweeper.tasks.assets":
                continue
            wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize(
    ("lower", "upper"), [("training", "methods"), ("tracking", "engine"), ("methods", "engine")]
)
def test_the_pairs_that_once_imported_each_other_do_not(lower, upper):
    """The training loop takes a wrapped model (no method registry); the tracking store speaks
    only what it writes and reads (no plan); a method's config is its own (no probe config)."""
    upward = sorted(
        f"{m} imports {t}" for m, ts in GRAPH.items() for t in ts
        if _layer(m) == lower and _layer(t) == upper
    )  # fmt: skip
    assert not upward, "\n".join(upward)


def test_kernels_import_only_the_generator_and_block_sizes():
    """`fastfood/__init__` picks a backend and imports the kernels, never the other way round."""
    ff = "sweeper.projection.fastfood"
    leaves = {f"{ff}.generator"}
    allowed = {
        "cpu": leaves,
        "reference": leaves,
        "triton.generator": leaves,
        "triton.kernels": leaves | {f"{ff}.triton.generator"},
        "triton.launch": leaves | {f"{ff}.triton.generator", f"{ff}.triton.kernels"},
    }
    for kernel, ok in allowed.items():
        module = f"{ff}.{kernel}"
        assert GRAPH[module] <= ok, f"{module} imports {GRAPH[module] - ok}"
    assert not GRAPH[f"{ff}.generator"]


def test_nothing_in_the_package_imports_a_private_ray_module():
    private = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            private += [
                f"{module}: {n}"
                for n in names
                if n.split(".")[0] == "ray" and any(p.startswith("_") for p in n.split("."))
            ]
    assert not private, "\n".join(private)


# Imported once by the parent below, so each forked child pays only for sweeper's own modules.
THIRD_PARTY = ("numpy", "torch", "yaml", "rich", "mlflow", "ray", "ray.tune", "pyarrow", "optuna")
FORK_EACH = """
import importlib, os, sys
for lib in sys.argv[1].split(","):
    importlib.import_module(lib)
assert not [m for m in sys.modules if m.split(".")[0] == "sweeper"], "sweeper imported early"
bad = []
for name in sys.argv[2:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child with no sweeper module loaded: `import name` alone, as a user would
        os.close(r)
        try:
            importlib.import_module(name)
        except BaseException as e:
            os.write(w, f"{name}: {type(e).__name__}: {e}".encode()[:4000])
            os._exit(1)
        os._exit(0)
    os.close(w)
    message = os.read(r, 4096).decode(errors="replace")
    os.close(r)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]):
        bad.append(message or f"{name}: the import crashed")
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


@pytest.mark.slow
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """Each module in a process where no other sweeper module was imported first: a fork per
    module of one interpreter that holds only the third-party libraries."""
    names = [m for m in MODULES if not m.endswith("__main__")]
    done = subprocess.run(
        [sys.executable, "-c", FORK_EACH, ",".join(THIRD_PARTY), *names],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
