"""The ONE module that adapts torch and megatron-core to a fake CUDA device and a fake process group.

The planner runs one real training step of the real model with every tensor a ``FakeTensor`` on
device ``cuda`` (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes, dtypes and devices,
no storage) and ``torch.distributed`` on torch's fake backend (collectives return at once). This
works on a CPU-only torch build only with the patches below, each of which says what it works
around; each is listed in the megatron adaptation index (``platform.megatron_adaptations``).
They are applied by :func:`fake_cuda_session` in a planner worker process only, started with the
fake device library preloaded (``plan.fake_device``), never in a training process.

Checked on torch 2.13 and megatron-core 0.16.1: :func:`check_versions` refuses any other pair with
one line, since most patches name private functions of exactly these versions.
"""

from __future__ import annotations

import contextlib
import functools
import types
from typing import Callable, Iterator, List, Optional

import torch

SUPPORTED_TORCH = "2.13"
"""torch minor version the fake-mode patches were written against."""
SUPPORTED_MEGATRON_CORE = "0.16.1"
"""megatron-core version the fake-mode patches were written against."""


class PlannerEnvironmentError(RuntimeError):
    """The planner cannot run here (versions, compiler); the message is one line for the user."""


def check_versions() -> None:
    """Raise :class:`PlannerEnvironmentError` unless torch 2.13.x and megatron-core 0.16.1."""
    import importlib.metadata

    torch_version = torch.__version__.split("+")[0]
    try:
        mcore = importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        mcore = "not installed"
    if not torch_version.startswith(SUPPORTED_TORCH + ".") or mcore != SUPPORTED_MEGATRON_CORE:
        raise PlannerEnvironmentError(
            f"lumos-plan supports torch {SUPPORTED_TORCH}.x with megatron-core {SUPPORTED_MEGATRON_CORE} "
            f"(found torch {torch.__version__}, megatron-core {mcore}); its fake-CUDA patches name private "
            "functions of exactly these versions")


# --------------------------------------------------------------------------------------------
# 1. torch.cuda answers for a device that does not exist.


def _cuda_stubs(device_name: str, total_memory: int) -> dict:
    """``torch.cuda`` functions megatron and our code call on a GPU host, answered for one fake
    device: availability, device index, properties (for the verdict and logs), no-op
    synchronisation, and a CPU RNG state where a CUDA one is asked for (megatron's tracker stores
    and restores it; the values are never used on fake tensors)."""
    props = types.SimpleNamespace(name=device_name, total_memory=total_memory, major=9, minor=0,
                                  multi_processor_count=132, is_integrated=False)
    rng_state = torch.get_rng_state()
    return {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "set_device": lambda *a, **k: None,
        "synchronize": lambda *a, **k: None,
        "empty_cache": lambda *a, **k: None,
        "get_rng_state": lambda *a, **k: rng_state.clone(),
        "set_rng_state": lambda *a, **k: None,
        "manual_seed": lambda *a, **k: None,
        "manual_seed_all": lambda *a, **k: None,
        "get_device_properties": lambda *a, **k: props,
        "get_device_name": lambda *a, **k: device_name,
        "get_device_capability": lambda *a, **k: (9, 0),
        "is_bf16_supported": lambda *a, **k: True,
        "memory_allocated": lambda *a, **k: 0,
        "max_memory_allocated": lambda *a, **k: 0,
        "reset_peak_memory_stats": lambda *a, **k: None,
    }


# --------------------------------------------------------------------------------------------
# 2. torch.distributed on the fake backend.


def _route_gloo_groups(new_group: Callable) -> Callable:
    """megatron creates gloo side groups next to the NCCL ones; gloo cannot be built on the fake
    store (``ProcessGroupGloo`` asserts 'Not implemented'): give them the default (fake) backend."""

    @functools.wraps(new_group)
    def wrapper(*args, **kwargs):
        if kwargs.get("backend") == "gloo":
            kwargs["backend"] = None
        return new_group(*args, **kwargs)

    return wrapper


