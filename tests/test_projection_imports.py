"""How sweeper/projection/ imports itself: kernels at the bottom, the backend choice on top.

The kernel modules import only the generator and the shared block sizes; `fastfood.py` picks a
backend and imports the kernels, never the other way round; the numba path never needs triton.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sweeper.projection

PACKAGE = Path(sweeper.projection.__file__).parent
LEAVES = {"generator", "blocks"}
KERNEL_MODULES = {
    "fastfood_cpu": LEAVES,
    "triton_generator": LEAVES,
    "triton_kernels": LEAVES | {"triton_generator"},
    "fastfood_triton": LEAVES | {"triton_generator", "triton_kernels"},
}


def imports_within_package() -> dict[str, set[str]]:
    """Module → the sibling modules it imports anywhere (function-level imports too)."""
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    graph = {}
    for name in modules:
        found = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "sweeper.projection":
                found |= {alias.name for alias in node.names} & modules
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module.removeprefix("sweeper.projection.")} & modules
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("sweeper.projection.") for a in node.names} & modules
        graph[name] = found
    return graph


def test_kernel_modules_import_only_the_generator_and_block_sizes():
    graph = imports_within_package()
    for module, allowed in KERNEL_MODULES.items():
        assert graph[module] <= allowed, f"{module} imports {graph[module] - allowed}"
    assert not graph["generator"] and not graph["blocks"]


def test_no_import_cycles_inside_the_projection_package():
    graph = imports_within_package()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " → ".join((*path, module))
        if module not in done:
            for dep in graph[module]:
                visit(dep, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())


def test_the_numba_path_runs_without_importing_triton():
    """A CPU-only process (a laptop, a CPU Ray worker) trains Fastfood without triton installed."""
    code = """
import sys, torch
from sweeper.projection import fastfood_cpu, make_projection, selftest
from sweeper.projection.fastfood import apply_delta

theta = torch.ones(3, requires_grad=True)
lam = torch.ones(2, requires_grad=True)
W = apply_delta(torch.zeros(10), theta, 0, lam=lam, group_sizes=(4, 6), backend="cpu")
W.sum().backward()
make_projection("fastfood", 10, 3, seed=0).matvec(torch.ones(3))
print(sorted(m for m in sys.modules if m.split(".")[0] == "triton"))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout == "[]\n"
