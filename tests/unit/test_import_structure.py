"""The package's import graph has no circles, and the modules that used to form them import alone.

The graph is read from the source (every ``import`` statement, those inside functions included,
since a lazy import is still a dependency), one node per module.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "lumos_megatron"


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def import_graph():
    """{module: set of lumos_megatron modules it imports}."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges[module] |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(parts + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    if full in modules:
                        edges[module].add(full)
                    elif target in modules:
                        edges[module].add(target)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The formerly circular pairs, lower module first: each imports alone in a fresh interpreter.
ORDER = ["lumos_megatron.vocab.text_ids", "lumos_megatron.vocab.vocab",
         "lumos_megatron.models.attention.te_availability",
         "lumos_megatron.models.attention.backends.te_bias_backend",
         "lumos_megatron.checkpoint.directory", "lumos_megatron.config.recipe", "lumos_megatron.config.stored",
         "lumos_megatron.config.loader"]


@pytest.mark.parametrize("module", ORDER)
def test_module_imports_alone(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


ABOVE_MODELS = ("lumos_megatron.objective", "lumos_megatron.training", "lumos_megatron.data",
                "lumos_megatron.inference", "lumos_megatron.config.validate", "lumos_megatron.config.loader",
                "lumos_megatron.checkpoint", "lumos_megatron.plan", "lumos_megatron.scaling")


def test_models_import_nothing_above_them():
    """The model is handed what it needs (the objective's loss head, the schema's head dim)."""
    edges = import_graph()
    upward = {m: sorted(t for t in targets if t.startswith(ABOVE_MODELS))
              for m, targets in edges.items() if m.startswith("lumos_megatron.models")}
    assert {m: t for m, t in upward.items() if t} == {}


def test_every_package_directory_is_a_regular_package():
    """A folder without ``__init__.py`` is a namespace package that ``find_packages`` leaves out
    of the wheel (the editable install still finds it, so only an installed wheel would fail)."""
    missing = [str(d.relative_to(REPO)) for d in PACKAGE.rglob("*")
               if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").exists()]
    assert missing == []
