"""The ONE place where megatron-core 0.16.1 is adapted to run on CPU (gloo) without CUDA.

Megatron-core hard-codes CUDA in a handful of places on the training path (see
docs/megatron.md §4 and §5 for file:line). Running real megatron DDP, optimizers, pipeline
schedules and dist_checkpointing on a CPU is a product feature (users debug TP/PP/CP layouts on a
laptop) and what our multi-process tests rely on, so the adaptations live here, applied once, and
only when CUDA is absent. Each patch says what it works around.

Three kinds of patch:
1. ``torch.cuda`` stubs for device queries, synchronisation and RNG (CPU generator instead).
2. A device-rewriting ``torch`` proxy installed as ``module.torch`` in the megatron modules that
   allocate with the literal ``device="cuda"``.
3. Source rewrites of functions that check ``tensor.type() == 'torch.cuda.FloatTensor'``: the
   function's source is re-executed with the CUDA type names replaced by the CPU ones. Every
   rewrite asserts that the text it replaces is present, so a megatron upgrade fails loudly here
   instead of silently skipping a patch.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import textwrap
import types
import warnings

import torch

logger = logging.getLogger(__name__)

_APPLIED = False

# torch factory functions that accept ``device=``; the proxy maps a CUDA device to CPU for them.
_FACTORIES = (
    "zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "randint",
    "zeros_like", "ones_like", "empty_like", "full_like", "as_tensor", "linspace",
)


def cpu_compat_needed() -> bool:
    """True when this process has no usable CUDA device, i.e. the CPU adaptations must be applied."""
    return not torch.cuda.is_available()


def _to_cpu_device(device):
    """Map any CUDA device spelling ("cuda", "cuda:0", torch.device('cuda'), an int) to CPU."""
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        return torch.device("cpu")
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


def _cpu_factory(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        # pin_memory needs an accelerator backend; it is meaningless on a CPU-only run.
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        return fn(*args, **kwargs)

    return wrapper


class _CpuAutocast:
    """``torch.autocast("cuda", ...)`` (schedules.py:418) → a CPU autocast of the same dtype."""

    def __new__(cls, device_type, *args, **kwargs):
        if device_type == "cuda":
            device_type = "cpu"
        return torch.autocast(device_type, *args, **kwargs)


def _make_torch_proxy() -> types.ModuleType:
    """A module object that behaves as ``torch`` except that factory functions allocate on CPU.

    Works around the ``device="cuda"`` literals in pipeline_parallel/schedules.py:596/983/2138,
    optimizer/optimizer.py:473/481/485/907, optimizer/clip_grads.py:90/103/115/174/207,
    utils.py:1207 and transformer/utils.py:35/40.
    """
    proxy = types.ModuleType("torch_cpu_proxy")
    proxy.__dict__.update({k: v for k, v in vars(torch).items() if not k.startswith("__")})
    for name in _FACTORIES:
        setattr(proxy, name, _cpu_factory(getattr(torch, name)))
    proxy.autocast = _CpuAutocast
    return proxy


def _stub_torch_cuda() -> None:
    """Device queries and RNG on ``torch.cuda`` answer for the CPU.

    - ``current_device`` → ``torch.device('cpu')``: used as ``device=`` by the grad/param buffers
      (distributed/param_and_grad_buffer.py:800/806), tensor_parallel/mappings.py:91/141/181 and
      pipeline_parallel/p2p_communication.py:313/321.
    - ``synchronize``/``empty_cache`` → no-ops (p2p_communication.py:398, timers, checkpointing).
    - ``get_rng_state``/``set_rng_state``/``manual_seed`` → the CPU default generator: the
      model-parallel RNG tracker (tensor_parallel/random.py:235-240, 422) then emulates its
      separate streams by swapping the one CPU generator state.
    """
    cuda = torch.cuda
    cuda.current_device = lambda: torch.device("cpu")
    cuda.synchronize = lambda *a, **k: None
    cuda.empty_cache = lambda *a, **k: None
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    # Seed the CPU generator directly: torch.manual_seed itself calls torch.cuda.manual_seed_all.
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.random.get_rng_state = cuda.get_rng_state
    cuda.random.set_rng_state = cuda.set_rng_state


def _patch_rng_tracker() -> None:
    """tensor_parallel.random._get/_set_cuda_rng_state read ``torch.cuda.default_generators``
    (random.py:41-110), which do not exist without CUDA: use the CPU generator instead."""
    from megatron.core.tensor_parallel import random as mc_random

    mc_random._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mc_random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)


def _install_torch_proxies() -> None:
    import megatron.core.optimizer.clip_grads as clip_grads
    import megatron.core.optimizer.optimizer as optimizer
    import megatron.core.pipeline_parallel.schedules as schedules
    import megatron.core.transformer.utils as transformer_utils
    import megatron.core.utils as core_utils

    proxy = _make_torch_proxy()
    for module in (schedules, optimizer, clip_grads, core_utils, transformer_utils):
        module.torch = proxy


# 'torch.cuda.XTensor' → 'torch.XTensor' in the string type checks.
_TYPE_NAME_REWRITES = (
    ("'torch.cuda.FloatTensor'", "'torch.FloatTensor'"),
    ("'torch.cuda.HalfTensor'", "'torch.HalfTensor'"),
    ("'torch.cuda.BFloat16Tensor'", "'torch.BFloat16Tensor'"),
)


def _rewrite_source(owner, name: str, replacements, must_replace=None) -> None:
    """Re-define ``owner.name`` from its own source with textual replacements applied.

    ``owner`` is a module or a class. Zero-argument ``super()`` is rewritten to the explicit form
    because the re-executed function lives outside the class body (no ``__class__`` cell).
    ``must_replace`` lists the replacement sources that must occur (default: the first one).
    """
    func = getattr(owner, name)
    src = textwrap.dedent(inspect.getsource(func))
    required = must_replace if must_replace is not None else [replacements[0][0]]
    for old in required:
        if old not in src:
            raise RuntimeError(
                f"cpu_compat: expected {old!r} in {owner.__name__}.{name}; megatron-core changed, "
                "update lumos_megatron/platform/cpu_compat.py"
            )
    for old, new in replacements:
        src = src.replace(old, new)
    module = inspect.getmodule(func)
    if isinstance(owner, type):
        src = src.replace("super().", f"super({owner.__name__}, self).")
    namespace: dict = {}
    exec(compile(src, inspect.getsourcefile(func) or "<cpu_compat>", "exec"), vars(module), namespace)
    new_func = namespace[name]
    new_func.__qualname__ = func.__qualname__
    setattr(owner, name, new_func)


def _rewrite_type_checks() -> None:
    """String type checks that reject CPU tensors:

    - optimizer/clip_grads.py:167 ``assert param.grad.type() == 'torch.cuda.FloatTensor'``
    - optimizer/optimizer.py:671/690 ``Float16OptimizerWithFloat16Params.__init__``
    - optimizer/distrib_optimizer.py:361/420 ``_build_model_and_main_param_groups`` and :582
      ``DistributedOptimizer.__init__``.
    """
    import megatron.core.optimizer.clip_grads as clip_grads
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
    from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params

    _rewrite_source(clip_grads, "clip_grad_by_total_norm_fp32", _TYPE_NAME_REWRITES)
    _rewrite_source(Float16OptimizerWithFloat16Params, "__init__", _TYPE_NAME_REWRITES)
    _rewrite_source(DistributedOptimizer, "_build_model_and_main_param_groups", _TYPE_NAME_REWRITES)
    _rewrite_source(DistributedOptimizer, "__init__", _TYPE_NAME_REWRITES,
                    must_replace=["'torch.cuda.BFloat16Tensor'"])
    # optimizer.__init__ re-exports clip_grad_by_total_norm_fp32 into the optimizer module.
    import megatron.core.optimizer.optimizer as optimizer

    optimizer.clip_grad_by_total_norm_fp32 = clip_grads.clip_grad_by_total_norm_fp32


# gloo matches point-to-point messages by (source, tag). Forward activations and backward
# gradients get distinct tags so they cannot be confused (see _patch_pipeline_p2p).
_TAG_TO_NEXT = 1  # activations flowing down the pipeline
_TAG_TO_PREV = 2  # gradients flowing up the pipeline


def _tagged_p2p_ops(*, tensor_send_prev, tensor_recv_prev, tensor_send_next, tensor_recv_next,
                    group, prev_pipeline_rank, next_pipeline_rank):
    """Direction-tagged replacement of p2p_communication._batched_p2p_ops (the default path,
    ``batch_p2p_comm=True``; the unbatched ``_p2p_ops`` is only used with overlap_p2p_comm, which
    we never enable on CPU).

    megatron sends without tags. With PP=2 and VPP the previous and the next pipeline rank are
    the same process, so in the steady 1F1B phase one peer sends both an activation and a
    gradient of identical shape; NCCL's grouped calls keep them apart, but gloo pairs the first
    receive with the first send and silently swaps them (wrong losses from micro-batch PP on).
    """
    from torch import distributed as tdist

    ops = []
    if tensor_send_prev is not None:
        ops.append(tdist.P2POp(tdist.isend, tensor_send_prev, prev_pipeline_rank, group, _TAG_TO_PREV))
    if tensor_recv_prev is not None:
        ops.append(tdist.P2POp(tdist.irecv, tensor_recv_prev, prev_pipeline_rank, group, _TAG_TO_NEXT))
    if tensor_send_next is not None:
        ops.append(tdist.P2POp(tdist.isend, tensor_send_next, next_pipeline_rank, group, _TAG_TO_NEXT))
    if tensor_recv_next is not None:
        ops.append(tdist.P2POp(tdist.irecv, tensor_recv_next, next_pipeline_rank, group, _TAG_TO_PREV))
    return tdist.batch_isend_irecv(ops) if ops else []


def _patch_pipeline_p2p() -> None:
    import megatron.core.pipeline_parallel.p2p_communication as p2p

    p2p._batched_p2p_ops = _tagged_p2p_ops


# torch.cuda functions that are safe to call without CUDA (queries and lazy, queued seeding).
_SAFE_CUDA_CALLS = {"is_available", "device_count", "is_initialized", "manual_seed_all",
                    "is_bf16_supported", "get_device_properties"}
_STUBBED_CUDA_CALLS = {"current_device", "synchronize", "empty_cache", "get_rng_state",
                       "set_rng_state", "manual_seed"}


def _forbid_other_cuda_calls() -> None:
    """Strict mode (``LUMOS_STRICT_CPU=1``): every other public ``torch.cuda`` function raises,
    naming itself, so a test run proves that no CUDA call is reached outside this module."""

    def forbidden(name):
        def call(*args, **kwargs):
            raise RuntimeError(f"torch.cuda.{name} reached on CPU outside lumos_megatron.platform.cpu_compat")

        return call

    for name in dir(torch.cuda):
        obj = getattr(torch.cuda, name)
        if (name.startswith("_") or isinstance(obj, (type, types.ModuleType)) or not callable(obj)
                or name in _SAFE_CUDA_CALLS or name in _STUBBED_CUDA_CALLS):
            continue
        setattr(torch.cuda, name, forbidden(name))


def apply_cpu_compat(force: bool = False) -> bool:
    """Apply every CPU adaptation once. Returns True when they are (now) active.

    Does nothing when CUDA is available, unless ``force`` (tests of this module only).
    """
    global _APPLIED
    if _APPLIED:
        return True
    if not (force or cpu_compat_needed()):
        return False
    with warnings.catch_warnings():
        # megatron-core warns at import that Apex/TE are absent; on CPU that is the expected state.
        warnings.simplefilter("ignore", UserWarning)
        _stub_torch_cuda()
        _patch_rng_tracker()
        _install_torch_proxies()
        _rewrite_type_checks()
        _patch_pipeline_p2p()
        if os.environ.get("LUMOS_STRICT_CPU") == "1":
            _forbid_other_cuda_calls()
    _APPLIED = True
    logger.debug("megatron-core CPU compatibility layer applied")
    return True
