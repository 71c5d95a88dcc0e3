"""Analytic time of one optimizer step of a layout: compute, communication and pipeline bubble.

The model is a ranking aid for the layout sweep, not a prediction to the percent: every constant
it rests on is assumed and named in ``StepTime.assumptions``. It times the worst step the recipe
allows: the global batch ``train.global_batch_size`` with every sample ``data.seq_length`` long
(for joint image+video training, the video step, the longer one).

* Compute: the trainer's FLOPs model (``training.flops.step_flops``) for the global batch, divided
  by the world size and by ``peak x mfu``; activation recompute adds forward FLOPs that the MFU
  convention leaves out (full: the dense + attention forward of the recomputed layers; selective:
  the attention forward), and so does the fused visual cross-entropy, which recomputes its
  logits in backward.
* TP, PP, CP and DP: bytes each rank moves per step, divided by the link the group uses
  (NVLink inside a node, InfiniBand across) times ``ACHIEVED_FRACTION``. Groups are placed as
  megatron places them (rank order ``tp-cp-ep-dp-pp``: TP innermost, PP outermost).
* Nothing overlaps compute except, with ``parallel.overlap_grad_reduce``, the DP gradient
  reduction, of which only the last bucket is counted as exposed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Dict, Optional

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.config.schema import head_dim
from lumos_megatron.models.frame_mask import allowed_pairs, frame_segment_ids
from lumos_megatron.models.recompute import layers_to_recompute
from lumos_megatron.objective import build_objective
from lumos_megatron.plan.gpus import ACHIEVED_FRACTION, GpuSpec
from lumos_megatron.plan.layouts import Candidate, apply_candidate
from lumos_megatron.platform.parallel import microbatches_per_step
from lumos_megatron.training.flops import (
    DataLayout,
    StepFlops,
    expected_loss_rows,
    expected_mask_ratio,
    representative_sample,
    step_flops,
)
from lumos_megatron.models.parameter_counts import parameter_counts
from lumos_megatron.vocab import LumosVocab

MFU = 0.45
"""Assumed fraction of the dense bf16 peak that the executed FLOPs (recompute included) reach."""
VISUAL_FRACTION = 0.9
"""Assumed share of a worst-case real-data sample taken by frame blocks: the recipes' longest
videos fill 29,596 / 32,768 (0.90) and 14,196 / 16,384 (0.87) tokens."""
GRAD_REDUCE_BYTES = 4
"""Gradients are reduced in fp32: ``training.optim.wrap_ddp`` sets ``grad_reduce_in_fp32=True``."""
DDP_BUCKET_PARAMS = 40_000_000
"""megatron DDP's default bucket, ``max(40M, 1M x DP)`` parameters, used with overlap_grad_reduce."""
RANK_ORDER = ("tp", "cp", "dp", "pp")
"""megatron's default rank order ``tp-cp-ep-dp-pp`` (innermost first; EP = 1 here), which
``platform.parallel.initialize_parallel_state`` keeps."""


@dataclass(frozen=True)
class Workload:
    """What the timed step processes, summed over the global batch."""

    tokens: float
    """Tokens (global batch x sequence length)."""
    pairs: float
    """Allowed frame-causal (query, key) attention pairs."""
    loss_rows: float
    """Expected AR-DF loss rows (masked visual codes); 0 without AR-DF."""
    how: str
    """How pairs and loss rows were obtained (for the assumptions)."""


