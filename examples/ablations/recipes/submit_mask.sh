#!/bin/bash
# Ablation 'mask' on SLURM: trains every arm with the same budget.
# Written by `python examples/ablations/run.py --write-recipes`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p logs
RECIPE=examples/ablations/recipes/official.yaml OUT=runs/ablations/official sbatch --job-name=ablation-official --nodes=1 examples/slurm/train_torchrun.sbatch
RECIPE=examples/ablations/recipes/random_mask.yaml OUT=runs/ablations/random_mask sbatch --job-name=ablation-random-mask --nodes=1 examples/slurm/train_torchrun.sbatch
