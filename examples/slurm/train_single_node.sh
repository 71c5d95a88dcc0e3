#!/bin/bash
# Train a Lumos model on one machine with torchrun, without SLURM (a workstation or a cloud VM).
#
# Usage, from the repository root:
#   RECIPE=examples/recipes/lumos_1b_stage1-image-256p_8gpu_h100_bf16.yaml \
#       bash examples/slurm/train_single_node.sh [ARGS...]
#
# ARGS go to the trainer last (dotted overrides or Megatron flags). Environment, all optional:
#   RECIPE              YAML recipe (default: the 1B stage-1 recipe)
#   OUT                 run directory (default: runs/<recipe name>); it holds checkpoints/,
#                       tensorboard/ and logs/
#   GPUS_PER_NODE       workers (default: the number of visible GPUs, else 8). The recipe's
#                       TP x PP x CP must divide it.
#   SAVE_INTERVAL       iterations between checkpoints (default 500)
#   EXIT_DURATION_MINS  stop, save and exit after N minutes (default: not set)
#   PYTHON, TORCHRUN    interpreter and launcher with lumos_megatron installed
#
# --save and --load name the same directory, so running the script again resumes from the
# newest checkpoint.
#
# Graceful stop: `kill -USR1 <pid of this script>` or `kill -TERM <pid>`. The script passes the
# signal to the training workers; they save a checkpoint and exit 0. torchrun itself runs with
# SIGUSR1 ignored, because it has no handler for it and would die and take the workers down
# mid-save. Ctrl-C asks torchrun to stop the workers.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO_DIR"

RECIPE=${RECIPE:-examples/recipes/lumos_1b_stage1-image-256p_8gpu_h100_bf16.yaml}
OUT=${OUT:-$REPO_DIR/runs/$(basename "$RECIPE" .yaml)}
SAVE_INTERVAL=${SAVE_INTERVAL:-500}
PYTHON=${PYTHON:-python}
TORCHRUN=${TORCHRUN:-torchrun}
if [[ -z ${GPUS_PER_NODE:-} ]]; then
    GPUS_PER_NODE=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)
    ((GPUS_PER_NODE > 0)) || GPUS_PER_NODE=8
fi
if [[ ! -f $RECIPE ]]; then
    echo "lumos: recipe $RECIPE not found (set RECIPE to a file under examples/recipes/)" >&2
    exit 2
fi

# Megatron's TP/SP overlap relies on kernels running in issue order: one hardware queue.
export CUDA_DEVICE_MAX_CONNECTIONS=1
# A failed NCCL collective aborts the process instead of leaving every rank hung until timeout.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
# The machine's cores split over the workers (torchrun would otherwise set 1 thread per worker).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((($(nproc) + GPUS_PER_NODE - 1) / GPUS_PER_NODE))}

CKPT_DIR=$OUT/checkpoints
TB_DIR=$OUT/tensorboard
LOG_DIR=$OUT/logs
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$CKPT_DIR" "$TB_DIR" "$LOG_DIR"
cp "$RECIPE" "$LOG_DIR/$STAMP-$(basename "$RECIPE")"

TRAIN_ARGS=(
    --config "$RECIPE"
    --save "$CKPT_DIR" --load "$CKPT_DIR" --save-interval "$SAVE_INTERVAL"
    --tensorboard-dir "$TB_DIR"
)
if [[ -n ${EXIT_DURATION_MINS:-} ]]; then
    TRAIN_ARGS+=(--exit-duration-in-mins "$EXIT_DURATION_MINS")
fi
TRAIN_ARGS+=("$@")
echo "lumos: $GPUS_PER_NODE worker(s); outputs under $OUT; graceful stop: kill -USR1 $$"

# torchrun starts with SIGUSR1 ignored (see the header). A background job of a non-interactive
# shell also ignores SIGINT, so this script forwards Ctrl-C to it as SIGTERM.
trap '' USR1
"$TORCHRUN" --standalone --nnodes 1 --nproc-per-node "$GPUS_PER_NODE" \
    --log-dir "$LOG_DIR/torchrun-$STAMP" --tee 3 \
    -m lumos_megatron.train "${TRAIN_ARGS[@]}" &
TORCHRUN_PID=$!

to_workers() {
    echo "lumos: SIG$1: asking the workers to save and exit" >&2
    # The workers are torchrun's direct children.
    pkill "-$1" -P "$TORCHRUN_PID" || true
}
trap 'to_workers USR1' USR1
trap 'to_workers TERM' TERM
trap 'kill -TERM "$TORCHRUN_PID" 2>/dev/null || true' INT

# `wait` returns early (status > 128) whenever a trapped signal arrives; keep waiting while
# torchrun is still alive.
while :; do
    rc=0
    wait "$TORCHRUN_PID" || rc=$?
    if ((rc > 128)); then
        if kill -0 "$TORCHRUN_PID" 2>/dev/null; then
            continue
        fi
        # Interrupted just as torchrun ended: its own status is still to be collected (127 means
        # the status above was already torchrun's, e.g. it was killed by a signal).
        again=0
        wait "$TORCHRUN_PID" 2>/dev/null || again=$?
        ((again == 127)) || rc=$again
    fi
    exit "$rc"
done
