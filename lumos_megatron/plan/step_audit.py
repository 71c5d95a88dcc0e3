"""What a traced step does to the device: live bytes over time, host syncs, fp32 activations.

:class:`StepAudit` is a ``TorchDispatchMode`` that sees every aten op of the step (model build,
forward, backward, optimizer) and:

* counts the live bytes of tensor storages on the audited device: a storage is counted when an op
  first returns it and uncounted when its last reference dies (torch keeps one Python object per
  storage, so a weak reference to it fires exactly then). The running maximum, per phase, is the
  peak. The same mode runs over real CPU tensors (the validation tests) and over fake ``cuda``
  tensors (the planner), so both are measured by one rule;
* records every data-dependent op (``.item()``, ``nonzero``, boolean-mask indexing, ``.tolist()``,
  ``masked_select``, ``unique``, ...) and every copy off the device, with the first ``file:line``
  outside torch that caused it. On fake tensors it also answers them: fake tensors have no values,
  so a scalar read returns a fixed answer (False for flags: no overflow found, nothing to skip;
  1 for numbers) and a
  data-dependent size its upper bound (every element selected), the worst case for memory;
* with ``watch_fp32``, records op outputs in fp32 whose size is activation-like (≥ ``fp32_min_bytes``)
  while the recipe computes in bf16, by call site.
"""

from __future__ import annotations

import collections
import os
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# Ops whose output size or value depends on tensor values: each is a device-to-host sync on a GPU.
_SCALAR_READS = {aten._local_scalar_dense.default}
_DYNAMIC_SHAPE = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default,
                  aten.unique_dim.default, aten.unique_consecutive.default,
                  aten.repeat_interleave.Tensor, aten.nonzero_static.default}
_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
              aten._index_put_impl_.default}

_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS_DIR = os.path.dirname(os.path.abspath(__file__))


def call_site(skip_dirs: Tuple[str, ...] = (_TORCH_DIR, _THIS_DIR)) -> str:
    """``file:line`` of the innermost Python frame outside torch and the planner, with the path
    shortened to start at its package (``megatron/core/...``, ``lumos_megatron/...``)."""
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        if path.startswith(skip_dirs) or path.endswith(("/contextlib.py", "/functools.py")):
            continue
        return f"{short_path(path)}:{frame.lineno}"
    # Autograd runs a device's backward on its own C++ thread: no Python frame names the op.
    return "<autograd backward (no Python frame)>"


def short_path(path: str) -> str:
    """A source path from its top package on (``megatron/core/x.py``, ``lumos_megatron/y.py``)."""
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    for top in ("lumos_megatron/", "tests/", "tools/", "examples/"):
        idx = path.rfind("/" + top)
        if idx >= 0:
            return path[idx + 1:]
    return path


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


@dataclass
class Finding:
    """One call site of an op the audit reports."""

    where: str
    """``file:line`` of the first frame outside torch."""
    op: str
    """The aten op (e.g. ``aten.nonzero``)."""
    count: int = 0
    """How many times the step ran it."""
    bytes: int = 0
    """fp32 findings: bytes produced there in total."""


@dataclass
class PhaseMemory:
    """Live-bytes statistics of one phase of the step."""

    start_bytes: int = 0
    """Live bytes when the phase began."""
    peak_bytes: int = 0
    """Largest live bytes during the phase."""
    end_bytes: int = 0
    """Live bytes when the phase ended."""


@dataclass
class _Counts:
    syncs: Dict[Tuple[str, str], Finding] = field(default_factory=dict)
    leaves_device: Dict[Tuple[str, str], Finding] = field(default_factory=dict)
    fp32: Dict[Tuple[str, str], Finding] = field(default_factory=dict)

    def add(self, table: str, where: str, op: str, nbytes: int = 0) -> None:
        entries = getattr(self, table)
        entry = entries.setdefault((where, op), Finding(where, op))
        entry.count += 1
        entry.bytes += nbytes


