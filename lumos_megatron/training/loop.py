"""The training loop on megatron-core (never ``megatron.training``).

``train(cfg)`` runs one job in this process: distributed init, parallel groups, model chunks,
DDP, optimizer, resume from a checkpoint, megatron's forward/backward schedule, reporting,
periodic/final/on-signal checkpoints, the early-stop decisions (``training.signals``) and the
hang watchdog (``training.watchdog``), which ends a stuck run with status 6.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from lumos_megatron.checkpoint.state import TrainProgress
from lumos_megatron.config.loader import ConfigError
from lumos_megatron.config.validate import check_runtime_support, resolved_train_iters
from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.sources import build_data_streams
from lumos_megatron.models.layer_spec import build_transformer_config
from lumos_megatron.models.lumos_model import build_model_chunks
from lumos_megatron.platform.distributed import init_distributed
from lumos_megatron.objective import build_objective
from lumos_megatron.platform.parallel import (
    initialize_parallel_state,
    is_last_rank,
    resolve_layout,
    sample_broadcast_group,
    seed_model_parallel_rng,
)
from lumos_megatron.training.flops import step_flops
from lumos_megatron.training.gpu_peaks import device_peak_tflops
from lumos_megatron.training.evaluation import Evaluator
from lumos_megatron.training.rank_timing import RankWorkClock
from lumos_megatron.training.report_reduction import reduce_reports, slowest_rank
from lumos_megatron.training.feed import DataFeed
from lumos_megatron.training.optim import attach_schedule_hooks, build_optimizer, build_scheduler, wrap_ddp
from lumos_megatron.training.reporting import IterationStats, Reporter, peak_memory_gb
from lumos_megatron.training.signals import StopMonitor, TrainingDiverged
from lumos_megatron.training.step import forward_step, run_forward_backward
from lumos_megatron.training.watchdog import HangWatchdog, watchdog_from_config
from lumos_megatron.vocab import LumosVocab


def _checkpoint_hooks(cfg: LumosConfig, parallel_layout, chunks, optimizer, scheduler):
    """This run's ``CheckpointSaver`` (None without ``checkpoint.save``): claims the save directory
    before the first save (a second live run stops here, exit 2)."""
    if not cfg.checkpoint.save:
        return None
    from lumos_megatron.training.checkpointing import CheckpointSaver

    return CheckpointSaver(cfg, parallel_layout, chunks, optimizer, scheduler)


def _resume(cfg: LumosConfig, parallel_layout, chunks, optimizer, scheduler) -> TrainProgress:
    """Progress to start from: the loaded checkpoint's, or iteration 0."""
    if cfg.checkpoint.load:
        from lumos_megatron.checkpoint.load import load_checkpoint

        loaded = load_checkpoint(cfg.checkpoint.load, cfg.checkpoint.load_step, chunks, optimizer,
                                 scheduler, parallel_layout, cfg.parallel.use_distributed_optimizer,
                                 finetune=cfg.checkpoint.finetune, verify=cfg.checkpoint.verify,
                                 fallback=cfg.checkpoint.fallback)
        if loaded is not None:
            return loaded
    return TrainProgress(iteration=0, consumed_samples=0)


def train(cfg: LumosConfig, start_time: Optional[float] = None) -> List[IterationStats]:
    """Train to ``resolved_train_iters(cfg)`` optimizer steps (resuming from ``checkpoint.load``),
    saving per ``cfg.checkpoint``; returns the last rank's most recent stats (the reporter's
    bounded window).

    Stops early, after saving, on SIGTERM/SIGUSR1 or when ``train.exit_duration_in_mins``
    (measured from ``start_time``) runs out; raises ``TrainingDiverged`` on a NaN/Inf loss. A
    step (or evaluation, checkpoint load or save) over the hang watchdog's limit ends the process
    with ``exit_codes.HUNG`` after dumping every thread's stack (``training.watchdog``).
    """
    check_runtime_support(cfg, training=True)
    monitor = StopMonitor(cfg.train.exit_duration_in_mins, start_time).install()
    try:
        return _train(cfg, monitor)
    finally:
        monitor.uninstall()


def _train(cfg: LumosConfig, monitor: StopMonitor) -> List[IterationStats]:
    env = init_distributed()
    # Every rank watches itself: a hung rank leaves the others blocked in a collective.
    watchdog = watchdog_from_config(cfg.train, dist.get_rank()).start()
    try:
        return _run(cfg, env, monitor, watchdog)
    finally:
        watchdog.stop()


