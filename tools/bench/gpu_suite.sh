#!/usr/bin/env bash
# GPU validation in one prepared call: install, CUDA kernels, GPU tests, then the attention, loss,
# training, decode and generation benchmarks, with one results file naming the device and versions.
#
#   bash tools/bench/gpu_suite.sh [--dry-run] [--out DIR]
#
# On the GPU machine (Python 3.12, its own CUDA torch, no package registry) the wheels torch does
# not bring (megatron-core, safetensors, sentencepiece, tokenizers, av, DALI for its CUDA, ...) are
# carried in .whl/ and installed into /tmp/site without touching torch; the project is then built
# with --no-deps so that pip never re-resolves torch, and its CUDA kernels compile against that
# torch. --dry-run runs the same steps on a CPU at tiny sizes, without installing (the tests run
# it so that this script does not rot). Each step has a time limit; the whole GPU run is sized
# for <= 8 minutes. Results: DIR/gpu_suite_results.md (tables) and DIR/gpu_suite.log (everything).
set -uo pipefail
cd "$(dirname "$0")/../.."

DRY_RUN=0
OUT_DIR="${OUT:-gpu_suite_out}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    *) echo "gpu_suite.sh: unknown argument $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/gpu_suite_results.md"
LOG="$OUT_DIR/gpu_suite.log"
: > "$RESULTS"
: > "$LOG"
export PYTHONUNBUFFERED=1
FAILED=0

# step NAME LIMIT_SECONDS COMMAND...: runs the command, appends its output to the log and, for
# benchmarks, its printed tables to the results file, with status and seconds.
step() {
  local name="$1" limit="$2"; shift 2
  local start end status tmp
  tmp="$(mktemp)"
  start=$(date +%s)
  timeout "$limit" "$@" > "$tmp" 2>&1
  status=$?
  end=$(date +%s)
  { echo "===== $name: $*"; cat "$tmp"; } >> "$LOG"
  {
    echo "## $name"
    echo
    echo "\`$*\` — status $status, $((end - start)) s"
    echo
    grep -E '^\|' "$tmp" || tail -n 5 "$tmp" | sed 's/^/    /'
    echo
  } >> "$RESULTS"
  rm -f "$tmp"
  if [ "$status" -ne 0 ]; then FAILED=1; fi
  echo "gpu_suite: $name: status $status in $((end - start)) s"
}

{
  echo "# GPU suite results ($(date -u +%Y-%m-%d), $([ $DRY_RUN = 1 ] && echo 'dry run on CPU' || echo 'GPU run'))"
  echo
  python - <<'EOF'
import platform
import torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
try:
    import megatron.core
    mcore = megatron.core.__version__
except Exception as err:  # not installed yet on a bare machine
    mcore = f"not importable ({type(err).__name__})"
print(f"- device: {name}")
print(f"- python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, megatron-core {mcore}")
EOF
  echo
} >> "$RESULTS" 2>> "$LOG"

if [ "$DRY_RUN" = 0 ]; then
  if [ -d .whl ]; then
    step "install carried wheels" 180 python3 -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  # --no-deps: the machine's CUDA torch stays as it is; the build compiles the CUDA kernels.
  step "install lumos_megatron (csrc with CUDA)" 300 python3 -m pip install -q --no-build-isolation \
    --no-deps --no-index -e .
  DEVICE=cuda
else
  DEVICE=cpu
fi

step "extension kernels" 60 python3 -c "from lumos_megatron.ops import load_extension; e = load_extension(); \
print('extension', 'missing' if e is None else ('CUDA kernels' if e.has_cuda() else 'CPU kernels only'))"
step "GPU tests (tests/gpu)" 300 python3 -m pytest -q -p no:cacheprovider tests/gpu

if [ "$DRY_RUN" = 1 ]; then
  step "attention benchmark" 120 python3 tools/bench/attention.py --device cpu --quick
  step "loss benchmark" 120 python3 tools/bench/loss.py --device cpu --quick
  step "decode benchmark" 120 python3 tools/bench/decode.py --device cpu --quick
  step "generation benchmark" 240 python3 tools/bench/generate.py --small --batches 1 --repeats 1 --steps 2 --frames 1
  step "training throughput" 180 python3 -m lumos_megatron.train --config examples/recipes/tiny_cpu.yaml \
    --train-iters 2 --log-interval 1
else
  step "attention benchmark" 150 python3 tools/bench/attention.py --device cuda
  step "loss benchmark" 120 python3 tools/bench/loss.py --device cuda --tokens 4096 28672
  step "decode benchmark" 90 python3 tools/bench/decode.py --device cuda
  step "generation benchmark" 150 python3 tools/bench/generate.py --device cuda --dtype bf16
  # 1B-shaped model on one GPU: 7 latent frames of 48x84 codes (the 384p, 28.9k-token layout),
  # bf16, full recompute; tokens/s, TFLOP/s and MFU come from the trainer's log lines.
  step "training throughput (1B, 28.9k-token samples, bf16)" 150 python3 -m lumos_megatron.train \
    --config examples/recipes/lumos_1b_stage2-joint-384p_8gpu_h100_bf16.yaml \
    --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1 --context-parallel-size 1 \
    --micro-batch-size 1 --global-batch-size 1 --train-iters 6 --log-interval 1 \
    parallel.sequence_parallel=false parallel.use_distributed_optimizer=false train.eval_interval=0 \
    data.mock=true data.image_data_path=[] data.mock_image=false data.mock_frames=7 "data.mock_grid=[48,84]" \
    data.seq_length=29696 model.recompute_granularity=full checkpoint.save=null checkpoint.load=null
fi

echo "gpu_suite: results in $RESULTS, log in $LOG"
exit "$FAILED"
