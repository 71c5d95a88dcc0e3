#!/bin/bash
# Ablation 'rope' on SLURM: trains every arm with the same budget.
# Written by `python examples/ablations/run.py --write-recipes`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p logs
RECIPE=examples/ablations/recipes/official.yaml OUT=runs/ablations/official sbatch --job-name=ablation-official --nodes=1 examples/slurm/train_torchrun.sbatch
RECIPE=examples/ablations/recipes/mm_rope_unscaled.yaml OUT=runs/ablations/mm_rope_unscaled sbatch --job-name=ablation-mm-rope-unscaled --nodes=1 examples/slurm/train_torchrun.sbatch
RECIPE=examples/ablations/recipes/rope_3d_contiguous.yaml OUT=runs/ablations/rope_3d_contiguous sbatch --job-name=ablation-rope-3d-contiguous --nodes=1 examples/slurm/train_torchrun.sbatch
RECIPE=examples/ablations/recipes/rope_1d.yaml OUT=runs/ablations/rope_1d sbatch --job-name=ablation-rope-1d --nodes=1 examples/slurm/train_torchrun.sbatch
