"""One AR-DF decoding step at the last frame, traced on fake CUDA: the generation plan.

The memory of generation peaks at the last latent frame: the KV cache holds the prompt and every
finished frame, and one decoding step forwards the frame's block for the conditional and the
unconditional row of every sample (``inference.generation.generate_batch`` with ``kv_cache`` and
``batch_cfg``). :func:`trace_generation` builds the recipe's model for inference (its precision,
TP over the world, no PP: the KV-cache decoder runs the whole model in one process), allocates the
cache for each batch size, marks it filled up to the last frame (values are irrelevant to a
trace), and runs that step — the forward through ``inference.frame_logits.CachedLogits`` and the
sampler's update of every sample — under a :class:`~.step_audit.StepAudit`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig


@dataclass(frozen=True)
class GenerationShape:
    """What one planned generation request looks like."""

    grid: Tuple[int, int]
    """Latent code grid (rows, columns) of a frame."""
    frames: int
    """Latent frames of the video (the step traced decodes the last one)."""
    prompt_tokens: int
    """Caption tokens of the prompt."""
    batch_sizes: Tuple[int, ...]
    """Samples decoded together (each adds a conditional and an unconditional row)."""


@dataclass
class GenerationReport:
    """Peak memory of the last frame's decoding step per batch size."""

    role: str
    """E.g. ``generation TP 0/2``."""
    rank: int
    """Global rank traced."""
    parameter_bytes: int = 0
    """The model's parameters as held (the recipe's precision)."""
    batches: List[Dict] = field(default_factory=list)
    """Per batch size: rows, cached tokens, ``kv_cache_bytes``, ``step_bytes`` (the step's growth
    over cache + parameters), ``peak_bytes``."""
    host_syncs: List[Dict] = field(default_factory=list)
    """Data-dependent reads of one step (at the last batch size): where, op, count."""
    leaves_device: List[Dict] = field(default_factory=list)
    """Copies off the device during the step (the sampler's logits)."""
    trace_seconds: float = 0.0
    """Wall time of the trace."""

    def to_json(self) -> Dict:
        """JSON-serialisable dict."""
        return asdict(self)


def _inference_config(cfg: LumosConfig, world_size: int) -> LumosConfig:
    cfg = copy.deepcopy(cfg)
    p = cfg.parallel
    p.tensor_model_parallel_size, p.pipeline_model_parallel_size = world_size, 1
    p.context_parallel_size, p.virtual_pipeline_model_parallel_size = 1, None
    p.sequence_parallel, p.use_distributed_optimizer, p.overlap_grad_reduce = False, False, False
    cfg.train.micro_batch_size, cfg.train.global_batch_size = 1, 1
    cfg.model.recompute_granularity, cfg.model.recompute_num_layers = None, None
    return cfg


def request_tokens(shape: GenerationShape, vocab) -> Tuple[List[int], List[int], torch.Tensor]:
    """(context at the last frame, the block being decoded, the codes' offsets in the block).

    The context is a caption, the video prefix and ``frames - 1`` finished frames, laid out as
    ``generate_batch`` lays them out; the block is the frame template of the last frame."""
    from lumos_megatron.inference.frame_decoding import code_positions, frame_template

    caption = [vocab.bos] + [1000 + i % 4000 for i in range(shape.prompt_tokens)]
    prefix = [vocab.video_start, vocab.size_token(1), vocab.size_token(8)]
    template = frame_template(vocab, shape.grid)
    finished = [t if t != vocab.mask else vocab.visual_offset for t in template]
    context = caption + prefix + finished * (shape.frames - 1)
    return context, template, code_positions(shape.grid)


