"""The index of megatron-core adaptations (lumos_megatron.platform.megatron_adaptations).

It must match the installed megatron-core version, every entry must point at code that exists, and
every CPU patch in cpu_compat.py must be indexed, so that an upgrade or a new patch cannot slip by
without the index (and docs/megatron.md) being looked at.
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path
from typing import Dict, Set, get_args

import pytest

from lumos_megatron.platform.megatron_adaptations import (
    ADAPTATIONS,
    CHECKED_MEGATRON_CORE_VERSION,
    AdaptationKind,
    MegatronAdaptation,
    installed_megatron_core_version,
)

REPO = Path(__file__).resolve().parents[2]
CPU_COMPAT = REPO / "lumos_megatron" / "platform" / "cpu_compat.py"
CPU_COMPAT_MODULE = "lumos_megatron.platform.cpu_compat"
DOC = REPO / "docs" / "megatron.md"

# Module-level functions of cpu_compat.py with these prefixes patch megatron or torch.cuda.
PATCH_PREFIXES = ("_stub", "_patch", "_install", "_rewrite", "_tagged", "_forbid", "_shim", "_replace",
                  "_wrap", "_override", "_fix")


def test_installed_megatron_core_is_the_checked_version():
    try:
        installed = importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("megatron-core is not installed; lumos_megatron is checked against "
                    f"megatron-core=={CHECKED_MEGATRON_CORE_VERSION}")
    assert installed_megatron_core_version() == installed
    assert installed == CHECKED_MEGATRON_CORE_VERSION, (
        f"megatron-core {installed} is installed, but lumos_megatron's adaptations were checked against "
        f"{CHECKED_MEGATRON_CORE_VERSION}. Re-check every entry of "
        "lumos_megatron/platform/megatron_adaptations.py (is the target still there, at which file:line, "
        "is the workaround still needed?) and docs/megatron.md, update each entry's checked_on, then "
        "bump CHECKED_MEGATRON_CORE_VERSION."
    )


@pytest.fixture(scope="module")
def resolved() -> Dict[str, object]:
    """Every entry's ``where`` resolved once (this imports megatron-core and our model code)."""
    out = {}
    for entry in ADAPTATIONS:
        try:
            out[entry.name] = entry.resolve()
        except (ImportError, AttributeError) as err:
            pytest.fail(f"adaptation {entry.name!r}: where={entry.where!r} does not resolve: "
                        f"{type(err).__name__}: {err}")
    return out


def test_every_entry_is_complete_and_resolves(resolved):
    names = [entry.name for entry in ADAPTATIONS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"adaptation names must be unique: {duplicates}"
    kinds = set(get_args(AdaptationKind))
    for entry in ADAPTATIONS:
        assert isinstance(entry, MegatronAdaptation)
        for field in ("name", "where", "target", "works_around", "kind", "checked_on"):
            value = getattr(entry, field)
            assert isinstance(value, str) and value.strip(), f"{entry.name!r}: empty {field}"
        assert entry.kind in kinds, f"{entry.name!r}: kind {entry.kind!r} not one of {sorted(kinds)}"
        assert entry.checked_on == CHECKED_MEGATRON_CORE_VERSION, (
            f"{entry.name!r} was checked on megatron-core {entry.checked_on}, the index on "
            f"{CHECKED_MEGATRON_CORE_VERSION}")
        assert entry.where.count(":") == 1 and entry.module.startswith("lumos_megatron."), \
            f"{entry.name!r}: where must be 'lumos_megatron.<module>:<qualname>', got {entry.where!r}"
        assert resolved[entry.name] is not None, f"{entry.name!r}: {entry.where} resolves to None"


def _names_used(node: ast.AST) -> Set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _names_assigned_as_values(node: ast.AST) -> Set[str]:
    """Names used in ``node`` other than as the called function (``x.attr = f``, ``g(f)``)."""
    called = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and id(n) not in called}


def test_every_cpu_compat_patch_is_indexed():
    tree = ast.parse(CPU_COMPAT.read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "apply_cpu_compat" in functions, "cpu_compat.apply_cpu_compat is gone: update this test"

    # Patches: functions named like one, and every function apply_cpu_compat calls for its effect
    # (a bare call statement; predicates such as cpu_compat_needed() are not patches).
    applied = {n.value.func.id for n in ast.walk(functions["apply_cpu_compat"])
               if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
               and isinstance(n.value.func, ast.Name)}
    patches = {name for name in functions if name.startswith(PATCH_PREFIXES)}
    patches |= applied & functions.keys()
    assert {"_stub_torch_cuda", "_tagged_p2p_ops", "_rewrite_type_checks"} <= patches, \
        "the patch discovery found too little; update this test"

    indexed = {entry.qualname.split(".")[0] for entry in ADAPTATIONS if entry.module == CPU_COMPAT_MODULE}
    unknown = indexed - functions.keys()
    assert not unknown, f"index entries name functions that cpu_compat.py lacks: {sorted(unknown)}"
    # Covered besides by an entry of its own: a building block used inside an indexed patch
    # (e.g. _rewrite_source), or an installer that assigns an indexed replacement into megatron
    # (e.g. _patch_pipeline_p2p installing _tagged_p2p_ops).
    building_blocks = set().union(*(_names_used(functions[name]) for name in indexed))
    installers = {name for name in patches if _names_assigned_as_values(functions[name]) & indexed}
    missing = sorted(patches - indexed - building_blocks - installers)
    assert not missing, (
        f"cpu_compat.py patches without an entry in lumos_megatron/platform/megatron_adaptations.py: "
        f"{missing}; add one (and a row in docs/megatron.md)")


def test_docs_table_lists_every_entry():
    text = DOC.read_text(encoding="utf-8")
    missing = [entry.name for entry in ADAPTATIONS if f"`{entry.name}`" not in text]
    assert not missing, f"docs/megatron.md's table lacks the index entries {missing}"


FAKE_MODE = Path(__file__).resolve().parents[2] / "lumos_megatron" / "plan" / "fake_mode.py"
FAKE_MODE_MODULE = "lumos_megatron.plan.fake_mode"


def test_every_fake_mode_patch_is_indexed():
    """The planner's fake-CUDA patches (all in plan/fake_mode.py) each have an index entry: every
    function fake_cuda_session calls, directly or through an indexed replacement it installs."""
    tree = ast.parse(FAKE_MODE.read_text(encoding="utf-8"))
    defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    session = defined["fake_cuda_session"]
    called = {n.func.id for n in ast.walk(session) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    patches = (called & defined.keys()) - {"check_versions", "_patched"}
    patches |= {"fused_adam"}
    assert {"_cuda_stubs", "_patch_rng_tracker", "_eager_flex_everywhere"} <= patches, \
        "the patch discovery found too little; update this test"
    indexed = {entry.qualname for entry in ADAPTATIONS if entry.module == FAKE_MODE_MODULE}
    installers = {name for name in patches
                  if isinstance(defined[name], ast.FunctionDef) and _names_assigned_as_values(defined[name]) & indexed}
    missing = sorted(patches - indexed - installers)
    assert not missing, (f"plan/fake_mode.py patches without an entry in "
                         f"lumos_megatron/platform/megatron_adaptations.py: {missing}")
