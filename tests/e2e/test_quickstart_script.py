"""``bash examples/quickstart.sh OUT --smoke``: real clips → tokenizers → pre-tokenized shards →
TP=2 AR-DF training → T2V and I2V samples → pictures and PSNRs, at the smallest setting. Then the
mask ablation (``examples/ablations/run.py --study mask --smoke``) on the same quickstart's data."""

import json
import subprocess
import sys

import av
import pytest
from PIL import Image

from conftest import REPO


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "quickstart"
    proc = subprocess.run(["bash", str(REPO / "examples" / "quickstart.sh"), str(out), "--smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    return out, proc


def test_quickstart_smoke(quickstart_run):
    out, proc = quickstart_run
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


def test_mask_ablation_smoke_reuses_the_quickstart_data(quickstart_run, tmp_path):
    quickstart, proc = quickstart_run
    assert proc.returncode == 0, "the quickstart failed (see test_quickstart_smoke)"
    shards = {p.name: p.stat().st_mtime_ns for p in (quickstart / "data").glob("shard-*.bin")}
    assert shards
    out = tmp_path / "ablations"
    run = subprocess.run([sys.executable, str(REPO / "examples" / "ablations" / "run.py"), "--study", "mask",
                          "--smoke", "--quickstart", str(quickstart), "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # The quickstart's shards were reused, not tokenized again.
    assert {p.name: p.stat().st_mtime_ns for p in (quickstart / "data").glob("shard-*.bin")} == shards
    summary = json.loads((out / "mask" / "summary.json").read_text())
    assert set(summary["arms"]) == {"official", "random_mask"}
    assert summary["arms"]["random_mask"]["overrides"] == {"ardf.mask_pattern": "random"}
    table = summary["validation_loss"]
    frames = {k for k in table["official"] if k.startswith("frame_")}
    assert len(frames) >= 2 and set(table["random_mask"]) == set(table["official"])
    assert all(0.0 < v < 20.0 for row in table.values() for v in row.values())
    assert table["official"] != table["random_mask"]            # the pattern changed the losses
    with Image.open(out / "mask" / "per_frame_validation.png") as png:
        assert png.size[0] > 600
    assert "| tube mask (official) |" in (out / "mask" / "summary.md").read_text()
    recipe = (out / "arms" / "random_mask" / "recipe.yaml").read_text()
    assert "mask_pattern: random" in recipe