def _all_gather_object_locally(object_list: List, obj, group=None) -> None:
    """``all_gather_object`` pickles through ``.numpy()``, which fake tensors refuse: every rank's
    object is taken to be this rank's (true for the layout metadata megatron gathers at build)."""
    for i in range(len(object_list)):
        object_list[i] = obj


class _NoCoalescing:
    """Stands for ``torch.distributed._coalescing_manager``: the fake backend has no
    ``allreduce_coalesced_``; the collectives inside run one by one, and the handle waits for
    nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait(self):
        return None


def init_fake_process_group(rank: int, world_size: int) -> None:
    """``torch.distributed`` as rank ``rank`` of ``world_size`` on torch's fake backend."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers backend "fake"

    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world_size)


# --------------------------------------------------------------------------------------------
# 3. megatron-core internals that touch real CUDA state or real values.


def _grad_norm_without_item(grads_for_norm, norm_type=2, grad_stats_parallel_group=None):
    """megatron's ``get_grad_norm_fp32`` without apex/TE runs a multi-tensor fallback that reads
    values on the host; fake tensors have none. Same collectives, the norm from ``torch.stack``;
    the host read at the end stays (it is megatron's sync, and the audit records it)."""
    import torch.distributed as dist

    if isinstance(grads_for_norm, torch.Tensor):
        grads_for_norm = [grads_for_norm]
    norm_type = float(norm_type)
    if grads_for_norm:
        total = torch.stack([torch.linalg.vector_norm(g.float(), norm_type) for g in grads_for_norm])
        total = (total ** norm_type).sum().reshape(1)
    else:
        total = torch.zeros(1, dtype=torch.float, device="cuda")
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=grad_stats_parallel_group)
    return total.item() ** (1.0 / norm_type)


def _eager_flex_everywhere(stack: contextlib.ExitStack) -> None:
    """Dynamo refuses to compile while a dispatch mode is active ('found no compiled frames'): the
    compiled flex kernel and block-mask builder are swapped for the eager ones (under fake mode
    flex's higher-order op has a fake rule that returns output and logsumexp shapes, as the fused
    kernel does: no [L, L] scores). Even eager ``flex_attention`` wraps the op in
    ``torch.compile(backend="eager")``; torch's debug switch calls it directly."""
    from torch.nn.attention import flex_attention as torch_flex

    from lumos_megatron.models.attention import flex

    stack.enter_context(_patched(flex, "_compiled_flex", lambda: torch_flex.flex_attention))
    stack.enter_context(_patched(flex, "_compiled_create_block_mask", lambda: torch_flex.create_block_mask))
    stack.enter_context(_patched(torch_flex, "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", True))


@contextlib.contextmanager
def _patched(owner, name: str, value) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _patch_fake_tensor_device_init(stack: contextlib.ExitStack) -> None:
    """With ``is_available()`` True, FakeTensorMode would initialise the (absent) CUDA runtime for
    ``torch.tensor(...)`` ('Could not run aten::empty_strided ... CUDA'): keep it on the
    lift-CPU-then-move path it uses on CPU-only builds. (A subclass would lose flex's
    higher-order-op rule, which is registered for FakeTensorMode itself.)"""
    from torch._subclasses.fake_tensor import FakeTensorMode

    stack.enter_context(_patched(FakeTensorMode, "avoid_device_init", property(lambda self: True)))


def _patch_rng_tracker(stack: contextlib.ExitStack) -> None:
    """megatron's CUDA RNG tracker reads and writes ``torch.cuda.default_generators`` (empty
    without CUDA): it stores a CPU state instead, which nothing on fake tensors ever reads."""
    from megatron.core.tensor_parallel import random as mc_random

    stack.enter_context(_patched(mc_random, "_get_cuda_rng_state", lambda *a, **k: torch.get_rng_state()))
    stack.enter_context(_patched(mc_random, "_set_cuda_rng_state", lambda *a, **k: None))


