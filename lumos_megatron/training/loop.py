"""The training loop on megatron-core (never ``megatron.training``).

``train(cfg)`` runs one job in this process: distributed init, parallel groups, model chunks,
DDP, optimizer, megatron's forward/backward schedule, reporting. W1.4 adds checkpoints, eval,
signals and the full logging/MFU; the structure here is what they plug into.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Dict, List

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from lumos_megatron.config.loader import ConfigError
from lumos_megatron.config.validate import check_runtime_support
from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.mock import MockVideoDataset
from lumos_megatron.models.layer_spec import build_transformer_config
from lumos_megatron.models.lumos_model import build_model_chunks
from lumos_megatron.platform.distributed import init_distributed
from lumos_megatron.platform.parallel import (
    initialize_parallel_state,
    is_last_rank,
    num_microbatches,
    resolve_layout,
    seed_model_parallel_rng,
)
from lumos_megatron.training.batch import SampleSchedule, micro_batch_iterator
from lumos_megatron.training.optim import attach_schedule_hooks, build_optimizer, build_scheduler, wrap_ddp
from lumos_megatron.training.reporting import IterationStats, Reporter
from lumos_megatron.training.step import forward_step
from lumos_megatron.vocab import LumosVocab


def _check_supported(cfg: LumosConfig) -> None:
    check_runtime_support(cfg, training=True)
    if not cfg.data.mock:
        raise ConfigError("only mock data is available so far (data.mock=true); indexed datasets "
                          "arrive with W1.5")


def _reduce_reports(loss_reports: List[dict]) -> Dict[str, torch.Tensor]:
    """Sum every report (``lm loss`` [sum, tokens], ``frame loss`` [K, 2], ``mask ratio``
    [masked, maskable]) over micro-batches and over the DP(+CP) group (last stage only)."""
    totals: Dict[str, torch.Tensor] = {}
    for report in loss_reports:
        for key, value in report.items():
            value = value.detach().to("cpu", torch.float64)
            totals[key] = totals[key] + value if key in totals else value
    if totals and parallel_state.get_data_parallel_world_size(with_context_parallel=True) > 1:
        group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        for key in sorted(totals):  # same order on every rank
            value = totals[key].to(device)
            dist.all_reduce(value, group=group)
            totals[key] = value.cpu()
    return totals


def _extra_scalars(totals: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """TensorBoard scalars beyond ``lm loss``: per-frame visual loss and the realized mask ratio."""
    extra = {}
    if "frame loss" in totals:
        for k, (loss_sum, count) in enumerate(totals["frame loss"].tolist()):
            if count > 0:
                extra[f"loss/frame_{k}"] = loss_sum / count
    if "mask ratio" in totals:
        masked, maskable = totals["mask ratio"].tolist()
        if maskable > 0:
            extra["ardf/mask-ratio"] = masked / maskable
    return extra


def train(cfg: LumosConfig) -> List[IterationStats]:
    """Run ``cfg.train.train_iters`` optimizer steps; returns the stats recorded on the last rank."""
    _check_supported(cfg)
    env = init_distributed()
    layout = resolve_layout(cfg, env.world_size)
    initialize_parallel_state(cfg, layout)
    seed_model_parallel_rng(cfg.train.seed)

    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    dataset = MockVideoDataset(cfg, vocab)
    config = build_transformer_config(cfg)
    chunks = wrap_ddp(cfg, config, build_model_chunks(cfg, config))
    optimizer = build_optimizer(cfg, chunks)
    scheduler = build_scheduler(cfg, optimizer)
    attach_schedule_hooks(config, chunks, optimizer)

    micro = num_microbatches(cfg, layout)
    schedule = SampleSchedule(cfg.train.global_batch_size, cfg.train.micro_batch_size, layout.dp)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dp_rank = parallel_state.get_data_parallel_rank()
    cp_rank = parallel_state.get_context_parallel_rank()
    iterators = [micro_batch_iterator(dataset, cfg, vocab, schedule, dp_rank, 0, micro, device, cp_rank)
                 for _ in chunks]
    forward_backward = get_forward_backward_func()
    step_func = partial(forward_step, report_frames=cfg.ardf.report_frames if cfg.ardf.enabled else 0)
    last_stage = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    reporter = Reporter(active=is_last_rank(), train_iters=cfg.train.train_iters,
                        global_batch_size=cfg.train.global_batch_size,
                        log_interval=cfg.logging.log_interval,
                        tensorboard_dir=cfg.logging.tensorboard_dir)
    if reporter.active:
        print(f"lumos_megatron: world {layout.world_size} = TP {layout.tp} x PP {layout.pp} x CP "
              f"{layout.cp} x DP {layout.dp} (VPP {layout.vpp or 1}), {micro} micro-batches of "
              f"{cfg.train.micro_batch_size} per step, launcher {env.launcher}", flush=True)

    for chunk in chunks:
        chunk.train()
    for iteration in range(cfg.train.train_iters):
        start = time.perf_counter()
        for chunk in chunks:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
        reports = forward_backward(
            forward_step_func=step_func,
            data_iterator=iterators if len(iterators) > 1 else iterators[0],
            model=chunks if len(chunks) > 1 else chunks[0],
            num_microbatches=micro,
            seq_length=cfg.data.seq_length,
            micro_batch_size=cfg.train.micro_batch_size,
            forward_only=False,
        )
        update_ok, grad_norm, _ = optimizer.step()
        scheduler.step(increment=cfg.train.global_batch_size)
        extra: Dict[str, float] = {}
        if last_stage:
            totals = _reduce_reports(reports)
            loss_sum, tokens = totals["lm loss"].tolist()
            extra = _extra_scalars(totals)
        else:
            loss_sum, tokens = float("nan"), 0.0
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        reporter.log(IterationStats(
            iteration=iteration + 1,
            consumed_samples=(iteration + 1) * cfg.train.global_batch_size,
            elapsed_ms=elapsed_ms,
            lr=scheduler.get_lr(optimizer.param_groups[0]),
            lm_loss=loss_sum / max(tokens, 1.0),
            loss_tokens=int(tokens),
            grad_norm=None if grad_norm is None else float(grad_norm),
            skipped=not update_ok,
            extra=extra,
        ))
    reporter.close()
    return reporter.history
