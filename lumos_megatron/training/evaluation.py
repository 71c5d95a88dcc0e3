"""Periodic evaluation on the validation split (Megatron ``--eval-interval`` / ``--eval-iters``).

Forward-only passes through the same schedule and loss as training, over ``train.eval_iters``
global batches of each validation stream (image and video in joint training). The batches (and
their AR-DF masks and CFG drops) are the same at every evaluation: sample indices restart at 0
and the random keys use a reserved iteration range, so successive evaluations measure the model,
not the draw. The batches come from the same ``DataFeed`` (``training.batch.rank_micro_batch``)
as training's, loss rows included, so evaluation runs the same sync-free loss path.
"""

from __future__ import annotations

from typing import Dict, List

import torch

from lumos_megatron.checkpoint.state import TrainProgress
from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.sources import build_data_streams
from lumos_megatron.training.feed import EVAL_ITERATION_BASE, DataFeed
from lumos_megatron.training.report_reduction import reduce_reports
from lumos_megatron.training.step import run_forward_backward
from lumos_megatron.vocab import LumosVocab


class Evaluator:
    """Runs and reports validation losses for one training run."""

    def __init__(self, cfg: LumosConfig, vocab: LumosVocab, chunks, parallel_layout, dp_rank: int,
                 cp_rank: int, device: torch.device, step_func, reporter, objective=None, broadcast=None):
        self.cfg, self.chunks = cfg, chunks
        self.step_func, self.reporter = step_func, reporter
        self.extra: Dict[str, float] = {}
        """The objective's extra scalars of the last evaluation (per-frame validation loss)."""
        self.feed = DataFeed(cfg, vocab, build_data_streams(cfg, vocab, "valid"), parallel_layout.dp,
                             dp_rank, cp_rank, device, ardf_iteration_base=EVAL_ITERATION_BASE,
                             objective=objective, broadcast=broadcast)

    def _iterations(self) -> List[int]:
        """Validation-plan iterations covering ``eval_iters`` global batches of every stream."""
        plan, want = self.feed.plan, self.cfg.train.eval_iters
        chosen: List[int] = []
        counts = {name: 0 for name in plan.streams}
        j = 0
        while min(counts.values()) < want:
            name = plan.stream_at(j).name
            if counts[name] < want:
                counts[name] += 1
                chosen.append(j)
            j += 1
        return chosen

    @torch.no_grad()
    def losses(self) -> Dict[str, float]:
        """Token-mean validation loss over ``eval_iters`` global batches of each stream (key
        ``lm loss``), and per stream (``lm loss <stream>``) when training is joint; {} off the
        last stage."""
        from megatron.core import parallel_state

        for chunk in self.chunks:
            chunk.eval()
        sums: Dict[str, list] = {}
        reports_total: Dict[str, torch.Tensor] = {}
        joint = len(self.feed.plan.streams) > 1
        try:
            for j in self._iterations():
                step = self.feed.step(j)
                reports = run_forward_backward(self.step_func, self.chunks,
                                               [step.make_iterator() for _ in self.chunks], self.cfg,
                                               step.num_microbatches, forward_only=True,
                                               seq_length=step.seq_length,
                                               micro_batch_size=step.stream.micro_batch_size)
                if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
                    continue
                totals = reduce_reports(reports)
                for key, value in totals.items():
                    reports_total[key] = reports_total[key] + value if key in reports_total else value
                loss_sum, tokens = totals["lm loss"].tolist()
                keys = ["lm loss"] + ([f"lm loss {step.stream.name}"] if joint else [])
                for key in keys:
                    total = sums.setdefault(key, [0.0, 0.0])
                    total[0] += loss_sum
                    total[1] += tokens
        finally:
            for chunk in self.chunks:
                chunk.train()
        # The objective's extras over the whole evaluation (AR-DF: loss/frame_k, ardf/mask-ratio).
        self.extra = self.feed.objective.scalars(reports_total) if reports_total else {}
        return {k: s / max(n, 1.0) for k, (s, n) in sums.items()}

    def run(self, progress: TrainProgress) -> Dict[str, float]:
        """Evaluate now and report (stdout block + TensorBoard on the reporting rank)."""
        losses = self.losses()
        self.reporter.log_evaluation(progress.iteration, progress.consumed_samples, losses, self.extra)
        return losses
