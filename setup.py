"""Build and install lumos_megatron.

The csrc/ extension (C++/OpenMP CPU kernels, CUDA kernels when torch has CUDA) is built from
here; ``LUMOS_NO_EXT=1`` skips it and the pure-PyTorch references in lumos_megatron/ops are used.
Until the kernels land (W1.3) the extension list is empty. Install with
``pip install --no-build-isolation -e .`` so the build sees the torch already installed (a
build-isolated environment would resolve a fresh, CUDA-sized torch from the index).
"""

import os

from setuptools import find_packages, setup


def csrc_extensions():
    """The csrc/ extension modules to build (none yet; LUMOS_NO_EXT=1 always builds none)."""
    if os.environ.get("LUMOS_NO_EXT") == "1":
        return []
    return []


def build_cmdclass():
    """torch's BuildExtension once there are extensions to compile."""
    if not csrc_extensions():
        return {}
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension}


setup(
    name="lumos_megatron",
    version="0.1.0",
    description="Megatron-Core training system for Lumos-1-style autoregressive video generators",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["lumos_megatron", "lumos_megatron.*"]),
    install_requires=[
        # Pinned: pip resolves the CPU wheel on our machines; clusters preinstall their CUDA build.
        "torch==2.13.0",
        # Last release that supports Python 3.11 (0.17+ needs 3.12).
        "megatron-core==0.16.1",
        "psutil",  # required by dist_checkpointing's async writer
        "tensorboard",
        "sentencepiece",
        "pyyaml",
        "tqdm",
        "numpy",
    ],
    extras_require={
        "dali": ["nvidia-dali-cuda120"],
        "te": ["transformer-engine"],
        "dev": ["pytest>=8", "pytest-timeout"],
    },
    ext_modules=csrc_extensions(),
    cmdclass=build_cmdclass(),
    entry_points={"console_scripts": ["lumos-train=lumos_megatron.train:main"]},
)