@dataclass
class StepTime:
    """Estimated time of one optimizer step on one rank (the busiest), by part."""

    compute_s: float
    """Forward + backward (+ recompute) at ``peak x mfu``."""
    tp_comm_s: float
    """Tensor-parallel all-reduces / all-gathers + reduce-scatters."""
    pp_comm_s: float
    """Pipeline point-to-point sends of activations and their gradients."""
    pp_bubble_s: float
    """Pipeline fill and drain: ``(PP - 1) / (m x VPP)`` of the compute time."""
    cp_comm_s: float
    """Context-parallel K/V all-gathers and gradient reduce-scatters."""
    dp_comm_s: float
    """Exposed data-parallel gradient reduction and parameter all-gather."""
    total_s: float
    """Sum of the parts above (no overlap assumed beyond the DP gradient buckets)."""
    tp_bytes: float
    """Bytes this rank sends for TP per step."""
    pp_bytes: float
    """Bytes this rank sends for PP per step."""
    cp_bytes: float
    """Bytes this rank sends for CP per step."""
    dp_bytes: float
    """Bytes this rank sends for DP per step (all of it, exposed or not)."""
    model_flops_per_rank: float
    """``step_flops(...).total / world``: model FLOPs (the MFU convention) of one rank."""
    executed_flops_per_rank: float
    """Model FLOPs plus recompute FLOPs of one rank: what ``compute_s`` times."""
    tokens: float
    """Tokens of the whole step (global batch x sequence length)."""
    world_size: int
    """GPUs of the layout."""
    microbatches: int
    """Micro-batches per step on each DP rank."""
    links: Dict[str, str] = field(default_factory=dict)
    """Link each kind of traffic uses: "nvlink" or "ib" (TP, PP, CP, DP)."""
    assumptions: Dict[str, str] = field(default_factory=dict)
    """Every assumed constant and simplification, by name."""

    @property
    def tokens_per_s_per_gpu(self) -> float:
        """Training throughput per GPU."""
        return self.tokens / self.total_s / self.world_size if self.total_s > 0 else 0.0

    @property
    def comm_s(self) -> Dict[str, float]:
        """Communication seconds by kind (TP, PP, CP, DP)."""
        return {"TP": self.tp_comm_s, "PP": self.pp_comm_s, "CP": self.cp_comm_s, "DP": self.dp_comm_s}

    @property
    def dominant_comm(self) -> str:
        """The kind of communication that takes longest, or "none" without any."""
        kind, seconds = max(self.comm_s.items(), key=lambda item: item[1])
        return kind if seconds > 0 else "none"


def step_workload(cfg: LumosConfig, layout: Optional[DataLayout] = None, *,
                  visual_fraction: float = VISUAL_FRACTION, frames: Optional[int] = None) -> Workload:
    """Tokens, attention pairs and loss rows of the worst-case step (every sample padded to
    ``data.seq_length``).

    With ``layout`` (default for mock data: the mock layout) the sample is built as the trainer
    builds it and its pairs counted from its frame segment ids, padding to ``seq_length``
    included. Without (real data, shape unknown) a synthetic sample: ``frames`` equal frame
    blocks (default ``ardf.max_latent_frames``: a video) covering ``visual_fraction`` of the
    sequence, every block token counted as a visual code (the few new-line and delimiter tokens,
    ~3% at 384p, are overcounted)."""
    s, gbs = cfg.data.seq_length, cfg.train.global_batch_size
    if layout is None and cfg.data.mock:
        layout = DataLayout.from_mock(cfg)
    if layout is not None:
        vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
        segments = frame_segment_ids(representative_sample(cfg, layout), vocab)
        padded = torch.zeros(1, s, dtype=torch.long)  # right padding is causal text (segment 0)
        padded[0, : segments.shape[1]] = segments[0, :s]
        pairs = float(allowed_pairs(padded).sum())
        rows = expected_loss_rows(cfg, layout)
        how = (f"sample of {layout.text_tokens} text tokens, {layout.frames} frame(s) of "
               f"{layout.grid[0]}x{layout.grid[1]} latents, padded to {s}")
    else:
        f = frames or cfg.ardf.max_latent_frames
        n = int(visual_fraction * s) // f  # tokens per frame block
        pairs = s * (s + 1) / 2 + f * n * (n - 1) / 2
        rows = expected_mask_ratio(cfg.ardf.min_mask_ratio) * f * n
        if not build_objective(cfg).fused_visual_loss:
            rows = 0.0
        how = (f"synthetic sample: {f} frame blocks of {n} tokens ({visual_fraction:.0%} of {s}); "
               "loss rows = E[mask ratio] x block tokens")
    return Workload(tokens=float(gbs * s), pairs=gbs * pairs, loss_rows=gbs * rows, how=how)