class StepAudit(TorchDispatchMode):
    """Live device bytes, host syncs and fp32 activations of everything run under it.

    ``device_type``: the device whose memory is counted (``cuda`` for a fake trace, ``cpu`` for
    the real CPU run it is validated against). ``record`` (toggle with :meth:`recording`) limits
    the findings to the step proper, not the model build.
    """

    supports_higher_order_operators = True  # FlexAttention is a higher-order op

    def __init__(self, device_type: str = "cuda", watch_fp32: bool = False, fp32_min_bytes: int = 1 << 20):
        super().__init__()
        self.device_type = device_type
        self.watch_fp32 = watch_fp32
        self.fp32_min_bytes = fp32_min_bytes
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: Dict[int, Tuple[weakref.ref, int]] = {}
        self._phases: Dict[str, PhaseMemory] = {}
        self._open: List[str] = []
        self.record = False
        self.counts = _Counts()
        self.section_peaks: Dict[str, int] = collections.defaultdict(int)

    # -- memory ----------------------------------------------------------------------------

    def adopt(self, *tensors) -> None:
        """Count tensors created before the mode saw them (e.g. a batch already on the device)."""
        for t in tree_flatten(list(tensors))[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)

    def _track(self, t: torch.Tensor) -> None:
        if t.device.type != self.device_type:
            return
        try:
            storage = t.untyped_storage()
        except (NotImplementedError, RuntimeError):  # e.g. sparse or nested tensors: none here
            return
        key = id(storage)
        if key in self._live:
            return
        nbytes = storage.nbytes()
        self._live[key] = (weakref.ref(storage, lambda _ref, key=key: self._free(key)), nbytes)
        self.live_bytes += nbytes
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
        for name in self._open:
            phase = self._phases[name]
            phase.peak_bytes = max(phase.peak_bytes, self.live_bytes)

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.live_bytes -= entry[1]

    def begin(self, phase: str) -> None:
        """Start a named phase: its peak is tracked until :meth:`end`."""
        self._phases[phase] = PhaseMemory(self.live_bytes, self.live_bytes, self.live_bytes)
        self._open.append(phase)

    def end(self, phase: str) -> PhaseMemory:
        """End a phase; returns its statistics."""
        self._open.remove(phase)
        stats = self._phases[phase]
        stats.end_bytes = self.live_bytes
        return stats

    def phase(self, name: str) -> PhaseMemory:
        """Statistics of a phase (ended or open)."""
        return self._phases[name]

    # -- findings --------------------------------------------------------------------------

    def findings(self, table: str) -> List[Finding]:
        """``syncs``, ``leaves_device`` or ``fp32`` findings, most frequent (or largest) first."""
        entries = list(getattr(self.counts, table).values())
        key = (lambda f: (-f.bytes, f.where)) if table == "fp32" else (lambda f: (-f.count, f.where))
        return sorted(entries, key=key)

    def counts_snapshot(self, table: str) -> Dict[Tuple[str, str], int]:
        """``{(where, op): count}`` of a findings table so far (to count one phase by difference)."""
        return {key: f.count for key, f in getattr(self.counts, table).items()}

    def _answer_dynamic(self, func, args, kwargs):
        """Fake tensors have no values: a data-dependent size is answered by its upper bound."""
        x = args[0]
        if func in (aten.nonzero.default, aten.nonzero_static.default):
            return torch.empty((x.numel(), x.dim()), dtype=torch.long, device=x.device)
        if func is aten.masked_select.default:
            shape = torch.broadcast_shapes(x.shape, args[1].shape)
            return torch.empty(int(torch.Size(shape).numel()), dtype=x.dtype, device=x.device)
        if func is aten.repeat_interleave.Tensor:
            raise NotImplementedError("repeat_interleave with tensor repeats on fake tensors")
        raise NotImplementedError(f"{func} on fake tensors")

    def _bool_index_as_long(self, indices):
        out = []
        for idx in indices:
            if isinstance(idx, torch.Tensor) and idx.dtype in (torch.bool, torch.uint8):
                rows = torch.empty((idx.numel(), idx.dim()), dtype=torch.long, device=idx.device)
                out.extend(rows[:, d] for d in range(idx.dim()))
            else:
                out.append(idx)
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat_args = tree_flatten((args, kwargs))[0]
        fake = any(isinstance(a, torch.Tensor) and _is_fake(a) for a in flat_args)
        # Higher-order ops (flex attention) reach a dispatch mode too; they have no overload packet.
        name = str(getattr(func, "overloadpacket", getattr(func, "_name", func))).replace("aten::", "aten.")
        # Only a read of a device tensor makes the host wait for the device (a CPU tensor's, e.g.
        # Adam's step counter, costs nothing).
        on_device = bool(args) and isinstance(args[0], torch.Tensor) and args[0].device.type == self.device_type
        if func in _SCALAR_READS:
            if self.record and on_device:
                self.counts.add("syncs", call_site(), "item()/tolist()")
            if fake:
                x = args[0]
                # The answer a healthy step reads: no NaN/overflow flag set (False), and 1 for
                # numbers (a grad norm, Adam's step count, a token count: nothing divides by 0).
                return False if x.dtype == torch.bool else (1.0 if x.is_floating_point() else 1)
        elif func in _DYNAMIC_SHAPE:
            if self.record and on_device:
                self.counts.add("syncs", call_site(), name)
            if fake:
                out = self._answer_dynamic(func, args, kwargs)
                self._track(out)
                return out
        elif func in _INDEX_OPS:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", [])
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices):
                if self.record and on_device:
                    self.counts.add("syncs", call_site(), f"{name} (boolean mask)")
                if fake:
                    args = (args[0], self._bool_index_as_long(indices), *args[2:])
        elif func is aten._to_copy.default and self.record:
            src = args[0]
            target = kwargs.get("device")
            if src.device.type == self.device_type and target is not None and \
                    torch.device(target).type != self.device_type:
                where = call_site()
                self.counts.add("leaves_device", where, f"copy to {torch.device(target).type}")
                if not kwargs.get("non_blocking", False):  # .cpu(), .tolist(), .to("cpu"): the host waits
                    self.counts.add("syncs", where, f"copy to {torch.device(target).type}")
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
                if (self.watch_fp32 and self.record and t.dtype == torch.float32
                        and t.device.type == self.device_type and t.numel() * 4 >= self.fp32_min_bytes):
                    self.counts.add("fp32", call_site(), name, t.numel() * 4)
        return out
