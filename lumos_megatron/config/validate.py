"""Cross-field checks of a ``LumosConfig`` that do not depend on the world size.

Checks that need the number of processes (DP size) live in
``lumos_megatron.platform.parallel.resolve_layout``; both use the same rules (batch split and
sequence-length divisor from ``platform.parallel``, head-dim rule from ``models.rope_variants``,
attention backends from their registry, the text range from ``LumosVocab``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import List

from lumos_megatron.config.recipe import ConfigError
from lumos_megatron.config.schema import LumosConfig, head_dim  # noqa: F401  (head_dim: re-exported)
from lumos_megatron.models.attention.backends import attention_backend, backend_names
from lumos_megatron.models.rope_variants import ROPE_VARIANTS, head_dim_problem
from lumos_megatron.platform.parallel import (
    LayoutError,
    microbatches_per_step,
    sequence_length_divisor,
)


def _choice_problems(cfg: LumosConfig) -> List[str]:
    """Every ``Literal[...]``-typed field must hold one of its choices."""
    out = []
    for section in dataclasses.fields(cfg):
        value_section = getattr(cfg, section.name)
        for name, hint in typing.get_type_hints(type(value_section)).items():
            args = typing.get_args(hint)
            if typing.get_origin(hint) is typing.Union:  # Optional[Literal[...]]
                if getattr(value_section, name) is None:
                    continue
                hint = next(a for a in args if a is not type(None))
            if typing.get_origin(hint) is typing.Literal:
                value = getattr(value_section, name)
                if value not in typing.get_args(hint):
                    out.append(f"{section.name}.{name}={value!r}; choose one of {typing.get_args(hint)}")
    return out


def _model_problems(cfg: LumosConfig) -> List[str]:
    m, p = cfg.model, cfg.parallel
    out = []
    scale = m.rope_position_scale
    if scale is not None and (len(scale) != 3 or any(int(v) < 1 for v in scale)):
        out.append(f"model.rope_position_scale={scale} must be three integers >= 1 ([t, h, w])")
    for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads"):
        if getattr(m, name) < 1:
            out.append(f"model.{name} must be >= 1 (got {getattr(m, name)})")
    if out:
        return out
    if m.kv_channels is None and m.hidden_size % m.num_attention_heads:
        out.append(
            f"model.hidden_size={m.hidden_size} is not divisible by "
            f"model.num_attention_heads={m.num_attention_heads}; set model.kv_channels"
        )
    groups = m.num_query_groups or m.num_attention_heads
    if m.num_attention_heads % groups:
        out.append(
            f"model.num_attention_heads={m.num_attention_heads} is not a multiple of "
            f"model.num_query_groups={groups}"
        )
    from lumos_megatron.vocab import LumosVocab

    text_ids = LumosVocab.visual_offset  # ids below it are text; at least one visual code above
    if m.vocab_size <= text_ids:
        out.append(f"model.vocab_size={m.vocab_size} leaves no visual codes above the text range "
                   f"({text_ids} ids)")
    if m.rope_variant in ROPE_VARIANTS:  # an unknown name is a choice problem
        rope = head_dim_problem(head_dim(cfg), m.rope_variant)
        if rope:
            out.append(f"model.rope_variant={m.rope_variant!r}: {rope}")
    if m.attention_backend in backend_names() and p.context_parallel_size > 1:
        if not attention_backend(m.attention_backend).supports_context_parallel:
            cp_capable = [n for n in backend_names() if attention_backend(n).supports_context_parallel]
            out.append(
                f"model.attention_backend={m.attention_backend!r} does not support context "
                f"parallelism (CP={p.context_parallel_size}); set model.attention_backend="
                f"{' or '.join(cp_capable)} or parallel.context_parallel_size=1")
    out += _dense_sdpa_problems(cfg)
    if m.recompute_num_layers is not None and (m.recompute_num_layers < 0
                                               or m.recompute_granularity != "full"):
        out.append(f"model.recompute_num_layers={m.recompute_num_layers} needs "
                   "model.recompute_granularity='full' and a value >= 0")
    tp = p.tensor_model_parallel_size
    if tp >= 1:
        if m.num_attention_heads % tp:
            out.append(f"model.num_attention_heads={m.num_attention_heads} is not divisible by TP={tp}")
        if groups % tp:
            out.append(f"model.num_query_groups={groups} is not divisible by TP={tp}")
        if m.ffn_hidden_size % tp:
            out.append(f"model.ffn_hidden_size={m.ffn_hidden_size} is not divisible by TP={tp}")
        if m.vocab_size % tp:
            out.append(f"model.vocab_size={m.vocab_size} is not divisible by TP={tp}")
    stages = max(p.pipeline_model_parallel_size, 1) * (p.virtual_pipeline_model_parallel_size or 1)
    if m.num_layers % stages:
        out.append(
            f"model.num_layers={m.num_layers} is not divisible by PP x VPP = "
            f"{p.pipeline_model_parallel_size} x {p.virtual_pipeline_model_parallel_size or 1}"
        )
    return out


DENSE_SDPA_LAYER_LIMIT_BYTES = 8 * 2**30
"""Largest [b, heads, L, L] fp32 score tensor per layer and GPU that ``sdpa`` is allowed to imply."""


def _dense_sdpa_problems(cfg: LumosConfig) -> List[str]:
    """SDPA takes the frame-causal mask as a dense tensor. CUDA's flash kernel takes no mask and its
    memory-efficient kernel no grouped-query heads, so a masked GQA call runs on the math kernel,
    which keeps fp32 scores [b, heads/TP, L/CP, L] of every layer for backward (at 28k tokens
    that is over 100 GB per layer: terabytes for the model). Flex attention never builds them."""
    m, p, d = cfg.model, cfg.parallel, cfg.data
    if m.attention_backend != "sdpa" or m.num_attention_heads < 1:
        return []
    tp, cp = max(p.tensor_model_parallel_size, 1), max(p.context_parallel_size, 1)
    steps = [(cfg.train.micro_batch_size, d.seq_length)]
    if getattr(d, "image_seq_length", None):
        steps.append((getattr(d, "image_micro_batch_size", None) or cfg.train.micro_batch_size, d.image_seq_length))
    for micro, length in steps:
        scores = micro * (m.num_attention_heads // tp or 1) * -(-length // cp) * length * 4
        if scores > DENSE_SDPA_LAYER_LIMIT_BYTES:
            return [f"model.attention_backend='sdpa' at {length} tokens: the dense-mask SDPA runs on CUDA's "
                    f"math kernel, which keeps {scores / 2**30:.0f} GiB of fp32 attention scores per layer "
                    f"and GPU (micro-batch {micro}, {m.num_attention_heads // tp or 1} heads per TP rank); "
                    "use model.attention_backend=flex (or shorter sequences)"]
    return []


def _parallel_problems(cfg: LumosConfig) -> List[str]:
    p = cfg.parallel
    out = []
    for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
        if getattr(p, name) < 1:
            out.append(f"parallel.{name} must be >= 1 (got {getattr(p, name)})")
    vpp = p.virtual_pipeline_model_parallel_size
    if vpp is not None and (vpp < 1 or p.pipeline_model_parallel_size < 2):
        out.append(f"parallel.virtual_pipeline_model_parallel_size={vpp} needs PP >= 2 and VPP >= 1")
    if p.sequence_parallel and p.tensor_model_parallel_size < 2:
        out.append("parallel.sequence_parallel needs tensor_model_parallel_size >= 2")
    return out


def _data_plan_problems(cfg: LumosConfig) -> List[str]:
    """Split, joint image/video, padding and evaluation settings."""
    from lumos_megatron.data.blend import parse_data_path, parse_split

    t, d = cfg.train, cfg.data
    out = []
    try:
        parse_split(d.split)
    except ValueError as e:
        out.append(str(e))
    for name, paths in (("data.data_path", d.data_path), ("data.image_data_path", d.image_data_path)):
        if paths and not d.mock:
            try:
                parse_data_path(paths)
            except ValueError as e:
                out.append(f"{name}: {e}")
    if d.image_micro_batch_size < 1 or d.video_iters_per_image_iter < 1:
        out.append("data.image_micro_batch_size and data.video_iters_per_image_iter must be >= 1")
    if d.image_global_batch_size is not None and d.image_global_batch_size % d.image_micro_batch_size:
        out.append(f"data.image_global_batch_size={d.image_global_batch_size} is not a multiple of "
                   f"data.image_micro_batch_size={d.image_micro_batch_size}")
    if d.image_seq_length is not None and not 2 <= d.image_seq_length <= d.seq_length:
        out.append(f"data.image_seq_length={d.image_seq_length} must be in [2, data.seq_length={d.seq_length}]")
    if d.pad_to_multiple is not None and d.pad_to_multiple < 1:
        out.append(f"data.pad_to_multiple must be >= 1 (got {d.pad_to_multiple})")
    if t.eval_interval < 0 or t.eval_iters < 1:
        out.append(f"train.eval_interval must be >= 0 and train.eval_iters >= 1 (got {t.eval_interval}, "
                   f"{t.eval_iters})")
    return out


def _train_data_problems(cfg: LumosConfig) -> List[str]:
    t, d, p = cfg.train, cfg.data, cfg.parallel
    out = []
    if t.micro_batch_size < 1 or t.global_batch_size < 1:
        out.append("train.micro_batch_size and train.global_batch_size must be >= 1")
    else:
        try:
            microbatches_per_step(t.global_batch_size, t.micro_batch_size, 1, what="train steps")
        except LayoutError as err:
            out.append(str(err))
    if t.train_iters < 0:
        out.append(f"train.train_iters must be >= 0 (got {t.train_iters})")
    if t.train_samples is not None and t.train_samples < 1:
        out.append(f"train.train_samples must be >= 1 (got {t.train_samples})")
    if t.exit_duration_in_mins is not None and t.exit_duration_in_mins <= 0:
        out.append(f"train.exit_duration_in_mins must be > 0 (got {t.exit_duration_in_mins})")
    out += _hang_watchdog_problems(t)
    if t.lr < 0 or t.min_lr < 0 or t.min_lr > t.lr:
        out.append(f"need 0 <= train.min_lr <= train.lr (got lr={t.lr}, min_lr={t.min_lr})")
    if d.seq_length < 2:
        out.append(f"data.seq_length must be >= 2 (got {d.seq_length})")
    if d.seq_length > cfg.model.max_position_embeddings:
        out.append(f"data.seq_length={d.seq_length} exceeds model.max_position_embeddings="
                   f"{cfg.model.max_position_embeddings}")
    divisor, why = sequence_length_divisor(p)
    if d.seq_length % divisor:
        out.append(f"data.seq_length={d.seq_length} is not a multiple of {divisor} = {why}")
    if d.mock:
        if len(d.mock_grid) != 2 or any(g < 4 or g % 4 for g in d.mock_grid):
            out.append(f"data.mock_grid={d.mock_grid} must be two multiples of 4 (32-px size tokens)")
        if d.mock_frames < 1 or d.mock_text_tokens < 0:
            out.append("data.mock_frames must be >= 1 and data.mock_text_tokens >= 0")
        for layout in d.mock_layouts:
            if (len(layout) != 3 or layout[0] < 1 or any(g < 4 or g % 4 for g in layout[1:])):
                out.append(f"data.mock_layouts entry {layout} must be [latent_frames >= 1, H_l, W_l] "
                           "with H_l, W_l multiples of 4")
        if d.mock_classes < 0 or (d.mock_classes > 0 and d.mock_text_tokens < 1):
            out.append(f"data.mock_classes={d.mock_classes} must be >= 0, and > 0 needs "
                       "data.mock_text_tokens >= 1 (the class is the first caption token)")
    elif not d.data_path and not d.streaming_manifest:
        out.append("data.data_path is empty, data.streaming_manifest unset and data.mock false: "
                   "nothing to train on")
    out += _data_plan_problems(cfg) + _packing_problems(cfg)
    c = cfg.checkpoint
    if c.save_interval < 0:
        out.append("checkpoint.save_interval must be >= 0")
    if c.keep_last < 0:
        out.append(f"checkpoint.keep_last must be >= 0 (got {c.keep_last})")
    if c.max_save_failures < 1:
        out.append(f"checkpoint.max_save_failures must be >= 1 (got {c.max_save_failures})")
    if not c.stale_owner_after_s > 0:
        out.append(f"checkpoint.stale_owner_after_s must be > 0 (got {c.stale_owner_after_s})")
    if c.load_step is not None and (c.load_step < 0 or not c.load):
        out.append("checkpoint.load_step needs checkpoint.load and must be >= 0")
    if cfg.logging.log_interval < 1:
        out.append("logging.log_interval must be >= 1")
    return out


def _packing_problems(cfg: LumosConfig) -> List[str]:
    """``data.packing`` and ``data.length_grouped`` (``training.packing_plan``)."""
    d, out = cfg.data, []
    joint = bool(d.image_data_path) or (d.mock and d.mock_image)
    if d.length_group_window < 1:
        out.append(f"data.length_group_window must be >= 1 (got {d.length_group_window})")
    if not d.packing:
        return out
    if cfg.train.micro_batch_size != 1 or (joint and d.image_micro_batch_size != 1):
        out.append("data.packing makes every micro-batch one packed sequence: set "
                   "train.micro_batch_size (and data.image_micro_batch_size) to 1")
    if cfg.parallel.context_parallel_size > 1:
        out.append("data.packing does not support context parallelism yet (the CP split would have to "
                   "balance the packed samples' frame-causal work); use context_parallel_size 1 or "
                   "turn packing off")
    return out


def _hang_watchdog_problems(t) -> List[str]:
    """The watchdog's limits (``training.watchdog``); written so that NaN fails too."""
    out = []
    if not (t.hang_timeout_factor == 0 or t.hang_timeout_factor > 1):
        out.append(f"train.hang_timeout_factor must be 0 (off) or > 1 (got {t.hang_timeout_factor}); "
                   "at <= 1 ordinary steps would count as hung")
    if not t.hang_timeout_s > 0:
        out.append(f"train.hang_timeout_s must be > 0 (got {t.hang_timeout_s})")
    if not t.hang_timeout_min_s >= 0:
        out.append(f"train.hang_timeout_min_s must be >= 0 (got {t.hang_timeout_min_s})")
    return out


