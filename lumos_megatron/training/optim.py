"""DDP wrapping, the megatron optimizer and the LR schedule: the only place that builds them."""

from __future__ import annotations

from typing import List

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.distributed import finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.config.validate import resolved_train_iters


def wrap_ddp(cfg: LumosConfig, transformer_config, chunks: List[torch.nn.Module]) -> List[DistributedDataParallel]:
    """Wrap each model chunk in megatron's DDP (contiguous fp32 grad buffers)."""
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=cfg.parallel.overlap_grad_reduce,
        use_distributed_optimizer=cfg.parallel.use_distributed_optimizer,
    )
    return [
        DistributedDataParallel(transformer_config, ddp_config, chunk,
                                # Only the first chunk may bucket-overlap with the pipeline (megatron rule).
                                disable_bucketing=i > 0)
        for i, chunk in enumerate(chunks)
    ]


def build_optimizer(cfg: LumosConfig, ddp_chunks):
    """AdamW through megatron (fp32 master weights, optional distributed optimizer)."""
    t = cfg.train
    opt_config = OptimizerConfig(
        optimizer="adam",
        lr=t.lr,
        min_lr=t.min_lr,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_eps=t.adam_eps,
        clip_grad=t.clip_grad,
        bf16=t.precision == "bf16",
        params_dtype=torch.bfloat16 if t.precision == "bf16" else torch.float32,
        use_distributed_optimizer=cfg.parallel.use_distributed_optimizer,
    )
    # An empty override map means "weight decay on every parameter" (the official recipe);
    # None makes megatron apply its usual no-decay rule to biases and norm weights.
    overrides = {} if t.weight_decay_all_params else None
    return get_megatron_optimizer(opt_config, ddp_chunks, config_overrides=overrides)


def build_scheduler(cfg: LumosConfig, optimizer) -> OptimizerParamScheduler:
    """Linear warmup from 0, then cosine from lr to min_lr (constant when they are equal)."""
    t = cfg.train
    gbs = t.global_batch_size
    # Megatron counts scheduler steps in samples (it is stepped by the global batch size).
    decay_steps = t.train_samples or max(resolved_train_iters(cfg), 1) * gbs
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=t.lr,
        min_lr=t.min_lr,
        lr_warmup_steps=t.lr_warmup_iters * gbs,
        lr_decay_steps=max(decay_steps, t.lr_warmup_iters * gbs + 1),
        lr_decay_style="constant" if t.lr == t.min_lr else "cosine",
        start_wd=t.weight_decay,
        end_wd=t.weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
        # On resume, the schedule's shape comes from this run's configuration (the resolved
        # config is the source of truth) and only its position (num_steps) from the checkpoint;
        # without this megatron asserts that e.g. a longer train_iters equals the saved value.
        override_opt_param_scheduler=True,
        use_checkpoint_opt_param_scheduler=False,
    )


def attach_schedule_hooks(transformer_config, ddp_chunks, optimizer) -> None:
    """Hooks megatron's schedules call: grad finalisation, loss scaling, no-sync for accumulation."""
    transformer_config.finalize_model_grads_func = finalize_model_grads
    transformer_config.grad_scale_func = optimizer.scale_loss
    no_sync = [c.no_sync for c in ddp_chunks]
    transformer_config.no_sync_func = no_sync if len(no_sync) > 1 else no_sync[0]
    if any(c.ddp_config.overlap_grad_reduce for c in ddp_chunks):
        sync = [c.start_grad_sync for c in ddp_chunks]
        transformer_config.grad_sync_func = sync if len(sync) > 1 else sync[0]