def _run(cfg: LumosConfig, env, monitor: StopMonitor, watchdog: HangWatchdog) -> List[IterationStats]:
    parallel_layout = resolve_layout(cfg, env.world_size)
    initialize_parallel_state(cfg, parallel_layout)
    seed_model_parallel_rng(cfg.train.seed)

    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    objective = build_objective(cfg, vocab)
    transformer_config = build_transformer_config(cfg)
    chunks = wrap_ddp(cfg, transformer_config, build_model_chunks(cfg, transformer_config, objective.loss_head()))
    optimizer = build_optimizer(cfg, chunks)
    scheduler = build_scheduler(cfg, optimizer)
    attach_schedule_hooks(transformer_config, chunks, optimizer)
    work_clock = RankWorkClock()
    work_clock.attach(transformer_config)
    with watchdog.watching("checkpoint load"):
        progress = _resume(cfg, parallel_layout, chunks, optimizer, scheduler)
    save = _checkpoint_hooks(cfg, parallel_layout, chunks, optimizer, scheduler)

    train_iters = resolved_train_iters(cfg)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dp_rank = parallel_state.get_data_parallel_rank()
    cp_rank = parallel_state.get_context_parallel_rank()
    broadcast = sample_broadcast_group()
    try:
        feed = DataFeed(cfg, vocab, build_data_streams(cfg, vocab, "train"), parallel_layout.dp, dp_rank, cp_rank,
                        device, base_iteration=progress.iteration,
                        base_samples=progress.stream_samples, objective=objective, broadcast=broadcast)
    except (FileNotFoundError, ValueError) as err:  # unusable data: every rank sees the same
        raise ConfigError(f"training data: {err}") from err
    step_func = partial(forward_step, objective=objective)
    last_stage = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    reporting = is_last_rank()
    peak_tflops, peak_source = device_peak_tflops(cfg.logging.peak_tflops, cfg.train.precision) if reporting else (None, "")
    reporter = Reporter(active=reporting, train_iters=train_iters, global_batch_size=cfg.train.global_batch_size,
                        log_interval=cfg.logging.log_interval,
                        tensorboard_dir=cfg.logging.tensorboard_dir,
                        world_size=parallel_layout.world_size, peak_tflops=peak_tflops)
    evaluator = None
    if cfg.train.eval_interval > 0:
        try:
            evaluator = Evaluator(cfg, vocab, chunks, parallel_layout, dp_rank, cp_rank, device, step_func, reporter,
                                  objective, broadcast)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"validation data (train.eval_interval > 0): {err}") from err
    if reporter.active:
        print(f"lumos_megatron: MFU relative to {peak_source}"
              + (f" ({peak_tflops:.3g} TFLOP/s per device)" if peak_tflops else ""), flush=True)
        sizes = parallel_layout
        print(f"lumos_megatron: world {sizes.world_size} = TP {sizes.tp} x PP {sizes.pp} x CP {sizes.cp} "
              f"x DP {sizes.dp} (VPP {sizes.vpp or 1}), launcher {env.launcher}", flush=True)
        for s in feed.plan.streams.values():
            print(f"lumos_megatron: {s.name} steps: {s.num_microbatches(parallel_layout.dp)} micro-batches of "
                  f"{s.micro_batch_size} x DP {parallel_layout.dp} = {s.global_batch_size} samples, padded to "
                  f"<= {s.seq_length} tokens" + (f"; cycle {'/'.join(feed.plan.cycle)}"
                                                  if len(feed.plan.cycle) > 1 else ""), flush=True)

    for chunk in chunks:
        chunk.train()
    start_iteration = progress.iteration
    saved_at = progress.iteration if cfg.checkpoint.load else None
    for iteration in range(start_iteration, train_iters):
        watchdog.step_started(iteration + 1)
        start = time.perf_counter()
        work_clock.start()
        for chunk in chunks:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
        step = feed.step(iteration)
        gbs = step.stream.global_batch_size
        reports = run_forward_backward(step_func, chunks, [step.make_iterator() for _ in chunks], cfg,
                                       step.num_microbatches, seq_length=step.seq_length,
                                       micro_batch_size=step.stream.micro_batch_size)
        update_ok, grad_norm, _ = optimizer.step()
        scheduler.step(increment=gbs)
        progress = TrainProgress(iteration + 1, progress.consumed_samples + gbs, feed.consumed_after(iteration))
        extra: Dict[str, float] = {}
        model_flops = 0.0
        if last_stage:
            # Every CP rank of a group builds the same whole samples: CP rank 0 counts their pairs.
            pairs, real = (step.attention_pairs, step.real_tokens) if cp_rank == 0 else (0.0, 0.0)
            totals = reduce_reports(reports, {"attention pairs": pairs, "real tokens": real})
            loss_sum, tokens = totals["lm loss"].tolist()
            extra = objective.scalars(totals)
            real_tokens = float(totals["real tokens"])
            extra["data/padding-fraction"] = 1.0 - real_tokens / max(step.computed_tokens, 1)
            extra["data/dp-imbalance"] = step.layout.dp_imbalance
            # Model FLOPs count the samples' own tokens and pairs: padding is not model work.
            model_flops = step_flops(cfg, real_tokens, float(totals["attention pairs"]), tokens).total
        else:
            loss_sum, tokens = float("nan"), 0.0
        lm_loss = loss_sum / max(tokens, 1.0)
        grad_norm = None if grad_norm is None else float(grad_norm)
        work_clock.stop()
        # Collective, once per logging window: every rank asks at the same iterations.
        slowest = (slowest_rank(work_clock.take_window_mean_ms())
                   if reporter.is_log_iteration(progress.iteration) else None)
        reporter.log(IterationStats(
            iteration=progress.iteration,
            consumed_samples=progress.consumed_samples,
            elapsed_ms=(time.perf_counter() - start) * 1000.0,
            lr=scheduler.get_lr(optimizer.param_groups[0]),
            lm_loss=lm_loss,
            loss_tokens=int(tokens),
            grad_norm=grad_norm,
            skipped=not update_ok,
            extra=extra,
            tokens=step.computed_tokens,
            model_flops=model_flops,
            memory_gb=peak_memory_gb() if reporter.active else 0.0,
            global_batch_size=gbs,
            slowest_rank=slowest[0] if slowest else None,
            slowest_rank_ms=slowest[1] if slowest else 0.0,
        ))
        decision = monitor.decide(lm_loss if last_stage else None, grad_norm)
        watchdog.step_finished()
        if decision.nonfinite:
            reporter.close()
            raise TrainingDiverged(
                f"lm loss or grad norm is NaN/Inf at iteration {progress.iteration}; stopping without "
                "saving (lower train.lr, raise warmup, or resume from the last checkpoint)")
        if evaluator is not None and progress.iteration % cfg.train.eval_interval == 0:
            with watchdog.watching(f"the evaluation at iteration {progress.iteration}"):
                evaluator.run(progress)
        interval = cfg.checkpoint.save_interval
        if save and interval and progress.iteration % interval == 0 and not decision.stop:
            # A failed periodic save is logged and retried at the next interval (CheckpointSaver).
            with watchdog.watching(f"the checkpoint save at iteration {progress.iteration}"):
                saved = save.periodic(progress)
            if saved:
                saved_at = progress.iteration
        if decision.stop:
            _announce_stop(decision, monitor, progress, cfg, save is not None)
            break
    # As Megatron: no final save of an untrained model, nor of a checkpoint just saved or loaded.
    # The final and the signal-driven saves are not retried: their failure stops the run.
    if save and progress.iteration not in (0, saved_at):
        with watchdog.watching(f"the final checkpoint save at iteration {progress.iteration}"):
            save.final(progress)
    if save:
        save.close()
    reporter.close()
    return list(reporter.history)


def _announce_stop(decision, monitor: StopMonitor, progress: TrainProgress, cfg: LumosConfig,
                   saving: bool) -> None:
    if dist.get_rank() != 0:
        return
    why = (f"received {monitor.signal_name()}" if decision.signal_received else
           f"exit duration of {cfg.train.exit_duration_in_mins} min reached "
           f"({monitor.elapsed_minutes():.2f} min elapsed)")
    action = "saving a checkpoint and exiting" if saving else "exiting (no checkpoint.save set: nothing saved)"
    print(f"lumos_megatron: {why} at iteration {progress.iteration}: {action}", flush=True)
