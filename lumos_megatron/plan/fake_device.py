"""The fake CUDA device library: built with the system C++ compiler on first use, then preloaded.

A CPU-only torch build has no CUDA device guard and CUDA hooks that say "no CUDA", so autograd
aborts the process as soon as a backward runs on ``cuda`` fake tensors. ``fake_cuda_device.cpp``
(next to this file, ~40 lines) registers both; torch reads the hooks once while it imports, so the
library must be in ``LD_PRELOAD`` before the interpreter starts. :func:`worker_environment` gives
the environment a planner worker is started with.

The library is cached per torch version and source hash under ``$LUMOS_PLAN_CACHE`` (default
``~/.cache/lumos_megatron``), like the csrc extension builds once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Optional

from lumos_megatron.plan.fake_mode import PlannerEnvironmentError

SOURCE = Path(__file__).with_name("fake_cuda_device.cpp")


def _cache_dir() -> Path:
    return Path(os.environ.get("LUMOS_PLAN_CACHE", Path.home() / ".cache" / "lumos_megatron"))


def library_path() -> Path:
    """Where the library for this torch and this source lives (built or not)."""
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:12]
    return _cache_dir() / f"fake_cuda_device_{digest}.so"


def build_library(verbose: bool = False) -> Path:
    """The fake device library, compiled now if it is not cached; raises
    :class:`PlannerEnvironmentError` (one line) when no C++ compiler is available or it fails."""
    import torch

    target = library_path()
    if target.exists():
        return target
    if torch.version.cuda is not None:
        raise PlannerEnvironmentError("this torch has CUDA: the planner's fake device is for CPU-only builds")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise PlannerEnvironmentError(
            "lumos-plan builds a small C++ fake CUDA device on first use and found no C++ compiler: "
            "install one (e.g. apt-get install g++) or set CXX")
    torch_dir = Path(torch.__file__).parent
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
           f"-I{torch_dir / 'include'}", str(SOURCE), f"-L{torch_dir / 'lib'}", "-lc10", "-ltorch_cpu",
           f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["(no output)"])[0]
        raise PlannerEnvironmentError(f"building the planner's fake CUDA device with {compiler} failed: {first}")
    if verbose:
        print(f"lumos-plan: built {target}", flush=True)
    os.replace(tmp, target)  # atomic: concurrent planners see the whole library or none
    return target


def worker_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment of a planner worker: the fake device preloaded, one thread per process."""
    env = dict(os.environ if base is None else base)
    library = str(build_library())
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("LUMOS_STRICT_CPU", None)  # the worker's torch.cuda is the fake one, not the CPU stubs
    return env
