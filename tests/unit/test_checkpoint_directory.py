"""Checkpoint directory convention, atomic publish, keep-last pruning and resolution of --load
(pure Python, no megatron); shard-file integrity on a real torch_dist (DCP) checkpoint."""

import os
import warnings

import pytest

from lumos_megatron.checkpoint.directory import (
    LATEST_FILE,
    CheckpointError,
    checkpoint_dir,
    iteration_dir_name,
    list_checkpoints,
    prepare_temporary,
    prune,
    publish,
    read_latest,
    resolve_load,
    temporary_dir,
    write_latest,
)


def _fake_checkpoint(root, iteration, payload="x"):
    """A published checkpoint directory with one file, as save_checkpoint leaves it."""
    tmp = prepare_temporary(root, iteration)
    (tmp / "shard.distcp").write_text(payload)
    publish(tmp, checkpoint_dir(root, iteration))
    write_latest(root, iteration)


def test_megatron_directory_names():
    assert iteration_dir_name(100) == "iter_0000100"
    assert iteration_dir_name(12345678) == "iter_12345678"
    tmp = temporary_dir("/s", 5)  # hidden, beside the final name: same filesystem, atomic rename
    assert tmp.name.startswith(".") and tmp.parent == checkpoint_dir("/s", 5).parent
    with pytest.raises(ValueError):
        iteration_dir_name(-1)


def test_latest_file_is_replaced_atomically(tmp_path):
    assert read_latest(tmp_path) is None
    write_latest(tmp_path, 7)
    write_latest(tmp_path, 12)
    assert (tmp_path / LATEST_FILE).read_text() == "12\n"
    assert read_latest(tmp_path) == 12
    # The temporary file of the replace never survives it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST_FILE]


def test_bad_latest_file_is_named(tmp_path):
    (tmp_path / LATEST_FILE).write_text("release-candidate")
    with pytest.raises(CheckpointError, match=LATEST_FILE):
        read_latest(tmp_path)


def test_killed_save_leaves_last_good_checkpoint(tmp_path):
    _fake_checkpoint(tmp_path, 10, "good")
    # A save of iteration 20 killed before its publish: shards only in the temporary directory.
    tmp = prepare_temporary(tmp_path, 20)
    (tmp / "shard.distcp").write_text("half")
    assert list_checkpoints(tmp_path) == [10]
    assert resolve_load(tmp_path) == checkpoint_dir(tmp_path, 10)
    assert (resolve_load(tmp_path) / "shard.distcp").read_text() == "good"
    # The next save of 20 starts from an empty temporary directory.
    assert list(prepare_temporary(tmp_path, 20).iterdir()) == []


def test_publish_replaces_a_checkpoint_of_the_same_iteration(tmp_path):
    _fake_checkpoint(tmp_path, 5, "old")
    _fake_checkpoint(tmp_path, 5, "new")
    assert (checkpoint_dir(tmp_path, 5) / "shard.distcp").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_0000005", LATEST_FILE]


def test_keep_last_prunes_oldest_and_never_the_protected(tmp_path):
    for it in (2, 4, 6, 8):
        _fake_checkpoint(tmp_path, it)
    assert prune(tmp_path, keep_last=0) == []  # 0 keeps all
    assert prune(tmp_path, keep_last=2, protect=8) == [2, 4]
    assert list_checkpoints(tmp_path) == [6, 8]
    # The checkpoint `latest` names survives even when it is not among the newest.
    _fake_checkpoint(tmp_path, 10)
    write_latest(tmp_path, 6)
    assert prune(tmp_path, keep_last=1, protect=10) == [8]
    assert list_checkpoints(tmp_path) == [6, 10]
    with pytest.raises(ValueError):
        prune(tmp_path, keep_last=-1)


def test_list_ignores_temporaries_files_and_other_names(tmp_path):
    _fake_checkpoint(tmp_path, 3)
    prepare_temporary(tmp_path, 4)
    (tmp_path / "iter_0000009").write_text("a file, not a checkpoint")
    (tmp_path / "iter_12").mkdir()  # not Megatron's 7-digit name
    assert list_checkpoints(tmp_path) == [3]
    assert list_checkpoints(tmp_path / "missing") == []


def test_resolve_load(tmp_path):
    # Nothing to resume (missing or empty directory): start from scratch, as Megatron does.
    assert resolve_load(tmp_path / "missing") is None
    assert resolve_load(tmp_path) is None
    _fake_checkpoint(tmp_path, 4)
    _fake_checkpoint(tmp_path, 8)
    assert resolve_load(tmp_path) == checkpoint_dir(tmp_path, 8)
    assert resolve_load(tmp_path, step=4) == checkpoint_dir(tmp_path, 4)
    with pytest.raises(CheckpointError, match=r"iter_0000005 does not exist \(checkpoints under .*: 4, 8\)"):
        resolve_load(tmp_path, step=5)
    write_latest(tmp_path, 12)
    with pytest.raises(CheckpointError, match=r"names iteration 12, but .*iter_0000012 does not exist"):
        resolve_load(tmp_path)


def test_truncated_or_missing_shard_is_named(tmp_path):
    import torch
    import torch.distributed.checkpoint as dcp

    from lumos_megatron.checkpoint.integrity import expected_shard_sizes, verify_shard_files

    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"w": torch.arange(1000.0), "b": torch.ones(10)},
                 storage_writer=dcp.FileSystemWriter(str(tmp_path)), no_dist=True)
    sizes = expected_shard_sizes(tmp_path)
    assert sizes and all(os.path.getsize(tmp_path / name) >= n for name, n in sizes.items())
    verify_shard_files(tmp_path)  # intact: no error
    shard = tmp_path / sorted(sizes)[0]
    with open(shard, "r+b") as f:
        f.truncate(sizes[shard.name] - 1)
    with pytest.raises(CheckpointError, match=f"checkpoint shard {shard} is truncated"):
        verify_shard_files(tmp_path)
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"checkpoint shard {shard} is missing"):
        verify_shard_files(tmp_path)
    (tmp_path / ".metadata").unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        verify_shard_files(tmp_path)


def test_prune_removes_leftovers_of_killed_saves(tmp_path):
    from lumos_megatron.checkpoint.directory import leftover_dirs

    _fake_checkpoint(tmp_path, 10, "good")
    (prepare_temporary(tmp_path, 20) / "shard.distcp").write_text("half")  # killed before publish
    (tmp_path / ".iter_0000010.old").mkdir()  # killed between the two renames of a re-save
    (tmp_path / ".iter_12.tmp").mkdir()  # not a name a save writes: left alone
    assert [p.name for p in leftover_dirs(tmp_path)] == [".iter_0000010.old", ".iter_0000020.tmp"]
    _fake_checkpoint(tmp_path, 30)
    assert prune(tmp_path, keep_last=0, protect=30) == []
    assert leftover_dirs(tmp_path) == [] and not temporary_dir(tmp_path, 20).exists()
    assert (tmp_path / ".iter_12.tmp").is_dir() and list_checkpoints(tmp_path) == [10, 30]
