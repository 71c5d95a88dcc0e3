"""``bash examples/quickstart.sh OUT --smoke``: real clips → tokenizers → pre-tokenized shards →
TP=2 AR-DF training → T2V and I2V samples → pictures and PSNRs, at the smallest setting."""

import json
import subprocess

import av
from PIL import Image

from conftest import REPO


def test_quickstart_smoke(tmp_path):
    out = tmp_path / "quickstart"
    proc = subprocess.run(["bash", str(REPO / "examples" / "quickstart.sh"), str(out), "--smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for task in ("t2v", "i2v"):
        with av.open(str(out / "samples" / task / "sample_00000.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) >= 5
        for suffix in (".gif", ".png", ".json"):
            assert (out / "samples" / task / f"sample_00000{suffix}").is_file()
        with Image.open(out / f"side_by_side_{task}.gif") as gif:
            assert gif.n_frames >= 5
    with Image.open(out / "loss_curves.png") as png:
        assert png.size[0] > 300
    psnr = summary["psnr_db"]
    assert set(psnr) == {"tokenizer_reconstruction (ceiling)", "t2v generated", "i2v generated",
                         "random tokens (floor)"}
    assert all(5.0 < v < 60.0 for v in psnr.values())
    loss = summary["training_loss"]
    assert loss["last_10pct_mean"] < loss["first_10pct_mean"]
    assert "PSNR vs the source clip" in proc.stdout and str(out / "loss_curves.png") in proc.stdout
    assert (out / "tensorboard").is_dir() and (out / "checkpoints" / "latest_checkpointed_iteration.txt").is_file()
