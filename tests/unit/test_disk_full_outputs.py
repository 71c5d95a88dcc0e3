"""A full disk in the tools that write large outputs: import-hf, export-hf, pre-tokenization and a
generated sample each end with one line ("no space left on DIR: need about X GB, Y GB free"),
status 2, and no partial output (an injected ENOSPC in the writer)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from lumos_megatron.conversion.cli import convert_main

_ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full(*args, **kwargs):
    raise _ENOSPC


def _one_error_line(capsys, prefix):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(prefix) and "no space left on " in err[0] and "GB free" in err[0], err[0]
    return err[0]


@pytest.fixture()
def official(tmp_path):
    from official_format import random_official_state_dict, tiny_official_config, write_official_checkpoint

    config = tiny_official_config()
    state = random_official_state_dict(config, seed=0, include_vqmodel=False)
    return write_official_checkpoint(tmp_path / "hf", config, state)


def test_import_and_export_on_a_full_disk(tmp_path, capsys, monkeypatch, official):
    from lumos_megatron.conversion import safetensors_io, torch_dist_io

    assert convert_main(["import-hf", "--hf-dir", str(official), "--out", str(tmp_path / "ok"), "--no-progress"]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(torch_dist_io.TorchDistWriter, "write", _full)
        capsys.readouterr()
        assert convert_main(["import-hf", "--hf-dir", str(official), "--out", str(tmp_path / "ckpt"),
                             "--no-progress"]) == 2
    line = _one_error_line(capsys, "lumos-convert import-hf: error: no space left on ")
    assert "need about 0.07 GB" in line  # the source safetensors
    assert not (tmp_path / "ckpt").exists() and not list(tmp_path.glob(".ckpt*"))
    with monkeypatch.context() as patch:
        patch.setattr(safetensors_io.ShardedSafetensorsWriter, "_open_shard", _full)
        capsys.readouterr()
        assert convert_main(["export-hf", "--load", str(tmp_path / "ok"), "--out", str(tmp_path / "back"),
                             "--no-progress"]) == 2
    _one_error_line(capsys, "lumos-convert export-hf: error: no space left on ")
    assert not (tmp_path / "back").exists() and not list(tmp_path.glob(".back*"))


def test_a_sample_written_to_a_full_disk_leaves_no_partial_files(tmp_path, monkeypatch):
    from lumos_megatron.inference import run as run_module
    from lumos_megatron.inference import video_writer

    base = tmp_path / "sample_0"

    def half_written_gif(frames, path, fps):
        Path(path).write_bytes(b"GIF89a partial")
        raise _ENOSPC

    monkeypatch.setattr(video_writer, "write_gif", half_written_gif)
    base.with_suffix(".mp4").write_bytes(b"mp4")  # written before the disk filled up
    with pytest.raises(run_module.NoSpaceForOutput) as err:
        try:
            video_writer.write_gif(np.zeros((1, 4, 4, 3), np.uint8), base.with_suffix(".gif"), 8)
        except OSError as failure:
            run_module._raise_if_no_space(failure, base, 10 ** 9)
    assert str(err.value).startswith(f"no space left on {tmp_path}: need about 1.00 GB")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())
    run_module._raise_if_no_space(OSError(errno.EIO, "I/O error"), base, 1)  # not a full disk: left to the caller


def test_pretokenize_on_a_full_disk(tmp_path, capsys, monkeypatch):
    from lumos_megatron.cli import pretokenize as cli
    import lumos_megatron.data.pretokenize as pretokenize

    out = tmp_path / "out"
    out.mkdir()
    (out / "shard_00000.bin").write_bytes(b"x" * 1000)  # a complete shard from before
    monkeypatch.setattr(pretokenize, "pretokenize", _full)
    capsys.readouterr()
    assert cli.main(["--manifest", str(tmp_path / "m.csv"), "--output", str(out), "--text-tokenizer", "t",
                     "--video-tokenizer", "v"]) == 2
    line = _one_error_line(capsys, f"lumos-pretokenize: error: no space left on {out}: need about 0.00 GB")
    assert "the partial shard was removed" in line
