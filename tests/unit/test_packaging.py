"""Packaging: ``install_requires`` takes a torch range, so that ``pip install -e .`` keeps a
cluster's CUDA torch (e.g. an NGC container's pre-release build) instead of replacing it."""

import ast

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from conftest import REPO


def _torch_requirement() -> SpecifierSet:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "TORCH_REQUIREMENT"
                                                for t in node.targets):
            requirement = node.value.value
            assert requirement.startswith("torch")
            return SpecifierSet(requirement[len("torch"):])
    raise AssertionError("setup.py defines no TORCH_REQUIREMENT")


def test_install_requires_accepts_the_supported_torch_versions():
    spec = _torch_requirement()
    # CI's CPU wheel, released CUDA builds, and an NGC container's pre-release build.
    for version in ("2.13.0", "2.6.0", "2.9.1", "2.14.1", "2.8.0a0+5228986c39.nv25.6"):
        assert spec.contains(Version(version), prereleases=True), version
    for version in ("2.5.1", "1.13.1"):  # no FlexAttention block masks / enable_gqa
        assert not spec.contains(Version(version)), version


def test_readme_commands_still_pin_the_cpu_wheel_first():
    readme = (REPO / "README.md").read_text()
    assert readme.count("pip install torch==2.13.0 && pip install --no-build-isolation -e") >= 2
    assert "torch==" not in (REPO / "setup.py").read_text().split("install_requires")[1].split("]")[0]


def test_megatron_fallback_warnings_are_printed_at_most_once():
    """megatron-core warns four times at import that TE/Apex are missing (our CPU setup)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import lumos_megatron.training.loop"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("Transformer Engine and Apex are not installed") <= 1, proc.stderr