def _patch_process_groups(stack: contextlib.ExitStack) -> None:
    """Side groups megatron asks gloo for go to the fake backend; ``all_gather_object`` is local."""
    import torch.distributed as dist

    stack.enter_context(_patched(dist, "new_group", _route_gloo_groups(dist.new_group)))
    stack.enter_context(_patched(dist, "all_gather_object", _all_gather_object_locally))


def _patch_grad_buffer_coalescing(stack: contextlib.ExitStack) -> None:
    """megatron DDP's bucket reduction runs inside ``_coalescing_manager`` (see :class:`_NoCoalescing`)."""
    from megatron.core.distributed import param_and_grad_buffer

    stack.enter_context(_patched(param_and_grad_buffer, "_coalescing_manager", _NoCoalescing))


def _patch_grad_norm(stack: contextlib.ExitStack) -> None:
    """Every module that imported ``get_grad_norm_fp32`` gets :func:`_grad_norm_without_item`."""
    from megatron.core.optimizer import clip_grads, distrib_optimizer, optimizer as mc_optimizer

    for module in (clip_grads, mc_optimizer, distrib_optimizer):
        if hasattr(module, "get_grad_norm_fp32"):
            stack.enter_context(_patched(module, "get_grad_norm_fp32", _grad_norm_without_item))


def _skip_weight_init(stack: contextlib.ExitStack) -> None:
    """Weight values are irrelevant to a trace, and our initialiser builds full unsharded tensors
    (then copies each rank's shard) that a real run frees before the step: skipped."""
    from lumos_megatron.models import lumos_model

    stack.enter_context(_patched(lumos_model, "initialize_lumos_weights", lambda *a, **k: None))


@contextlib.contextmanager
def fake_cuda_session(device_name: str = "fake H100", total_memory: int = 80 * 2**30) -> Iterator[None]:
    """Every fake-mode patch, for the duration of one planner trace (a worker process)."""
    check_versions()
    with contextlib.ExitStack() as stack:
        for name, fn in _cuda_stubs(device_name, total_memory).items():
            stack.enter_context(_patched(torch.cuda, name, fn))
        _patch_fake_tensor_device_init(stack)
        _eager_flex_everywhere(stack)
        _patch_rng_tracker(stack)
        _patch_process_groups(stack)
        _patch_grad_buffer_coalescing(stack)
        _patch_grad_norm(stack)
        _skip_weight_init(stack)
        yield


def _fused(cls):
    class Fused(cls):
        __doc__ = f"torch.optim.{cls.__name__} with ``fused=True``."

        def __init__(self, params, *args, **kwargs):
            kwargs.setdefault("fused", True)
            super().__init__(params, *args, **kwargs)

    Fused.__name__ = Fused.__qualname__ = f"Fused{cls.__name__}"
    return Fused


@contextlib.contextmanager
def fused_adam() -> Iterator[None]:
    """megatron's optimizer as a GPU install runs it: Transformer Engine's (or apex's) FusedAdam,
    which updates each parameter in place. Without them megatron takes ``torch.optim.AdamW``, whose
    default on CUDA (``foreach``) allocates temporaries the size of all parameters, a transient a
    GPU run never has. Torch's own ``fused=True`` kernel is in place like FusedAdam, on fake CUDA
    and on the CPU (the trace's validation run uses it too)."""
    with _patched(torch.optim, "AdamW", _fused(torch.optim.AdamW)), \
            _patched(torch.optim, "Adam", _fused(torch.optim.Adam)):
        yield


def fake_mode() -> "torch._subclasses.fake_tensor.FakeTensorMode":
    """The FakeTensorMode a trace runs under: real tensors may enter (megatron's RNG tracker and
    CPU-built batches), and they become fake on first use."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


@contextlib.contextmanager
def real_cpu_device() -> Iterator[None]:
    """``torch.cuda.is_available()`` False for a moment: batches are built on the real CPU (their
    content drives the layout parse) before they are moved to the fake device."""
    with _patched(torch.cuda, "is_available", lambda: False):
        yield


def describe_patches() -> Optional[str]:
    """One line per patch (for ``lumos-plan --explain``)."""
    return __doc__
