"""Batch size, learning rate and schedule of a ladder run, from its compute budget.

Rule: **DeepSeek LLM compute-based power laws** (DeepSeek-AI, "DeepSeek LLM: Scaling Open-Source
Language Models with Longtermism", arXiv:2401.02954, 2024, §3.1, Eq. 1)::

    B_opt   = 0.2920 * C ** 0.3271      (tokens per optimizer step)
    eta_opt = 0.3118 * C ** -0.1250     (peak learning rate, AdamW)

with ``C = M x D``, ``M`` the non-embedding FLOPs per token (attention included, vocabulary
projection excluded) and ``D`` the training tokens. Here ``M`` is the dense + attention part of
our FLOPs model (``StepFlops.non_embedding``, the trainer's own count), so small video models
whose attention is a large share of the work get the batch and LR their compute calls for.

Schedule (our choices, stated): linear warmup over 2000 steps as DeepSeek LLM, but at most
``warmup_fraction`` (5%) of a short ladder run; then cosine decay to ``min_lr_ratio`` (10%) of the
peak over exactly the run's length, as in Chinchilla (Hoffmann et al. 2022, "Training
Compute-Optimal Large Language Models", App. B, Fig. A1: a cosine cycle longer than the run
overestimates the loss of the shorter runs). DeepSeek used a multi-step schedule, which the
trainer does not offer; both decay to about the same final LR.

The batch in samples is ``B_opt / seq_length`` rounded to a multiple of ``micro_batch x DP``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RULE_NAME = "DeepSeek LLM (2024) compute-based batch-size and learning-rate power laws"
RULE_CITATION = ("DeepSeek-AI, DeepSeek LLM: Scaling Open-Source Language Models with Longtermism, "
                 "arXiv:2401.02954 (2024), Sec. 3.1, Eq. 1: B_opt = 0.2920 C^0.3271, "
                 "eta_opt = 0.3118 C^-0.1250; cosine to 10% over the run: Hoffmann et al., "
                 "Training Compute-Optimal Large Language Models, arXiv:2203.15556 (2022)")
BATCH_COEFF, BATCH_EXP = 0.2920, 0.3271
LR_COEFF, LR_EXP = 0.3118, -0.1250
DEEPSEEK_WARMUP_STEPS = 2000


def optimal_batch_tokens(compute: float) -> float:
    """DeepSeek LLM's optimal batch size in tokens for ``compute`` non-embedding FLOPs."""
    return BATCH_COEFF * compute ** BATCH_EXP


def optimal_lr(compute: float) -> float:
    """DeepSeek LLM's optimal peak learning rate for ``compute`` non-embedding FLOPs."""
    return LR_COEFF * compute ** LR_EXP


@dataclass(frozen=True)
class HParamRule:
    """The knobs of the rule (defaults: the rule as published plus the schedule above)."""

    lr_multiplier: float = 1.0
    """Scales eta_opt (e.g. to transfer the rule to another data distribution)."""
    batch_multiplier: float = 1.0
    """Scales B_opt."""
    min_lr_ratio: float = 0.1
    """Final LR / peak LR of the cosine decay."""
    warmup_steps: int = DEEPSEEK_WARMUP_STEPS
    """Warmup steps of a long run."""
    warmup_fraction: float = 0.05
    """At most this fraction of a run warms up."""


@dataclass(frozen=True)
class RunHParams:
    """What a ladder run trains with."""

    global_batch_size: int
    micro_batch_size: int
    train_iters: int
    lr: float
    min_lr: float
    warmup_iters: int

    def tokens(self, seq_length: int) -> int:
        """Tokens the run processes (padded positions included)."""
        return self.train_iters * self.global_batch_size * seq_length


def batch_samples(batch_tokens: float, seq_length: int, micro_batch: int, dp: int) -> tuple[int, int]:
    """(global batch, micro batch) in samples: ``batch_tokens / seq_length`` rounded to a multiple
    of ``micro x dp`` (the micro batch drops to 1 when even one step of it is too large)."""
    samples = batch_tokens / seq_length
    if micro_batch * dp > samples:
        micro_batch = 1
    unit = micro_batch * dp
    return max(unit, unit * round(samples / unit)), micro_batch


def run_hparams(non_embedding_flops_per_token: float, tokens: float, seq_length: int,
                micro_batch: int, dp: int, rule: HParamRule = HParamRule(),
                iters_multiple: int = 1) -> RunHParams:
    """Batch, LR and schedule of a run of about ``tokens`` tokens (``micro_batch`` and ``dp``: the
    recipe's micro batch and data-parallel size). The iteration count is rounded up to a multiple
    of ``iters_multiple`` (e.g. the evaluation interval), so the run processes
    ``RunHParams.tokens(seq_length)`` tokens, close to ``tokens``."""
    compute = non_embedding_flops_per_token * tokens
    gbs, micro = batch_samples(rule.batch_multiplier * optimal_batch_tokens(compute), seq_length,
                               micro_batch, dp)
    iters = max(1, round(tokens / (gbs * seq_length)))
    iters = iters_multiple * max(1, math.ceil(iters / iters_multiple))
    lr = rule.lr_multiplier * optimal_lr(compute)
    warmup = min(rule.warmup_steps, math.ceil(rule.warmup_fraction * iters))
    return RunHParams(gbs, micro, iters, lr, rule.min_lr_ratio * lr, warmup)
