"""One real training step of one rank, measured: the planner's trace and its CPU validation.

:func:`trace_rank` runs what ``training.loop`` runs for one optimizer step — parallel groups, the
model chunks, megatron DDP, the optimizer, the worst-case micro-batches through megatron's
forward/backward schedule and ``optimizer.step()`` — under a :class:`~.step_audit.StepAudit`, and
returns a :class:`RankReport`. ``fake=True`` (the planner, in a worker started by
``plan.fake_device``) runs it on fake ``cuda`` tensors with the fake-mode patches
(``plan.fake_mode``); ``fake=False`` runs the same step for real on the CPU in an already
initialised (gloo) process group, which is how the tests check the trace.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.plan.model_state import measure_model_state, model_parameters, gradient_buffers, storage_key
from lumos_megatron.plan.step_audit import StepAudit
from lumos_megatron.plan.worst_case import PlannedStream, planned_streams, stream_micro_batches

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


@dataclass
class RankReport:
    """Memory and audit of one traced rank (what ``lumos-plan --json`` lists under ``ranks``)."""

    role: str
    """E.g. ``first stage (PP 0/2) TP 0 CP 0``."""
    rank: int
    """Global rank traced."""
    peak_bytes: int = 0
    """Largest live device bytes over the step (model build excluded)."""
    parameter_bytes: int = 0
    """The model's parameters as held."""
    gradient_bytes: int = 0
    """DDP gradient buffers."""
    optimizer_bytes: int = 0
    """fp32 master weights + optimizer states, after the first ``step()``."""
    activation_bytes: int = 0
    """Peak of forward/backward minus the live bytes when it began (saved activations, their
    gradients and temporaries; recompute honoured, since it changes what is saved)."""
    input_bytes: int = 0
    """The step's micro-batches on the device (tokens, positions, mask, labels)."""
    loss_bytes: int = 0
    """Largest growth of live bytes inside the loss (the fused visual CE or logits + CE)."""
    optimizer_step_bytes: int = 0
    """Peak of ``optimizer.step()`` minus the live bytes when it began (first step: Adam's states)."""
    peak_phase: str = ""
    """``forward_backward`` or ``optimizer_step``: where the peak occurred."""
    top_modules: List[Dict] = field(default_factory=list)
    """Modules by bytes saved for backward per micro-batch (layers grouped as ``layers.*``)."""
    streams: List[Dict] = field(default_factory=list)
    """Per traced step kind: name, shape, peak and activation bytes."""
    host_syncs: List[Dict] = field(default_factory=list)
    """Data-dependent ops of the step: where, op, count."""
    leaves_device: List[Dict] = field(default_factory=list)
    """Copies off the device during the step."""
    fp32_activations: List[Dict] = field(default_factory=list)
    """Large fp32 op outputs in a bf16 recipe, by call site."""
    trace_seconds: float = 0.0
    """Wall time of the trace (build + step)."""
    coordinates: Dict[str, int] = field(default_factory=dict)
    """This rank's ``pp``, ``tp``, ``cp`` and ``dp`` ranks as megatron assigned them."""

    def to_json(self) -> Dict:
        """JSON-serialisable dict."""
        return asdict(self)


