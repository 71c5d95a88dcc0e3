"""One finished (or stopped) training run → the rows a scaling-law fit reads.

A run directory is what a ladder run writes (``scaling.ladder.launch``; also the launchers'
``OUT``): TensorBoard event files under ``RUN/tensorboard/`` (else anywhere under ``RUN``) and
its configuration, read from the first of

1. ``RUN/checkpoints/iter_*/run_config.yaml`` of the latest checkpoint (the trainer's resolved
   configuration, command-line overrides included), else of the newest ``iter_*`` directory;
2. ``RUN/run_config.yaml``;
3. ``RUN/recipe.yaml`` (what ``make_ladder`` writes; the launchers add only --save/--load/
   --tensorboard-dir/--exit-duration-in-mins, which change neither model nor data).

``RUN/ladder_run.json`` (``make_ladder``), when present, gives the sample layout of the FLOPs
count (otherwise the configuration's mock layout, for mock data, or the caller's layout), the
ladder's size measure and the run's budget and planned iterations.

Size: ``params`` is the ladder's own measure, ``size_by`` (``non_embedding`` or ``total``; the
caller's choice, default ``total``, for a run that no ladder planned), so a fit of ``params``
fits the law in the terms the ladder was laid out in; ``non_embedding_params`` and
``total_params`` are always there too.

Budget: the ladder's label (``C=1e+18`` or ``tpp=20``) on the row of the run's last evaluation,
when the run reached its planned iterations; rows of intermediate evaluations (``--per-eval``) and
of runs that stopped early have none, since their compute is not the budget's. ``flops`` is the
compute each row actually reached (our FLOPs model x the tokens processed so far).

Loss: ``lm loss validation`` (loss_source ``validation``): ``loss_final`` is the last evaluation,
``loss_smoothed`` the mean of the last ``smooth_last`` evaluations. Without any evaluation the
training ``lm loss`` is the fallback (loss_source ``train``): the last iteration's value, and the
mean over the last ``max(smooth_last, 5%)`` iterations. Tokens are the per-step ``tokens``
scalar summed (else consumed samples x ``data.seq_length``); supervised tokens the summed
``loss-tokens`` (empty when the run predates that scalar). When a resumed run repeats steps, the
last value written for a step wins.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lumos_megatron.checkpoint.directory import CheckpointError
from lumos_megatron.config.stored import read_run_config
from lumos_megatron.config import ConfigError, LumosConfig, load_recipe
from lumos_megatron.training.flops import DataLayout, flops_per_token
from lumos_megatron.models.parameter_counts import parameter_counts
from lumos_megatron.scaling.ladder.shapes import SIZE_BY

VALIDATION_TAG = "lm loss validation"
TRAIN_TAG = "lm loss"
SAMPLES_TAG = "lm loss vs samples"
TOKENS_TAG = "tokens"
LOSS_TOKENS_TAG = "loss-tokens"
COLUMNS = ("name", "params", "size_by", "non_embedding_params", "total_params", "tokens", "loss",
           "loss_source", "flops", "budget", "loss_final", "loss_smoothed", "supervised_tokens", "iteration",
           "train_iters", "evaluations", "run", "run_dir")

Series = Dict[int, float]


class RunCollectError(ValueError):
    """A run directory that gives no row; the message says why."""


def read_tensorboard(run_dir: Path) -> Dict[str, Series]:
    """``{tag: {step: value}}`` of every scalar under the run's TensorBoard directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = run_dir / "tensorboard" if (run_dir / "tensorboard").is_dir() else run_dir
    dirs = sorted({p.parent for p in root.rglob("events.out.tfevents.*")})
    if not dirs:
        raise RunCollectError(f"no TensorBoard event files under {root}")
    latest: Dict[str, Dict[int, Tuple[float, float]]] = {}
    for directory in dirs:
        acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series = latest.setdefault(tag, {})
            for e in acc.Scalars(tag):
                if e.step not in series or e.wall_time >= series[e.step][0]:
                    series[e.step] = (e.wall_time, e.value)
    return {tag: {step: v for step, (_, v) in sorted(s.items())} for tag, s in latest.items()}


def run_directory_config(run_dir: Path) -> Tuple[LumosConfig, Path]:
    """(configuration, the file it came from) of a run directory, in the order of the module
    docstring (a checkpoint's own ``run_config.yaml`` is read by ``checkpoint.read_run_config``)."""
    from lumos_megatron.checkpoint import directory as ckpt_dir

    checkpoints: List[Path] = []
    root = run_dir / "checkpoints"
    if root.is_dir():
        latest = ckpt_dir.resolve_load(root)
        if latest is not None:
            checkpoints.append(latest)
        checkpoints += [ckpt_dir.checkpoint_dir(root, i) for i in sorted(ckpt_dir.list_checkpoints(root), reverse=True)]
    for directory in checkpoints:
        if (directory / ckpt_dir.RUN_CONFIG_FILE).is_file():
            try:
                return read_run_config(directory), directory / ckpt_dir.RUN_CONFIG_FILE
            except CheckpointError as err:
                raise RunCollectError(str(err)) from None
    for path in (run_dir / "run_config.yaml", run_dir / "recipe.yaml"):
        if path.is_file():
            try:
                return load_recipe(path), path
            except ConfigError as err:
                raise RunCollectError(f"{path}: {err}") from None
    raise RunCollectError(f"no run configuration (checkpoints/iter_*/run_config.yaml, run_config.yaml "
                          f"or recipe.yaml) in {run_dir}")


def ladder_entry(run_dir: Path) -> Optional[Dict]:
    """The run's ``ladder_run.json`` (what ``make_ladder`` planned for it), or None."""
    entry = run_dir / "ladder_run.json"
    if not entry.is_file():
        return None
    try:
        return json.loads(entry.read_text())
    except (OSError, ValueError) as err:
        raise RunCollectError(f"{entry}: unreadable ({err})") from None


