#!/usr/bin/env bash
# The main command: real videos in, a tiny Lumos model trained with tensor parallelism (TP=2 on
# two CPU processes), generated videos out. Usage: bash examples/quickstart.sh [OUT_DIR] [--smoke]
# OUT_DIR defaults to runs/quickstart; a re-run continues where an interrupted one stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec python examples/quickstart/run_quickstart.py "$@"
