"""A diverging run stops at the first NaN/Inf loss with status 3 and one error line, and saves
nothing (a NaN checkpoint would overwrite good ones under keep_last)."""

from conftest import TINY_RECIPE, run_train
from lumos_megatron.checkpoint.directory import list_checkpoints


def test_nonfinite_loss_stops_with_status_3_and_saves_nothing(tmp_path):
    save = tmp_path / "ckpt"
    # An absurd learning rate: the first update blows the weights up, the second loss is NaN.
    proc = run_train(["--config", str(TINY_RECIPE), "--train-iters", "5", "train.lr=1e30",
                      "train.min_lr=1e30", "--save", str(save)])
    assert proc.returncode == 3, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lumos_megatron.train: error")]
    assert len(errors) == 1 and "NaN/Inf at iteration 2; stopping without saving" in errors[0]
    assert "iteration        3/" not in proc.stdout
    assert list_checkpoints(save) == []
