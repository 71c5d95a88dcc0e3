"""What a planned ladder becomes on disk and on the cluster.

Layout written by ``write_ladder`` under the output directory ``OUT``::

    OUT/ladder.json                 manifest: the rules, the data layout, one entry per run
    OUT/submit.sh                   every run's sbatch command; it changes to the checkout first
    OUT/<run>/recipe.yaml           the run's full, validated recipe
    OUT/<run>/ladder_run.json       the run's manifest entry (what lumos-collect reads)
    OUT/<run>/checkpoints/ tensorboard/ logs/    written by the launcher (its OUT=OUT/<run>)

Each sbatch command goes through the existing launchers (``examples/slurm/train_torchrun.sbatch``
or ``train_srun.sbatch``) with ``RECIPE`` and ``OUT`` in the environment, exactly as their headers
document, so checkpoints, resume, requeue and the exit-duration logic are theirs. The launchers
live in a lumos_megatron checkout (a wheel does not hold them): ``submit.sh`` changes to the
checkout it was written for (``LaunchSpec.repo_dir``; ``REPO_DIR`` in the environment wins).
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

from lumos_megatron.units import si
from lumos_megatron.config import dump_config
from lumos_megatron.scaling.ladder.hparam_rule import RULE_CITATION, RULE_NAME
from lumos_megatron.scaling.ladder.plan import LadderRun, LadderSpec, tokens_per_param
from lumos_megatron.training.flops import DataLayout
from lumos_megatron.training.gpu_peaks import GPU_PEAKS, compute_dtype, find_gpu

LAUNCHERS = {"torchrun": "examples/slurm/train_torchrun.sbatch", "srun": "examples/slurm/train_srun.sbatch"}
RECIPE_FILE = "recipe.yaml"
RUN_FILE = "ladder_run.json"
MANIFEST_FILE = "ladder.json"


@dataclass(frozen=True)
class LaunchSpec:
    """Where the ladder goes and how its runs are launched and costed."""

    out: Path
    launcher: str = "torchrun"
    gpu: str = "h100"
    """GPU whose dense peak (``training.gpu_peaks``, in the dtype of each run's precision) the
    GPU-hour estimate uses."""
    mfu: float = 0.35
    """Assumed model-FLOPs utilisation of the estimate."""
    max_job_hours: float = 24.0
    """Cap of a job's --time (longer runs continue in requeued jobs)."""
    python: str = "python"
    """Interpreter of the local training command."""
    repo_dir: Optional[Path] = None
    """The lumos_megatron checkout whose ``examples/slurm`` launchers submit.sh uses (None: the
    script asks for ``REPO_DIR`` in the environment)."""

    def peak_tflops(self, precision: str = "bf16") -> float:
        """The GPU's dense peak for a run of ``precision`` (bf16, or fp32 without TF32: a plain
        fp32 run is never rated against the bf16 peak); ValueError for an unknown GPU or launcher."""
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {self.launcher!r}; choose {', '.join(LAUNCHERS)}")
        if not 0 < self.mfu <= 1:
            raise ValueError(f"MFU {self.mfu} must lie in (0, 1]")
        known = find_gpu(self.gpu)
        if known is None:
            raise ValueError(f"unknown GPU {self.gpu!r}; the peak table knows "
                             f"{', '.join(g.key for g in GPU_PEAKS)} (or h100, a100)")
        return known.peak(compute_dtype(precision))


def gpu_hours(flops: float, peak_tflops: float, mfu: float) -> float:
    """GPU-hours of ``flops`` model FLOPs at ``mfu`` of a ``peak_tflops`` GPU."""
    return flops / (peak_tflops * 1e12 * mfu) / 3600.0


def run_dir(launch: LaunchSpec, run: LadderRun) -> Path:
    """The run's output directory (the launcher's OUT)."""
    return (launch.out / run.name).resolve()


def job_time(hours: float, launch: LaunchSpec) -> str:
    """sbatch --time: twice the estimate plus 30 min, at least 1 h, at most ``max_job_hours``."""
    minutes = min(launch.max_job_hours * 60, max(60.0, 2 * hours * 60 + 30))
    minutes = int(math.ceil(minutes))
    return f"{minutes // 60}:{minutes % 60:02d}:00"


def sbatch_command(run: LadderRun, spec: LadderSpec, launch: LaunchSpec) -> str:
    """The run's submission, from the repository root, through an existing launcher."""
    out = run_dir(launch, run)
    wall = gpu_hours(run.flops, launch.peak_tflops(run.cfg.train.precision), launch.mfu) / spec.gpus
    env = [f"RECIPE={shlex.quote(str(out / RECIPE_FILE))}", f"OUT={shlex.quote(str(out))}",
           f"GPUS_PER_NODE={spec.gpus_per_node}"]
    opts = [f"--job-name={run.name}", f"--nodes={spec.nodes}", f"--gpus-per-node={spec.gpus_per_node}"]
    if launch.launcher == "srun":  # one task per GPU
        opts.append(f"--ntasks-per-node={spec.gpus_per_node}")
    opts.append(f"--time={job_time(wall, launch)}")
    return " ".join(env + ["sbatch"] + opts + [LAUNCHERS[launch.launcher]])


def local_command(run: LadderRun, launch: LaunchSpec) -> List[str]:
    """The run as one local process (CPU or one GPU), TensorBoard under the run directory."""
    out = run_dir(launch, run)
    return [launch.python, "-m", "lumos_megatron.train", "--config", str(out / RECIPE_FILE),
            "--tensorboard-dir", str(out / "tensorboard")]


def run_entry(run: LadderRun, spec: LadderSpec, launch: LaunchSpec, layout: DataLayout) -> Dict:
    """The run's manifest entry."""
    hp = run.hparams
    return {
        "name": run.name, "budget": run.budget, "recipe": str(run_dir(launch, run) / RECIPE_FILE),
        "run_dir": str(run_dir(launch, run)), "shape": asdict(run.shape),
        "params": run.shape.total_params, "non_embedding_params": run.shape.non_embedding_params,
        "size_by": spec.size_by, "tokens": run.tokens,
        "tokens_per_param": tokens_per_param(run, spec.size_by),
        "flops": run.flops, "budget_flops": run.budget_flops, "flops_6nd": run.flops_6nd(spec.size_by),
        "flops_per_token": asdict(run.per_token),
        "train_iters": hp.train_iters, "global_batch_size": hp.global_batch_size,
        "micro_batch_size": hp.micro_batch_size, "lr": hp.lr, "min_lr": hp.min_lr,
        "warmup_iters": hp.warmup_iters, "eval_interval": run.eval_interval,
        "gpu_hours": gpu_hours(run.flops, launch.peak_tflops(run.cfg.train.precision), launch.mfu),
        "layout": asdict(layout), "sbatch": sbatch_command(run, spec, launch),
        "local_command": local_command(run, launch),
    }


def manifest(runs: List[LadderRun], spec: LadderSpec, launch: LaunchSpec, layout: DataLayout) -> Dict:
    """The whole ``ladder.json``."""
    return {
        "base": str(spec.base), "overrides": [f"{k}={v}" for k, v in spec.overrides],
        "size_by": spec.size_by, "shape_rule": asdict(spec.shape_rule),
        "hparam_rule": {"name": RULE_NAME, "citation": RULE_CITATION, **asdict(spec.hparam_rule)},
        "layout": asdict(layout), "nodes": spec.nodes, "gpus_per_node": spec.gpus_per_node,
        "launcher": launch.launcher, "gpu": launch.gpu, "mfu": launch.mfu,
        "runs": [run_entry(r, spec, launch, layout) for r in runs],
    }


def markdown_table(runs: List[LadderRun], spec: LadderSpec, launch: LaunchSpec) -> str:
    """The ladder as a markdown table, with estimated GPU-hours at the assumed MFU."""
    n_name = "N non-emb" if spec.size_by == "non_embedding" else "N total"
    lines = [f"| run | {n_name} | N total | D | D/N | C reached (model) | C (6ND) | iters | batch | LR | "
             f"{launch.gpu.upper()} GPU-h |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total = 0.0
    peaks = set()
    for r in runs:
        peak = launch.peak_tflops(r.cfg.train.precision)
        peaks.add(f"{peak:g} TFLOP/s dense {compute_dtype(r.cfg.train.precision)} peak")
        hours = gpu_hours(r.flops, peak, launch.mfu)
        total += hours
        lines.append(f"| {r.name} | {si(r.shape.params(spec.size_by))} | {si(r.shape.total_params)} | "
                     f"{si(r.tokens)} | {tokens_per_param(r, spec.size_by):.3g} | {r.flops:.3g} | "
                     f"{r.flops_6nd(spec.size_by):.3g} | {r.hparams.train_iters} | "
                     f"{r.hparams.global_batch_size} | {r.hparams.lr:.3g} | {hours:.3g} |")
    lines.append(f"\n{len(runs)} runs, {total:.3g} GPU-hours on {launch.gpu.upper()} at {launch.mfu:.0%} MFU "
                 f"({', '.join(sorted(peaks))}).")
    return "\n".join(lines)


def _recipe_text(run: LadderRun, spec: LadderSpec) -> str:
    s, hp = run.shape, run.hparams
    header = [
        f"# Scaling-ladder run {run.name} ({run.budget}), derived from {spec.base} "
        "by lumos-ladder.",
        f"# Shape: width {s.width}, depth {s.depth}, {s.heads} heads of {s.head_dim}, {s.groups} KV groups, "
        f"ffn {s.ffn}: {s.total_params} parameters ({s.non_embedding_params} non-embedding).",
        f"# Batch {hp.global_batch_size} x {run.cfg.data.seq_length} tokens, LR {hp.lr:.4g} -> {hp.min_lr:.4g} "
        f"(cosine), warmup {hp.warmup_iters}: {RULE_NAME}.",
    ]
    return "\n".join(header) + "\n" + dump_config(run.cfg)


def find_checkout(start: Path) -> Optional[Path]:
    """The lumos_megatron checkout holding ``start`` (or an editable install's source tree): the
    first of ``start`` and its parents with ``examples/slurm/_lib.sh``; None if there is none."""
    for directory in [start.resolve(), *start.resolve().parents]:
        if (directory / "examples" / "slurm" / "_lib.sh").is_file():
            return directory
    return None


def submit_script(commands: List[str], repo_dir: Optional[Path]) -> str:
    """``submit.sh``: change to the checkout (``REPO_DIR`` wins), make ``logs/``, run the sbatch lines."""
    where = (f"REPO_DIR=${{REPO_DIR:-{shlex.quote(str(repo_dir))}}}" if repo_dir is not None else
             'REPO_DIR=${REPO_DIR:?"set REPO_DIR to a lumos_megatron checkout (it holds examples/slurm)"}')
    return ("#!/bin/bash\n# Submit every ladder run through the launchers of a lumos_megatron checkout.\n"
            f"set -euo pipefail\n{where}\ncd \"$REPO_DIR\"\nmkdir -p logs\n" + "\n".join(commands) + "\n")


def write_ladder(runs: List[LadderRun], spec: LadderSpec, launch: LaunchSpec, layout: DataLayout) -> Path:
    """Write recipes, per-run entries, the manifest and submit.sh; returns the manifest path."""
    data = manifest(runs, spec, launch, layout)
    launch.out.mkdir(parents=True, exist_ok=True)
    for run, entry in zip(runs, data["runs"]):
        directory = run_dir(launch, run)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / RECIPE_FILE).write_text(_recipe_text(run, spec))
        (directory / RUN_FILE).write_text(json.dumps(entry, indent=2) + "\n")
    path = launch.out / MANIFEST_FILE
    path.write_text(json.dumps(data, indent=2) + "\n")
    submit = launch.out / "submit.sh"
    submit.write_text(submit_script([e["sbatch"] for e in data["runs"]], launch.repo_dir))
    submit.chmod(0o755)
    return path