def _ardf_problems(cfg: LumosConfig) -> List[str]:
    a = cfg.ardf
    out = []
    if not 0.0 <= a.min_mask_ratio <= 1.0:
        out.append(f"ardf.min_mask_ratio={a.min_mask_ratio} must lie in [0, 1]")
    if not 0.0 <= a.cfg_drop_prob <= 1.0:
        out.append(f"ardf.cfg_drop_prob={a.cfg_drop_prob} must lie in [0, 1]")
    for name in ("max_latent_frames", "loss_chunk_rows", "report_frames"):
        if getattr(a, name) < 1:
            out.append(f"ardf.{name} must be >= 1 (got {getattr(a, name)})")
    for name in ("video_duration", "video_fps"):
        if not 1 <= getattr(a, name) <= 198:  # a size token 8804+n, n < 199
            out.append(f"ardf.{name}={getattr(a, name)} must lie in [1, 198] (size tokens)")
    return out


def resolved_train_iters(cfg: LumosConfig) -> int:
    """Optimizer steps of the run: ceil(train_samples / global batch) when train_samples is set,
    else train_iters."""
    t = cfg.train
    if t.train_samples is not None:
        return -(-t.train_samples // t.global_batch_size)
    return t.train_iters


def runtime_problems(cfg: LumosConfig, training: bool = True) -> List[str]:
    """What this machine lacks for ``cfg`` (kept apart from ``validate_config``, which must
    accept a recipe written on a laptop for a GPU cluster)."""
    problem = attention_backend(cfg.model.attention_backend).runtime_problem(training)
    return [problem] if problem else []


def check_runtime_support(cfg: LumosConfig, training: bool = True) -> None:
    """Raise ``ConfigError`` (one line per problem) if this machine cannot run ``cfg``."""
    problems = runtime_problems(cfg, training=training)
    if problems:
        raise ConfigError("; ".join(problems))


def validate_config(cfg: LumosConfig) -> None:
    """Raise ``ConfigError`` listing every inconsistent value (one per line)."""
    problems = (_choice_problems(cfg) + _parallel_problems(cfg) + _model_problems(cfg)
                + _train_data_problems(cfg) + _ardf_problems(cfg))
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
