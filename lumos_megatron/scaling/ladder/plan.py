"""A scaling ladder: model sizes x token (or compute) budgets, one derived recipe per run.

``plan_ladder(spec)`` lays the ladder out without touching the disk: the family members between
``n_min`` and ``n_max`` (``shapes.ladder_shapes``), for each either ``D = k x N`` per tokens-per-parameter
multiple ``k`` or ``D = C / (model FLOPs per token)`` per compute budget ``C`` (IsoFLOP; members
whose ``D / N`` falls outside ``tpp_range`` are left out), then batch, LR and schedule by
``hparam_rule`` and the derived, validated configuration. Every run records its size ``N`` (total
and non-embedding), tokens ``D``, and compute both by our FLOPs model and as ``6 N D``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from lumos_megatron.config import LumosConfig, load_recipe, set_value, validate_config
from lumos_megatron.platform.parallel import LayoutError, microbatch_group, resolve_layout
from lumos_megatron.scaling.ladder.hparam_rule import HParamRule, RunHParams, run_hparams
from lumos_megatron.scaling.ladder.shapes import LadderShape, ShapeRule, SizeBy, ladder_shapes
from lumos_megatron.training.flops import DataLayout, StepFlops, flops_per_token, padded_length


@dataclass(frozen=True)
class LadderSpec:
    """Everything a ladder is derived from (``tools/scaling/make_ladder.py``'s options)."""

    base: Path
    """Base recipe: data, vocabulary, objective, optimizer settings not set by the rule."""
    n_min: float
    n_max: float
    size_by: SizeBy = "non_embedding"
    """Which parameter count n_min/n_max, the tokens-per-parameter multiples and ``D / N`` use."""
    num_sizes: int = 0
    """Sizes to pick (log-spaced) between n_min and n_max; 0: every family member."""
    tokens_per_param: Tuple[float, ...] = ()
    isoflop: Tuple[float, ...] = ()
    """Compute budgets (model FLOPs); each gives one run per size within ``tpp_range``."""
    tpp_range: Tuple[float, float] = (1.0, 1000.0)
    shape_rule: ShapeRule = ShapeRule()
    hparam_rule: HParamRule = HParamRule()
    layout: Optional[DataLayout] = None
    """Data layout of the FLOPs count; None: the base recipe's mock samples."""
    overrides: Tuple[Tuple[str, str], ...] = ()
    """Dotted overrides applied to the base recipe first."""
    nodes: int = 1
    gpus_per_node: int = 8
    keep_parallel: bool = False
    """Keep the base recipe's TP/PP/CP/VPP/SP; otherwise ladder runs are data-parallel only."""
    evals_per_run: int = 5
    eval_iters: Optional[int] = None
    """Validation batches per evaluation; None: the base recipe's (or from ``eval_samples``)."""
    eval_samples: Optional[int] = None
    """Validation samples per evaluation, the same for every run whatever its batch size (the
    evaluator always starts at validation sample 0, so every run sees the same first samples):
    ``eval_iters = ceil(eval_samples / global batch)``. Overrides ``eval_iters``."""
    prefix: str = ""
    """Prefix of every run name (and SLURM job name)."""

    @property
    def gpus(self) -> int:
        """GPUs (processes) per run."""
        return self.nodes * self.gpus_per_node


@dataclass
class LadderRun:
    """One planned run."""

    name: str
    budget: str
    """``tpp=<k>`` or ``C=<flops>``: the label collect.py writes into ``runs.csv``, by which the fit
    groups IsoFLOP profiles."""
    shape: LadderShape
    hparams: RunHParams
    eval_interval: int
    cfg: LumosConfig = field(repr=False)
    per_token: StepFlops = field(repr=False)
    tokens: int = 0

    @property
    def flops(self) -> float:
        """Model FLOPs the run reaches by our FLOPs model (``training.flops``): its planned tokens
        (iterations rounded to the evaluation interval) x FLOPs per token."""
        return self.per_token.total * self.tokens

    @property
    def budget_flops(self) -> Optional[float]:
        """The IsoFLOP budget ``C`` the run belongs to (None for a tokens-per-parameter budget);
        its achieved ``flops`` differs by the rounding of its iterations."""
        return float(self.budget[2:]) if self.budget.startswith("C=") else None

    def flops_6nd(self, size_by: SizeBy) -> float:
        """The ``6 N D`` estimate, N by ``size_by``."""
        return 6.0 * self.shape.params(size_by) * self.tokens


def load_base(spec: LadderSpec) -> LumosConfig:
    """The base recipe with the spec's overrides, validated."""
    cfg = load_recipe(spec.base)
    for key, value in spec.overrides:
        set_value(cfg, key, value)
    validate_config(cfg)
    return cfg


def _batch_unit(cfg: LumosConfig, gpus: int) -> int:
    """What a step's micro-batch count is a multiple of, times DP: DP x the interleaved-schedule
    group. LayoutError when TP x PP x CP does not divide the GPUs."""
    p = cfg.parallel
    model_ranks = p.tensor_model_parallel_size * p.pipeline_model_parallel_size * p.context_parallel_size
    if gpus % model_ranks:
        raise LayoutError(f"TP x PP x CP = {model_ranks} does not divide the {gpus} GPUs of a run")
    return gpus // model_ranks * microbatch_group(p)


def derive_config(base: LumosConfig, shape: LadderShape, keep_parallel: bool) -> LumosConfig:
    """``base`` with the shape applied (and, unless ``keep_parallel``, no model parallelism)."""
    cfg = copy.deepcopy(base)
    cfg.model = shape.apply(base.model)
    if not keep_parallel:
        cfg.parallel = dataclasses.replace(
            base.parallel, tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
            virtual_pipeline_model_parallel_size=None, context_parallel_size=1, sequence_parallel=False)
    return cfg


def _schedule(cfg: LumosConfig, hp: RunHParams, eval_interval: int, eval_iters: Optional[int],
              gpus: int) -> LumosConfig:
    """``cfg`` with the run's batch, LR schedule, length and evaluation settings, checked as the
    trainer checks it on ``gpus`` processes."""
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, global_batch_size=hp.global_batch_size, micro_batch_size=hp.micro_batch_size,
        train_iters=hp.train_iters, train_samples=None, lr=hp.lr, min_lr=hp.min_lr,
        lr_warmup_iters=hp.warmup_iters, eval_interval=eval_interval,
        eval_iters=eval_iters or cfg.train.eval_iters))
    validate_config(cfg)
    resolve_layout(cfg, gpus)
    return cfg