def spans_nodes(kind: str, tp: int, cp: int, dp: int, pp: int, gpus_per_node: int) -> bool:
    """Whether a ``kind`` group ("tp", "cp", "dp", "dpcp" (DP x CP, the gradient group) or
    "pp") has members on different nodes, with megatron's rank order (``RANK_ORDER``) and
    ``gpus_per_node`` consecutive ranks per node."""
    sizes = {"tp": tp, "cp": cp, "dp": dp, "pp": pp}
    axes = ["cp", "dp"] if kind == "dpcp" else [kind]
    strides, stride = {}, 1
    for name in RANK_ORDER:
        strides[name] = stride
        stride *= sizes[name]
    others = [n for n in RANK_ORDER if n not in axes]
    for base in product(*(range(sizes[n]) for n in others)):
        start = sum(i * strides[n] for i, n in zip(base, others))
        members = [start + sum(i * strides[n] for i, n in zip(idx, axes))
                   for idx in product(*(range(sizes[n]) for n in axes))]
        if len({r // gpus_per_node for r in members}) > 1:
            return True
    return False


def stage_parameters(cfg: LumosConfig, pp: int) -> int:
    """Parameters of the largest pipeline stage: its layers plus the embedding (first stage) or
    the final norm and LM head (last stage; a tied head keeps its own copy of the embedding
    there, as megatron does)."""
    counts = parameter_counts(cfg.model)
    m = cfg.model
    layers = counts.total - counts.embedding - counts.output_layer - m.hidden_size  # minus final norm
    head = counts.output_layer or counts.embedding
    if pp == 1:
        return counts.total
    per_stage = layers // pp
    return max(per_stage + counts.embedding, per_stage + m.hidden_size + head)


def _ring(n: int) -> float:
    """Bytes a ring all-gather or reduce-scatter moves per rank, per byte of the full tensor."""
    return (n - 1) / n if n > 1 else 0.0


def estimate_step_time(cfg: LumosConfig, candidate: Candidate, gpu: GpuSpec, *, mfu: float = MFU,
                       achieved_fraction: float = ACHIEVED_FRACTION,
                       workload: Optional[Workload] = None) -> StepTime:
    """Estimated step time of ``cfg`` (the recipe) run as ``candidate`` on ``gpu`` nodes."""
    c2 = apply_candidate(cfg, candidate)  # the candidate's recompute_num_layers, exactly
    m, t = cfg.model, cfg.train
    tp, pp, cp, dp, vpp = candidate.tp, candidate.pp, candidate.cp, candidate.dp, candidate.vpp or 1
    world, gpn = candidate.world_size, gpu.gpus_per_node
    micro = microbatches_per_step(t.global_batch_size, t.micro_batch_size, dp)
    work = workload or step_workload(cfg)
    flops: StepFlops = step_flops(cfg, work.tokens, work.pairs, work.loss_rows)

    # Recompute: forward FLOPs again (a third of forward + backward) for what is recomputed.
    chunk_layers = m.num_layers // (pp * vpp)
    full_frac = layers_to_recompute(c2.model.recompute_granularity, chunk_layers,
                                    c2.model.recompute_num_layers) / chunk_layers
    selective = candidate.recompute == "selective"
    recompute = full_frac * (flops.dense + flops.attention) / 3 + (flops.attention / 3 if selective else 0.0)
    fused_loss = build_objective(cfg).fused_visual_loss
    loss_recompute = flops.lm_head / 3 if fused_loss else 0.0
    executed = (flops.total + recompute + loss_recompute) / world
    compute_s = executed / (gpu.bf16_dense_tflops * 1e12 * mfu)

    act_bytes = 2 if t.precision == "bf16" else 4
    s, b, h = cfg.data.seq_length, t.micro_batch_size, m.hidden_size
    layers = m.num_layers // pp
    activation = s / cp * b * h * act_bytes  # [s/cp, b, h]: the TP all-reduce buffer

    # TP: 2 all-reduces (or 2 all-gathers + 2 reduce-scatters under SP: the same volume) per
    # layer in forward, 2 in backward, 2 more in a full-recompute forward. Plus the embedding's
    # reduce (first stage) and the fused loss's hidden-state gather (last stage): one
    # all-reduce volume each over forward + backward; with PP > 1 a rank has at most one.
    edge = 2 if pp == 1 else 1
    tp_bytes = micro * (layers * (4 + 2 * full_frac) + edge) * 2 * _ring(tp) * activation

    # PP: per micro-batch and model chunk one activation forward and one gradient backward;
    # megatron sends [s/cp/tp, b, h] under SP.
    pp_tensor = s / cp / (tp if candidate.sequence_parallel else 1) * b * h * act_bytes
    pp_bytes = micro * vpp * 2 * pp_tensor if pp > 1 else 0.0
    bubble_s = (pp - 1) / (micro * vpp) * compute_s

    # CP: all-gather K and V ([s, b, n_kv/tp x d] each) per layer forward, reduce-scatter their
    # gradients backward; both recomputes redo the gather (it sits inside core attention).
    n_kv = m.num_query_groups or m.num_attention_heads
    kv = s * b * (n_kv // tp) * head_dim(cfg) * act_bytes
    cp_recompute = 1.0 if selective else full_frac
    cp_bytes = micro * layers * 2 * (2 + cp_recompute) * _ring(cp) * kv

    # DP: gradients are reduced over DP x CP (CP ranks hold the same weights), in fp32.
    n = dp * cp
    params = stage_parameters(cfg, pp) / tp  # norms are replicated over TP: counted as split
    param_bytes = act_bytes  # the distributed optimizer all-gathers the bf16 model weights
    if candidate.use_distributed_optimizer:
        grad_bytes = _ring(n) * params * GRAD_REDUCE_BYTES
        gather_bytes = _ring(n) * params * param_bytes
    else:
        grad_bytes, gather_bytes = 2 * _ring(n) * params * GRAD_REDUCE_BYTES, 0.0
    exposed_grad = grad_bytes
    if cfg.parallel.overlap_grad_reduce and params > 0:
        bucket = max(DDP_BUCKET_PARAMS, 1_000_000 * dp)
        exposed_grad = grad_bytes * min(1.0, bucket / params)
    dp_bytes = grad_bytes + gather_bytes

    links = {"TP": spans_nodes("tp", tp, cp, dp, pp, gpn), "PP": spans_nodes("pp", tp, cp, dp, pp, gpn),
             "CP": spans_nodes("cp", tp, cp, dp, pp, gpn), "DP": spans_nodes("dpcp", tp, cp, dp, pp, gpn)}

    def seconds(nbytes: float, kind: str) -> float:
        return nbytes / (gpu.link_gbps(links[kind]) * 1e9 * achieved_fraction)

    parts = dict(compute_s=compute_s, tp_comm_s=seconds(tp_bytes, "TP"), pp_comm_s=seconds(pp_bytes, "PP"),
                 pp_bubble_s=bubble_s, cp_comm_s=seconds(cp_bytes, "CP"),
                 dp_comm_s=seconds(exposed_grad + gather_bytes, "DP"))
    return StepTime(**parts, total_s=sum(parts.values()), tp_bytes=tp_bytes, pp_bytes=pp_bytes,
                    cp_bytes=cp_bytes, dp_bytes=dp_bytes, model_flops_per_rank=flops.total / world,
                    executed_flops_per_rank=executed, tokens=work.tokens, world_size=world,
                    microbatches=micro,
                    links={k: "ib" if v else "nvlink" for k, v in links.items()},
                    assumptions=_assumptions(gpu, mfu, achieved_fraction, work, act_bytes, fused_loss))


def _assumptions(gpu: GpuSpec, mfu: float, achieved: float, work: Workload, act_bytes: int,
                 fused_loss: bool) -> Dict[str, str]:
    return {
        "mfu": f"{mfu} of the {gpu.bf16_dense_tflops:g} TFLOP/s dense bf16 peak, for every executed "
               "FLOP (recompute included)",
        "links": f"NVLink {gpu.nvlink_gbps:g} GB/s, InfiniBand {gpu.ib_gbps_per_gpu:g} GB/s per GPU "
                 f"(nominal), times achieved_fraction {achieved}",
        "workload": f"worst-case step: every sample data.seq_length long; {work.how}",
        "joint training": "the video step (the longer one) is timed; image steps are not",
        "activations": f"{act_bytes}-byte activations and p2p tensors (train.precision)",
        "gradients": f"reduced in fp32 ({GRAD_REDUCE_BYTES} B) over DP x CP; the distributed optimizer "
                     f"all-gathers {act_bytes}-byte weights",
        "overlap": "no communication overlaps compute, except with parallel.overlap_grad_reduce the "
                   f"DP gradient reduction, exposed only for the last bucket (max(40M, 1M x DP) params)",
        "collectives": "ring algorithms: all-reduce 2(n-1)/n, all-gather and reduce-scatter (n-1)/n "
                       "of the full tensor per rank; latency and small-message costs ignored",
        "placement": "megatron rank order tp-cp-ep-dp-pp; a group that leaves a node runs at the "
                     "InfiniBand rate",
        "pipeline": "compute split evenly over stages (embedding and LM head imbalance ignored); "
                    "bubble (PP-1)/(m x VPP) of compute; DP bytes of the largest stage",
        "recompute": "full adds the dense + attention forward of the recomputed layers, selective the "
                     "attention forward" + ("; the fused visual CE recomputes its logits in backward "
                                            "(+1/3 of the LM-head FLOPs)" if fused_loss else ""),
        "not modelled": "optimizer step, data loading, kernel launch gaps, the fused loss's small "
                        "TP all-reduces of per-row statistics",
    }


__all__ = ["DDP_BUCKET_PARAMS", "GRAD_REDUCE_BYTES", "MFU", "RANK_ORDER", "StepTime", "VISUAL_FRACTION",
           "Workload", "estimate_step_time", "spans_nodes", "stage_parameters", "step_workload"]
