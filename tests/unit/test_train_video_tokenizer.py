"""lumos-train-video-tokenizer (tools/train_video_tokenizer.py): a short CPU run improves held-out
PSNR, resumes exactly, its checkpoint loads with load_video_tokenizer, and bad settings fail with one
line and status 2."""

import pytest
import torch

from conftest import read_scalars
from lumos_megatron.cli import train_video_tokenizer as tool
from lumos_megatron.tokenizers.video import FSQVideoTokenizer, load_fsq_checkpoint, load_video_tokenizer

# Tiny widths, 32-px crops of 5 frames (2 latent frames) and few decoded frames per clip keep the
# whole file to a few seconds of CPU.
TINY_ARGS = ["--crop", "32", "--frames", "5", "--short-side", "40", "--max-clip-frames", "12",
             "--channels", "8", "16", "16", "--norm-groups", "4", "--batch-size", "4", "--lr", "3e-3",
             "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsq_train")
    summary = tool.train(["--output", str(out), "--steps", "60", "--eval-interval", "20",
                          "--tensorboard-dir", str(out / "tb"), *TINY_ARGS])
    return out, summary


def test_short_run_improves_heldout_psnr_and_logs(trained):
    out, summary = trained
    assert summary["final_psnr"] > summary["initial_psnr"]
    psnr = read_scalars(out / "tb", "psnr/heldout")
    assert [step for step, _ in psnr] == [0, 20, 40, 60]
    assert psnr[0][1] == pytest.approx(summary["initial_psnr"], abs=1e-4)
    assert psnr[-1][1] == pytest.approx(summary["final_psnr"], abs=1e-4)
    assert len(read_scalars(out / "tb", "loss")) == 60
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "tb"]     # no temporary file left


def test_checkpoint_loads_and_encodes_a_clip(trained):
    out, _ = trained
    tok = load_video_tokenizer(str(out / "last.pt"))
    assert isinstance(tok, FSQVideoTokenizer) and tok.codebook_size == 1000
    clip = tool.load_clip(tool.bundled_clips()[0], short_side=48, max_frames=9)[:, :48, :48]
    codes = tok.encode(clip)
    assert codes.shape == (3, 6, 6)
    assert 0 <= int(codes.min()) and int(codes.max()) < 1000
    assert tok.decode(codes).shape == (9, 48, 48, 3)
    assert load_fsq_checkpoint(out / "last.pt")["step"] == 60


def test_resume_continues_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    tool.train(["--output", str(straight), "--steps", "12", "--eval-interval", "6", *TINY_ARGS])
    assert tool.main(["--output", str(resumed), "--steps", "6", "--eval-interval", "6", *TINY_ARGS]) == 0
    summary = tool.train(["--output", str(resumed), "--steps", "12", "--eval-interval", "6", "--resume",
                          *TINY_ARGS])
    a, b = load_fsq_checkpoint(straight / "last.pt"), load_fsq_checkpoint(resumed / "last.pt")
    assert a["step"] == b["step"] == summary["steps"] == 12
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_bad_arguments_fail_clearly(tmp_path, capsys):
    with pytest.raises(tool.TokenizerTrainingError, match="multiple of 8"):
        tool.train(["--output", str(tmp_path), "--crop", "30"])
    with pytest.raises(tool.TokenizerTrainingError, match="not found"):
        tool.train(["--output", str(tmp_path), "--clips", str(tmp_path / "none.mp4"), *TINY_ARGS])
    capsys.readouterr()
    assert tool.main(["--output", str(tmp_path), "--crop", "30"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["lumos-train-video-tokenizer: error: --crop must be a positive multiple of 8, got 30"]
    assert tool.main(["--output", str(tmp_path), "--clips", str(tmp_path / "none.mp4"), *TINY_ARGS]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("lumos-train-video-tokenizer: error: video file(s) not found")
    assert not list(tmp_path.iterdir())  # nothing written


def test_fps_and_resolution_prepare_frames_as_pretokenization_does():
    """--fps/--resolution give the frames lumos-pretokenize would tokenize (same rate, same crop)."""
    from lumos_megatron.data.video.media import load_media, probe

    path = next(p for p in tool.bundled_clips() if p.name == "carphone_pristine.mp4")
    info = probe(str(path))
    clip = tool.load_clip(path, short_side=0, max_frames=64, fps=4, resolution=64).numpy()
    media = load_media(str(path), fps=4, duration=info.num_frames / info.fps, resolution=64, backend="pyav")
    assert clip.shape == media.frames.shape == (16, 64, 64, 3)
    assert (clip == media.frames).all()
    assert tool.load_clip(path, short_side=0, max_frames=5, fps=4, resolution=64).shape[0] == 5


def test_too_few_frames_at_the_training_rate_fail_clearly(tmp_path):
    with pytest.raises(tool.TokenizerTrainingError, match=r"frames at --fps 1, fewer than --frames 5"):
        tool.train(["--output", str(tmp_path), "--fps", "1", *TINY_ARGS])
    with pytest.raises(tool.TokenizerTrainingError, match="--fps must be positive"):
        tool.train(["--output", str(tmp_path), "--fps", "0", *TINY_ARGS])
