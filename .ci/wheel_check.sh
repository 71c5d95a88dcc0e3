#!/usr/bin/env bash
# CI's wheel job: build the wheel, install it into a fresh virtual environment (torch pinned to the
# CPU build) and use it from a directory outside the source tree: every command's --help and
# --version, then a tiny train -> export -> import -> load -> generate round trip
# (.ci/wheel_round_trip.py). Usage: bash .ci/wheel_check.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK/dist" "$WORK/run"
echo "wheel check in $WORK"
python -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/dist" .
python -m venv "$WORK/venv"
VENV="$WORK/venv/bin"
"$VENV/pip" install -q torch==2.13.0
"$VENV/pip" install -q "$WORK"/dist/lumos_megatron-*.whl
cd "$WORK/run"  # outside the source tree: nothing may read it
"$VENV/python" - "$SRC" <<'PY'
import sys, lumos_megatron, pathlib
src, where = pathlib.Path(sys.argv[1]).resolve(), pathlib.Path(lumos_megatron.__file__).resolve()
assert src not in where.parents, f"lumos_megatron imported from the source tree: {where}"
print(f"lumos_megatron {lumos_megatron.__version__} from {where.parent}")
PY
for command in lumos-train lumos-generate lumos-evaluate lumos-convert lumos-inspect lumos-pretokenize \
               lumos-train-video-tokenizer lumos-plan lumos-ladder lumos-collect lumos-fit; do
    "$VENV/$command" --help > /dev/null
    "$VENV/$command" --version
done
cp "$SRC/.ci/wheel_round_trip.py" "$WORK/run/"
OMP_NUM_THREADS=2 "$VENV/python" wheel_round_trip.py "$VENV"
echo "wheel check passed"