def _budgets(spec: LadderSpec, shape: LadderShape, per_token: StepFlops) -> List[Tuple[str, float]]:
    """(budget label, target tokens) of one size."""
    n = shape.params(spec.size_by)
    out = [(f"tpp={k:g}", k * n) for k in spec.tokens_per_param]
    lo, hi = spec.tpp_range
    for c in spec.isoflop:
        tokens = c / per_token.total
        if lo <= tokens / n <= hi:
            out.append((f"C={c:.6g}", tokens))
    return out


def run_name(prefix: str, shape: LadderShape, budget: str) -> str:
    """``<prefix><w..-l..>-tpp<k>`` or ``<prefix><w..-l..>-c<C>`` (safe in paths and job names)."""
    kind, value = budget.split("=")
    tag = ("tpp" if kind == "tpp" else "c") + value.replace("+", "")
    return f"{prefix}{shape.label}-{tag}"


def plan_ladder(spec: LadderSpec) -> List[LadderRun]:
    """Every run of the ladder, sizes ascending, budgets in the order given. ValueError (or
    ConfigError) with one line naming the problem for an impossible spec."""
    if not spec.tokens_per_param and not spec.isoflop:
        raise ValueError("give token budgets: --tokens-per-param K ... or --isoflop C ...")
    if any(k <= 0 for k in spec.tokens_per_param) or any(c <= 0 for c in spec.isoflop):
        raise ValueError("token-per-parameter multiples and compute budgets must be > 0")
    if spec.evals_per_run < 1 or (spec.eval_samples is not None and spec.eval_samples < 1):
        raise ValueError("evaluations per run and validation samples must be >= 1")
    base = load_base(spec)
    layout = spec.layout or DataLayout.from_mock(base)
    if spec.layout is None and not base.data.mock:
        raise ValueError(f"{spec.base} reads real data: give its sample layout (--text-tokens, "
                         "--frames, --grid) for the FLOPs count")
    runs: List[LadderRun] = []
    for shape in ladder_shapes(spec.shape_rule, base.model, spec.n_min, spec.n_max, spec.size_by,
                               spec.num_sizes):
        cfg = derive_config(base, shape, spec.keep_parallel)
        per_token = flops_per_token(cfg, layout)
        unit = _batch_unit(cfg, spec.gpus)
        seq = padded_length(cfg, layout)  # what each sample costs the trainer (pad_to_multiple)
        for budget, tokens in _budgets(spec, shape, per_token):
            args = (per_token.non_embedding, tokens, seq, cfg.train.micro_batch_size, unit, spec.hparam_rule)
            first = run_hparams(*args)
            interval = max(1, math.ceil(first.train_iters / spec.evals_per_run))
            hp = run_hparams(*args, iters_multiple=interval)
            eval_iters = (math.ceil(spec.eval_samples / hp.global_batch_size) if spec.eval_samples
                          else spec.eval_iters)
            run_cfg = _schedule(cfg, hp, interval, eval_iters, spec.gpus)
            runs.append(LadderRun(run_name(spec.prefix, shape, budget), budget, shape, hp, interval,
                                  run_cfg, per_token, hp.tokens(seq)))
    if not runs:
        raise ValueError(f"no run left: every size's tokens per parameter lies outside {spec.tpp_range}")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("two runs share a name; give distinct budgets")
    return runs


def tokens_per_param(run: LadderRun, size_by: SizeBy) -> float:
    """``D / N`` of a run."""
    return run.tokens / run.shape.params(size_by)
