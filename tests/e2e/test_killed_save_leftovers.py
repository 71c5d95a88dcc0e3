"""A save killed before its publish leaves a temporary directory; the run's next successful save
removes it (and any half-replaced copy), so killed saves do not pile up on disk."""

from conftest import TINY_RECIPE, run_train
from lumos_megatron.checkpoint.directory import leftover_dirs, list_checkpoints, prepare_temporary


def test_next_successful_save_removes_leftovers_of_killed_saves(tmp_path):
    save = tmp_path / "ckpt"
    # What a job killed during the save of iteration 1 leaves: shards in the temporary directory.
    (prepare_temporary(save, 1) / "__0_0.distcp").write_bytes(b"half a shard")
    (save / ".iter_0000001.old").mkdir()
    assert len(leftover_dirs(save)) == 2
    proc = run_train(["--config", str(TINY_RECIPE), "--train-iters", "2", "--save", str(save),
                      "--save-interval", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list_checkpoints(save) == [2]
    assert leftover_dirs(save) == []
    assert sorted(p.name for p in save.iterdir() if p.name.startswith(".")) == []
