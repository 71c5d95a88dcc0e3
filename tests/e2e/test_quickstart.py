"""The README quickstart at tiny size: trains with AR-DF, prints the Megatron-style lines, a
summary and the TensorBoard path, and writes `lm loss`, `loss/frame_k` and `ardf/mask-ratio`."""

import re

from conftest import TINY_RECIPE, read_scalars, run_train


def test_quickstart_trains_and_reports(tmp_path):
    tb = tmp_path / "tensorboard"
    proc = run_train(["--config", str(TINY_RECIPE), "--train-iters", "3", "--tensorboard-dir", str(tb)])
    assert proc.returncode == 0, proc.stderr[-5000:]
    lines = [line for line in proc.stdout.splitlines() if "iteration" in line and "lm loss:" in line]
    assert len(lines) == 3
    assert re.search(r"iteration\s+3/\s+3 \| consumed samples:\s+24 \|", lines[-1])
    assert "training summary: 3 iterations" in proc.stdout
    assert f"TensorBoard logs: {tb}" in proc.stdout
    losses = [v for _, v in read_scalars(tb, "lm loss")]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert len(read_scalars(tb, "learning-rate")) == 3 and len(read_scalars(tb, "grad-norm")) == 3
    # AR-DF by default: per-latent-frame visual loss (2 mock frames) and the realized mask ratio.
    frame_losses = [read_scalars(tb, f"loss/frame_{k}") for k in (0, 1)]
    assert all(len(f) == 3 for f in frame_losses)
    ratios = [v for _, v in read_scalars(tb, "ardf/mask-ratio")]
    assert len(ratios) == 3 and all(0.7 * 0.9 < r <= 1.0 for r in ratios)
    assert "mask ratio:" in lines[0]
    # Throughput from the explicit FLOPs model, MFU against the measured CPU GEMM rate, ETA.
    assert all(re.search(r"TFLOP/s/GPU\): [0-9.]+ \| tokens/s/GPU: [0-9.]+ \| MFU: [0-9.]+%", l)
               for l in lines)
    assert "ETA:" in lines[-1]
    assert len(read_scalars(tb, "throughput")) == 3 and len(read_scalars(tb, "iteration-time")) == 3


def test_bad_override_exits_2_with_message():
    proc = run_train(["--config", str(TINY_RECIPE), "train.no_such_key=1"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("lumos_megatron.train: error: unknown config key")
