#!/bin/bash
# Ablation 'rho-inf' on SLURM: generates the same I2V prompts with the official arm's model at each rho_inf; set PROMPTS.
# Written by `python examples/ablations/run.py --write-recipes`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p logs
LOAD=runs/ablations/official/checkpoints PROMPTS=${PROMPTS:?a JSONL of I2V prompts} TASK=i2v OUT=runs/ablations/rho_inf/rho_0 sbatch --job-name=ablation-rho-0 --nodes=1 examples/slurm/generate_eval_torchrun.sbatch --history-mask-ratio 0
LOAD=runs/ablations/official/checkpoints PROMPTS=${PROMPTS:?a JSONL of I2V prompts} TASK=i2v OUT=runs/ablations/rho_inf/rho_0p3 sbatch --job-name=ablation-rho-0p3 --nodes=1 examples/slurm/generate_eval_torchrun.sbatch --history-mask-ratio 0.3
LOAD=runs/ablations/official/checkpoints PROMPTS=${PROMPTS:?a JSONL of I2V prompts} TASK=i2v OUT=runs/ablations/rho_inf/rho_0p5 sbatch --job-name=ablation-rho-0p5 --nodes=1 examples/slurm/generate_eval_torchrun.sbatch --history-mask-ratio 0.5
LOAD=runs/ablations/official/checkpoints PROMPTS=${PROMPTS:?a JSONL of I2V prompts} TASK=i2v OUT=runs/ablations/rho_inf/rho_0p7 sbatch --job-name=ablation-rho-0p7 --nodes=1 examples/slurm/generate_eval_torchrun.sbatch --history-mask-ratio 0.7
LOAD=runs/ablations/official/checkpoints PROMPTS=${PROMPTS:?a JSONL of I2V prompts} TASK=i2v OUT=runs/ablations/rho_inf/rho_0p9 sbatch --job-name=ablation-rho-0p9 --nodes=1 examples/slurm/generate_eval_torchrun.sbatch --history-mask-ratio 0.9