def trace_generation(cfg: LumosConfig, world_size: int, rank: int, shape: GenerationShape,
                     sdpa_kernel: str = "auto") -> GenerationReport:
    """Trace the last frame's decoding step of ``shape`` at each batch size, as rank ``rank`` of a
    TP-only world; the process must be a planner worker in ``plan.fake_mode.fake_cuda_session``
    with the fake process group initialised."""
    from lumos_megatron.inference.frame_logits import CachedLogits
    from lumos_megatron.inference.frame_decoding import FrameState, block_tensor, decode_step
    from lumos_megatron.inference.generation import SamplerSettings
    from lumos_megatron.inference.model_loader import InferenceModel
    from lumos_megatron.config.schema import rope_position_scale
    from lumos_megatron.models.inputs import build_model_inputs
    from lumos_megatron.models.lumos_model import build_model_chunks
    from lumos_megatron.plan.calibration import sdpa_kernel_model
    from lumos_megatron.plan.fake_mode import fake_mode, real_cpu_device
    from lumos_megatron.plan.step_audit import StepAudit
    from lumos_megatron.platform.parallel import initialize_parallel_state, resolve_layout, seed_model_parallel_rng
    from lumos_megatron.vocab import LumosVocab

    started = time.perf_counter()
    cfg = _inference_config(cfg, world_size)
    initialize_parallel_state(cfg, resolve_layout(cfg, world_size))
    seed_model_parallel_rng(cfg.train.seed)
    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    context, block, codes = request_tokens(shape, vocab)
    # Positions and segments are parsed from token values: on the real CPU, before the mode.
    with real_cpu_device():
        parsed = build_model_inputs(torch.tensor([context + block]), vocab,
                                    attention_backend_name=cfg.model.attention_backend,
                                    rope_variant=cfg.model.rope_variant, with_attention_mask=False,
                                    position_scale=rope_position_scale(cfg))
    row_inputs = (len(context), parsed.position_ids[:, 0], parsed.segment_ids[0])
    settings = SamplerSettings()
    report = GenerationReport(role=f"generation TP {rank}/{world_size}", rank=rank)
    audit = StepAudit("cuda")
    with fake_mode(), audit, sdpa_kernel_model(sdpa_kernel, fake=True), torch.no_grad():
        with torch.device("cuda"):
            chunks = build_model_chunks(cfg)
        for chunk in chunks:
            chunk.eval()
        model = InferenceModel(cfg, vocab, chunks, torch.device("cuda"), Path("<planned>"))
        report.parameter_bytes = audit.live_bytes
        device = torch.device("cuda")
        template = torch.tensor(block, dtype=torch.long).to(device)
        codes_on_device = codes.to(device)
        generator = torch.Generator()
        for batch in shape.batch_sizes:
            rows = 2 * batch  # conditional rows, then unconditional ones (batched CFG)
            audit.begin("cache")
            provider = CachedLogits(model, rows, len(context) + len(block))
            cache = audit.end("cache")
            provider.cache.lengths = [len(context)] * rows  # filled up to the last frame
            provider._inputs = {r: row_inputs for r in range(rows)}
            audit.peak_bytes = audit.live_bytes
            audit.record = batch == shape.batch_sizes[-1]  # findings of one step: the last size's
            audit.begin("step")
            # As generate_batch's step with the samples' generators on the model's device: the
            # blocks are assembled and the sampler runs there. (A CPU build cannot create a CUDA
            # generator; fake tensors draw nothing, so a CPU one stands in for the draws.)
            states = [FrameState.start(codes.numel(), vocab, settings.temperature, device)
                      for _ in range(batch)]
            blocks = [block_tensor(template, codes_on_device, s.tokens) for s in states] * 2
            logits = provider.frame_logits(list(range(rows)), [context] * rows, blocks, codes, layout=block)
            states = [decode_step(states[i], logits[i], logits[batch + i], 0, settings.steps, settings.cfg_scale,
                                  vocab, generator) for i in range(batch)]
            step = audit.end("step")
            audit.record = False
            report.batches.append({
                "batch_size": batch, "rows": rows, "cached_tokens": len(context),
                "block_tokens": len(block), "kv_cache_bytes": cache.end_bytes - cache.start_bytes,
                "step_bytes": step.peak_bytes - step.start_bytes, "peak_bytes": step.peak_bytes})
            del provider, logits, states
    report.host_syncs = [{"where": f.where, "op": f.op, "count": f.count} for f in audit.findings("syncs")]
    report.leaves_device = [{"where": f.where, "op": f.op, "count": f.count} for f in audit.findings("leaves_device")]
    report.trace_seconds = time.perf_counter() - started
    return report


def parse_grid(text: str) -> Tuple[int, int]:
    """``"24x42"`` → (24, 42)."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"grid {text!r}: expected ROWSxCOLS, e.g. 24x42") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"grid {text!r}: rows and columns must be >= 1")
    return rows, cols


def parse_batch_sizes(text: str) -> Tuple[int, ...]:
    """``"1,2,4"`` → (1, 2, 4)."""
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"batch sizes {text!r}: expected comma-separated integers") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"batch sizes {text!r}: need at least one size >= 1")
    return sizes


def default_shape(cfg: LumosConfig, batch_sizes: Sequence[int] = (1, 2, 4, 8)) -> GenerationShape:
    """The recipe's worst-case video sample (``plan.worst_case``) as a generation request."""
    from lumos_megatron.plan.worst_case import sample_frames, sample_shape

    frames = sample_frames(cfg.data.seq_length, cfg.ardf.max_latent_frames or 7)
    grid, _ = sample_shape(cfg.data.seq_length, frames)
    return GenerationShape(grid, frames, 128, tuple(batch_sizes))