class _SavedTensorLedger:
    """Bytes each module saves for backward: forward hooks keep the module path of the innermost
    running module, a ``saved_tensors_hooks`` pack hook books each newly saved storage to it.
    Activation recompute (non-reentrant checkpointing) installs its own hooks inside, so only what
    a checkpointed region really keeps (its inputs) is booked."""

    def __init__(self, chunks, device_type: str, exclude_keys):
        self.device_type = device_type
        self.exclude = set(exclude_keys)
        self.stack: List[str] = []
        self.bytes: Dict[str, int] = {}
        self.seen = set()
        self.handles = []
        for c, chunk in enumerate(chunks):
            for name, module in chunk.named_modules():
                # DDP wraps the model as ``module``: names start below it.
                name = name[len("module."):] if name.startswith("module.") else ("" if name == "module" else name)
                label = _LAYER_INDEX.sub(".*.", (name or "model") + ".")[:-1]
                label = f"chunk{c}.{label}" if len(chunks) > 1 else label
                self.handles.append(module.register_forward_pre_hook(self._enter(label)))
                self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, label: str):
        def hook(module, args):
            self.stack.append(label)  # returns None: the module's inputs stay as they are

        return hook

    def _leave(self, module, args, output):
        if self.stack:
            self.stack.pop()  # a forward hook that returned a value would replace the output

    def pack(self, t: torch.Tensor):
        if isinstance(t, torch.Tensor) and t.device.type == self.device_type and self.stack:
            key = storage_key(t)
            if key not in self.exclude and key not in self.seen:
                self.seen.add(key)
                self.bytes[self.stack[-1]] = self.bytes.get(self.stack[-1], 0) + t.untyped_storage().nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    def top(self, microbatches: int, n: int = 10) -> List[Dict]:
        ranked = sorted(self.bytes.items(), key=lambda kv: -kv[1])[:n]
        return [{"module": name, "saved_bytes_per_microbatch": b // max(microbatches, 1)} for name, b in ranked]

    def close(self):
        for h in self.handles:
            h.remove()


def _watch_loss(chunks, audit: StepAudit, sink: Dict[str, int]) -> None:
    """Record the largest growth of live bytes inside the last stage's loss (``_postprocess``)."""
    for chunk in chunks:
        model = getattr(chunk, "module", chunk)
        if not getattr(model, "post_process", False):
            continue
        original = model._postprocess

        def postprocess(*args, _original=original, **kwargs):
            audit.begin("loss")
            try:
                return _original(*args, **kwargs)
            finally:
                stats = audit.end("loss")
                sink["loss"] = max(sink.get("loss", 0), stats.peak_bytes - stats.start_bytes)

        model._postprocess = postprocess


def _count_finalize_syncs(transformer_config, audit: StepAudit) -> Dict[tuple, int]:
    """Wrap the schedule's ``finalize_model_grads_func`` (run once at the end of a step's
    forward/backward) so that its host syncs are counted apart; returns the dict it fills."""
    counted: Dict[tuple, int] = {}
    original = transformer_config.finalize_model_grads_func

    def finalize(*args, **kwargs):
        before = audit.counts_snapshot("syncs")
        try:
            return original(*args, **kwargs)
        finally:
            for key, count in audit.counts_snapshot("syncs").items():
                if count > before.get(key, 0):
                    counted[key] = counted.get(key, 0) + count - before.get(key, 0)

    transformer_config.finalize_model_grads_func = finalize
    return counted


def _count_step_syncs(totals: Dict[tuple, int], before: Dict, middle: Dict, after: Dict, once: Dict,
                      stream: PlannedStream) -> None:
    """Host syncs of one real optimizer step of ``stream``: those of the traced micro-batches
    scaled to the step's micro-batch count, plus those that run once per step (``once``: the
    gradient finalisation; and the optimizer step's); the largest over the step kinds is kept in
    ``totals``."""
    for key in set(after):
        per_micro = middle.get(key, 0) - before.get(key, 0) - once.get(key, 0)
        count = (per_micro * stream.microbatches_per_step // max(stream.traced_microbatches, 1)
                 + once.get(key, 0) + after[key] - middle.get(key, 0))
        if count:
            totals[key] = max(totals.get(key, 0), count)


def _to_device(batch: Dict, device: torch.device) -> Dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def trace_rank(cfg: LumosConfig, world_size: int, rank: int, role: str, *, fake: bool,
               watch_fp32: Optional[bool] = None, sdpa_kernel: str = "math") -> RankReport:
    """Build this rank and run one optimizer step of every step kind of ``cfg``; measure it.

    ``fake``: trace on fake CUDA (the process must have been started by ``plan.fake_device`` and
    be inside ``plan.fake_mode.fake_cuda_session``, with the fake process group initialised);
    otherwise a real CPU step in the current process group. ``sdpa_kernel`` names the SDPA
    kernel whose memory the trace models (``plan.calibration``); the real CPU run always uses
    torch's math kernel, which is what ``"math"`` models.
    """
    from megatron.core import parallel_state

    from lumos_megatron.models.layer_spec import build_transformer_config
    from lumos_megatron.models.lumos_model import build_model_chunks
    from lumos_megatron.objective import build_objective
    from lumos_megatron.platform.parallel import initialize_parallel_state, resolve_layout, seed_model_parallel_rng
    from lumos_megatron.training.optim import attach_schedule_hooks, build_optimizer, wrap_ddp
    from lumos_megatron.training.step import forward_step, run_forward_backward
    from lumos_megatron.vocab import LumosVocab
    from functools import partial

    started = time.perf_counter()
    if not fake:
        from lumos_megatron.platform.cpu_compat import apply_cpu_compat

        apply_cpu_compat()  # what training does on a CPU host (platform.distributed)
    layout = resolve_layout(cfg, world_size)
    initialize_parallel_state(cfg, layout)
    seed_model_parallel_rng(cfg.train.seed)
    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    objective = build_objective(cfg, vocab)
    cp_rank = parallel_state.get_context_parallel_rank()
    coordinates = {"pp": parallel_state.get_pipeline_model_parallel_rank(),
                   "tp": parallel_state.get_tensor_model_parallel_rank(), "cp": cp_rank,
                   "dp": parallel_state.get_data_parallel_rank()}
    streams = planned_streams(cfg, layout.dp, layout.pp, layout.vpp)
    # The micro-batches are built on the real CPU, before any mode, exactly as training builds them.
    from lumos_megatron.plan.fake_mode import real_cpu_device

    built = {}
    with real_cpu_device() if fake else contextlib.nullcontext():
        for stream in streams:
            built[stream.name] = stream_micro_batches(cfg, vocab, stream, cp_rank)[0]

    device_type = "cuda" if fake else "cpu"
    device = torch.device(device_type)
    watch = cfg.train.precision == "bf16" if watch_fp32 is None else watch_fp32
    audit = StepAudit(device_type, watch_fp32=watch)
    report = RankReport(role=role, rank=rank, coordinates=coordinates)
    with contextlib.ExitStack() as stack:
        if fake:
            from lumos_megatron.plan.fake_mode import fake_mode

            stack.enter_context(fake_mode())
        stack.enter_context(audit)
        from lumos_megatron.plan.calibration import sdpa_kernel_model
        from lumos_megatron.plan.fake_mode import fused_adam

        stack.enter_context(fused_adam())

        stack.enter_context(sdpa_kernel_model(sdpa_kernel, fake))
        transformer_config = build_transformer_config(cfg)
        # The device context covers the build only: in training the default device stays the CPU
        # (e.g. torch's Adam keeps its step counters there), and the step must see the same.
        with torch.device("cuda") if fake else contextlib.nullcontext():
            chunks = wrap_ddp(cfg, transformer_config,
                              build_model_chunks(cfg, transformer_config, objective.loss_head()))
            optimizer = build_optimizer(cfg, chunks)
        attach_schedule_hooks(transformer_config, chunks, optimizer)
        state_keys = {storage_key(t) for t in model_parameters(chunks) + gradient_buffers(chunks)}
        loss_sink: Dict[str, int] = {}
        _watch_loss(chunks, audit, loss_sink)
        ledger = _SavedTensorLedger(chunks, device_type, state_keys)
        audit.peak_bytes = audit.live_bytes  # the build's temporaries are not the step's
        step_func = partial(forward_step, objective=objective)
        traced_micro = 0
        step_syncs: Dict[tuple, int] = {}
        once = _count_finalize_syncs(transformer_config, audit)  # once per step, not per micro-batch
        for chunk in chunks:
            chunk.train()
        for iteration, stream in enumerate(streams):
            for chunk in chunks:
                chunk.zero_grad_buffer()
            optimizer.zero_grad()
            audit.begin("inputs")
            batches = [_to_device(b, device) for b in built[stream.name]]
            audit.adopt(batches)
            inputs = audit.end("inputs")
            report.input_bytes = max(report.input_bytes, inputs.end_bytes - inputs.start_bytes)
            audit.record = True
            before = audit.counts_snapshot("syncs")
            once.clear()
            audit.begin("forward_backward")
            with ledger.hooks():
                run_forward_backward(step_func, chunks, [iter(batches) for _ in chunks], cfg,
                                     stream.traced_microbatches, seq_length=stream.seq_length,
                                     micro_batch_size=stream.micro_batch_size)
            fb = audit.end("forward_backward")
            traced_micro += stream.traced_microbatches
            middle = audit.counts_snapshot("syncs")
            audit.begin("optimizer_step")
            optimizer.step()
            opt = audit.end("optimizer_step")
            audit.record = False
            _count_step_syncs(step_syncs, before, middle, audit.counts_snapshot("syncs"), once, stream)
            del batches
            report.streams.append({
                "name": stream.name, "seq_length": stream.seq_length,
                "micro_batch_size": stream.micro_batch_size, "frames": stream.frames,
                "grid": list(stream.grid), "microbatches_per_step": stream.microbatches_per_step,
                "traced_microbatches": stream.traced_microbatches,
                "peak_bytes": max(fb.peak_bytes, opt.peak_bytes),
                "activation_bytes": fb.peak_bytes - fb.start_bytes})
            if fb.peak_bytes - fb.start_bytes > report.activation_bytes:
                report.activation_bytes = fb.peak_bytes - fb.start_bytes
            report.optimizer_step_bytes = max(report.optimizer_step_bytes, opt.peak_bytes - opt.start_bytes)
            phase = "forward_backward" if fb.peak_bytes >= opt.peak_bytes else "optimizer_step"
            if max(fb.peak_bytes, opt.peak_bytes) >= report.peak_bytes:
                report.peak_bytes, report.peak_phase = max(fb.peak_bytes, opt.peak_bytes), f"{stream.name} {phase}"
        state = measure_model_state(chunks, optimizer)
        ledger.close()
    report.parameter_bytes = state.parameter_bytes
    report.gradient_bytes = state.gradient_bytes
    report.optimizer_bytes = state.optimizer_bytes
    report.loss_bytes = loss_sink.get("loss", 0)
    report.top_modules = ledger.top(traced_micro)
    report.host_syncs = [{"where": where, "op": op, "count": count}
                         for (where, op), count in sorted(step_syncs.items(), key=lambda kv: (-kv[1], kv[0]))]
    report.leaves_device = [{"where": f.where, "op": f.op, "count": f.count} for f in audit.findings("leaves_device")]
    report.fp32_activations = [{"where": f.where, "op": f.op, "count": f.count, "bytes": f.bytes}
                               for f in audit.findings("fp32")[:20]]
    report.trace_seconds = time.perf_counter() - started
    return report
