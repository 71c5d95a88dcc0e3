"""Every csrc/*.cu compiles with nvcc against torch's headers (a compile check, no link, no GPU).

The CUDA kernels can only run on a GPU machine, but they must at least compile everywhere nvcc
exists, so a CPU-only checkout catches syntax and API errors. Flags mirror what setup.py's
CUDAExtension passes (torch's common nvcc flags, -DWITH_CUDA, the C++ standard), for Hopper
(sm_90).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CU_FILES = sorted((REPO / "csrc").glob("*.cu"))


def find_nvcc():
    """nvcc from PATH, else from CUDA_HOME / the default toolkit location; None if absent."""
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return None


NVCC = find_nvcc()
# slow: an external nvcc build of every kernel file (tens of seconds each)
pytestmark = [pytest.mark.skipif(NVCC is None, reason="nvcc not found (no CUDA toolkit)"), pytest.mark.slow]


def nvcc_command(source: Path, obj: Path):
    from torch.utils import cpp_extension

    nvcc_home = Path(NVCC).resolve().parents[1]  # .../cuda-X/bin/nvcc -> .../cuda-X
    includes = [*cpp_extension.include_paths(), str(nvcc_home / "include"), str(REPO / "csrc")]
    return [
        NVCC, "-c", str(source), "-o", str(obj),
        "-std=c++20",  # as setup.py: torch 2.13's headers are C++20
        "-O3", "-DWITH_CUDA", *cpp_extension.COMMON_NVCC_FLAGS,
        # A CPU wheel of torch ships c10/cuda headers but not the CMake-generated
        # c10/cuda/impl/cuda_cmake_macros.h; this torch-provided switch skips that include.
        "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
        "-arch=sm_90",  # H100/H200; one architecture keeps the check fast
        "-Xcompiler", "-fPIC",
        *(f"-I{p}" for p in includes),
    ]


@pytest.fixture(scope="module")
def compiles(tmp_path_factory):
    """Start every nvcc at once (the files are independent; this halves the wall time)."""
    out_dir = tmp_path_factory.mktemp("nvcc")
    jobs = {}
    for source in CU_FILES:
        obj = out_dir / (source.stem + ".o")
        proc = subprocess.Popen(nvcc_command(source, obj), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        jobs[source.name] = (proc, obj)
    yield jobs
    for proc, _ in jobs.values():
        if proc.poll() is None:
            proc.kill()


def test_there_are_cuda_sources():
    assert {p.name for p in CU_FILES} >= {"tube_mask_cuda.cu", "chunked_ce_cuda.cu"}


@pytest.mark.parametrize("name", [p.name for p in CU_FILES])
def test_cu_file_compiles(compiles, name):
    proc, obj = compiles[name]
    output, _ = proc.communicate(timeout=540)
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert proc.returncode == 0, f"nvcc failed on {name}:\n" + "\n".join(errors or [output[-4000:]])
    assert obj.exists() and obj.stat().st_size > 0