def run_layout(entry: Optional[Dict], cfg: LumosConfig, layout: Optional[DataLayout]) -> Optional[DataLayout]:
    """The sample layout of the FLOPs count: the ladder entry's, the caller's, or the mock one."""
    if entry is not None and "layout" in entry:
        data = entry["layout"]
        return DataLayout(data["text_tokens"], data["frames"], tuple(data["grid"]), data.get("seq_length"))
    if layout is not None:
        return layout
    return DataLayout.from_mock(cfg) if cfg.data.mock else None


def _cumulative(series: Series) -> Series:
    out, total = {}, 0.0
    for step, value in sorted(series.items()):
        total += value
        out[step] = total
    return out


def _through(cumulative: Series, step: int) -> Optional[float]:
    """The cumulative value at the last step <= ``step``."""
    below = [s for s in cumulative if s <= step]
    return cumulative[max(below)] if below else None


def _tokens_through(scalars: Dict[str, Series], cfg: LumosConfig) -> Tuple[Series, Series]:
    """(tokens, supervised tokens) processed through each iteration."""
    if scalars.get(TOKENS_TAG):
        tokens = _cumulative(scalars[TOKENS_TAG])
    else:  # before the per-step tokens scalar: consumed samples (paired in order) x seq_length
        steps, samples = sorted(scalars[TRAIN_TAG]), sorted(scalars.get(SAMPLES_TAG, {}))
        if len(samples) == len(steps):
            tokens = {i: float(n * cfg.data.seq_length) for i, n in zip(steps, samples)}
        else:
            tokens = {i: float(i * cfg.train.global_batch_size * cfg.data.seq_length) for i in steps}
    return tokens, _cumulative(scalars.get(LOSS_TOKENS_TAG, {}))


@dataclass(frozen=True)
class LossPoint:
    """One measured loss of a run."""

    iteration: int
    final: float
    smoothed: float
    source: str
    evaluations: int


def loss_points(scalars: Dict[str, Series], smooth_last: int = 3) -> List[LossPoint]:
    """Every evaluation point (validation), or one training-loss point when there is none."""
    val = [(s, v) for s, v in scalars.get(VALIDATION_TAG, {}).items() if math.isfinite(v)]
    if val:
        return [LossPoint(step, value, sum(v for _, v in val[max(0, k + 1 - smooth_last): k + 1])
                          / len(val[max(0, k + 1 - smooth_last): k + 1]), "validation", k + 1)
                for k, (step, value) in enumerate(val)]
    train = [(s, v) for s, v in scalars.get(TRAIN_TAG, {}).items() if math.isfinite(v)]
    if not train:
        raise RunCollectError(f"no finite {VALIDATION_TAG!r} or {TRAIN_TAG!r} scalar")
    last = train[-max(smooth_last, math.ceil(0.05 * len(train))):]
    return [LossPoint(train[-1][0], train[-1][1], sum(v for _, v in last) / len(last), "train", 0)]


def collect_run(run_dir: Path, smooth_last: int = 3, per_eval: bool = False, loss: str = "final",
                layout: Optional[DataLayout] = None, size_by: Optional[str] = None) -> List[Dict]:
    """Rows (dicts keyed by ``COLUMNS``) of one run: the last loss point, or every evaluation point
    with ``per_eval``. ``loss`` picks ``loss_final`` or ``loss_smoothed`` as ``loss``; ``params``
    is the ``size_by`` count (default: the ladder's measure, else total). RunCollectError if the
    run is unusable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunCollectError(f"{run_dir}: no such run directory")
    cfg, _ = run_directory_config(run_dir)
    entry = ladder_entry(run_dir)
    measure = size_by or (entry or {}).get("size_by") or "total"
    if measure not in SIZE_BY:
        raise RunCollectError(f"unknown size measure {measure!r}; choose {' or '.join(SIZE_BY)}")
    scalars = read_tensorboard(run_dir)
    if TRAIN_TAG not in scalars:
        raise RunCollectError(f"no {TRAIN_TAG!r} scalar in {run_dir} (did training start?)")
    counts = parameter_counts(cfg.model)
    data_layout = run_layout(entry, cfg, layout)
    per_token = flops_per_token(cfg, data_layout).total if data_layout is not None else None
    tokens, supervised = _tokens_through(scalars, cfg)
    points = loss_points(scalars, smooth_last)
    planned = (entry or {}).get("train_iters") or cfg.train.train_iters
    finished = max(scalars[TRAIN_TAG]) >= planned if planned else False
    rows = []
    for point in points if per_eval else points[-1:]:
        processed = _through(tokens, point.iteration) or 0.0
        sup = _through(supervised, point.iteration)
        at_budget = finished and point is points[-1] and point.iteration >= planned
        rows.append({
            "name": f"{run_dir.name}@{point.iteration}" if per_eval else run_dir.name,
            "params": counts.non_embedding if measure == "non_embedding" else counts.total, "size_by": measure,
            "non_embedding_params": counts.non_embedding, "total_params": counts.total,
            "tokens": int(processed), "loss": point.final if loss == "final" else point.smoothed,
            "loss_source": point.source, "flops": "" if per_token is None else per_token * processed,
            "budget": (entry or {}).get("budget", "") if at_budget else "",
            "loss_final": point.final, "loss_smoothed": point.smoothed,
            "supervised_tokens": "" if sup is None else int(sup), "iteration": point.iteration,
            "train_iters": planned or "", "evaluations": point.evaluations, "run": run_dir.name,
            "run_dir": str(run_dir),
        })
    return rows
