"""``python -m lumos_megatron.generate`` on CPU: a tiny trained checkpoint, an (untrained) FSQ video
tokenizer and a sentencepiece text tokenizer; T2V, T2I and I2V write MP4/GIF/PNG/JSON per prompt,
TP=2 under torchrun writes the same tokens, bad inputs behave as documented, a re-run skips
finished samples, and without tokenizer flags the checkpoint's recorded tokenizers are used."""

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import TINY_RECIPE, _free_port, run_train



def _write_dataset(root, video, text):
    """Pre-tokenized mock samples whose dataset.json names the tokenizers (as tools/pretokenize.py
    writes it): training records them in its checkpoints."""
    from lumos_megatron.config import parse_cli
    from lumos_megatron.data.indexed import ShardWriter
    from lumos_megatron.data.mock import MockVideoDataset
    from lumos_megatron.vocab import LumosVocab

    cfg = parse_cli(["--config", str(TINY_RECIPE), "model.vocab_size=66536"])
    mock = MockVideoDataset(cfg, LumosVocab(vocab_size=cfg.model.vocab_size))
    writer = ShardWriter(str(root), 0)
    for i in range(16):
        writer.add(mock[i][0], {"latent_frames": mock.frames, "latent_grid": list(mock.grid)})
    writer.finalize()
    settings = {"video_tokenizer": video, "text_tokenizer": text}
    (root / "dataset.json").write_text(json.dumps({"settings": settings, "number_tokens": [], "version": 1}))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from lumos_megatron.data.pretokenize import default_video_tokenizer
    from lumos_megatron.tokenizers.text import train_sentencepiece

    tmp = tmp_path_factory.mktemp("generate")
    captions = ["a red ball rolls on the grass", "a cat sleeps on a sofa", "waves crash on the beach"]
    text = f"sp:{train_sentencepiece(captions * 5, tmp / 'text', 300)}"
    video = default_video_tokenizer(str(tmp))
    _write_dataset(tmp / "data", video, text)
    # 65,536 text ids + the FSQ tokenizer's 1,000 codes; trained on the data above, so its
    # checkpoints record the tokenizers.
    proc = run_train(["--config", str(TINY_RECIPE), "model.vocab_size=66536", "data.mock=false",
                      "--data-path", str(tmp / "data"), "--split", "100,0,0", "--train-iters", "2",
                      "--save", str(tmp / "ckpt")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    small = run_train(["--config", str(TINY_RECIPE), "--train-iters", "1", "--save", str(tmp / "ckpt_64_codes")])
    assert small.returncode == 0, small.stderr[-3000:]
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(tmp / "cond.png")
    (tmp / "broken.png").write_bytes(b"not an image")
    return tmp, text, video


def _generate(assets, *args, load=None, nproc=1, tokenizer_flags=True):
    tmp, text, video = assets
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(_free_port())]
    flags = ["--video-tokenizer", video, "--text-tokenizer", text] if tokenizer_flags else []
    cmd = [*launcher, "-m", "lumos_megatron.generate", "--load", str(load or tmp / "ckpt"), *flags,
           "--resolution", "32x32", "--steps", "3", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LUMOS_STRICT_CPU": "1"}
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def _check_sample(directory, name, rgb_frames, task):
    info = json.loads((directory / f"{name}.json").read_text())
    assert info["task"] == task and info["rgb_frames"] == rgb_frames and info["width"] == info["height"] == 32
    tokens = info["video_tokens"]
    assert tokens[0] == 9004 and tokens[-1] == 9005 and len(tokens) == 4 + info["latent_frames"] * 24
    assert info["sampler"]["steps"] == 3 and info["prompt_ids"][0] == 0 and info["prompt_ids"][-1] == 8710
    with av.open(str(directory / f"{name}.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == rgb_frames
    with Image.open(directory / f"{name}.gif") as gif:
        assert getattr(gif, "n_frames", 1) == rgb_frames
    with Image.open(directory / f"{name}.png") as png:
        assert png.size == (32, 32)
    return info


def test_t2v_and_t2i(assets):
    tmp = assets[0]
    t2v = _generate(assets, "--task", "t2v", "--prompt", "a red ball", "--fps", "5", "--duration", "1",
                    "--out", str(tmp / "t2v"))
    assert t2v.returncode == 0, t2v.stderr[-3000:]
    assert "generate: 100%" in t2v.stderr  # tqdm over frames x steps
    info = _check_sample(tmp / "t2v", "sample_00000", 5, "t2v")
    assert info["latent_frames"] == 2 and info["sampler"]["cfg_scale"] == 15.0
    t2i = _generate(assets, "--task", "t2i", "--prompt", "a cat", "--out", str(tmp / "t2i"), "--no-progress")
    assert t2i.returncode == 0, t2i.stderr[-3000:]
    info = _check_sample(tmp / "t2i", "sample_00000", 1, "t2i")
    assert info["fps"] == info["duration"] == 1 and info["sampler"]["cfg_scale"] == 16.0
    # Tensor parallel over two ranks (rank 0 writes): the same tokens.
    tp2 = _generate(assets, "--task", "t2i", "--prompt", "a cat", "--out", str(tmp / "t2i_tp2"), "--no-progress",
                    nproc=2)
    assert tp2.returncode == 0, tp2.stderr[-3000:]
    assert _check_sample(tmp / "t2i_tp2", "sample_00000", 1, "t2i")["video_tokens"] == info["video_tokens"]


def test_i2v_prompt_file_with_bad_lines_and_rerun(assets):
    tmp = assets[0]
    lines = [{"prompt": "a red ball rolls", "image": "cond.png"},
             {"prompt": "a cat", "image": "broken.png"},
             "this line is not JSON",
             {"prompt": "waves crash", "image": str(tmp / "cond.png"), "seed": 7}]
    (tmp / "prompts.jsonl").write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    args = ["--task", "i2v", "--prompts", str(tmp / "prompts.jsonl"), "--fps", "5", "--duration", "1",
            "--batch-size", "2", "--out", str(tmp / "i2v"), "--no-progress"]
    first = _generate(assets, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.strip().splitlines()[-1]) == {"written": 2, "skipped": 2, "out": str(tmp / "i2v")}
    skipped = [json.loads(line) for line in (tmp / "i2v" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(s["index"] for s in skipped) == [1, 2]
    assert any("broken.png" in s["reason"] for s in skipped)
    info = _check_sample(tmp / "i2v", "sample_00003", 5, "i2v")
    assert info["seed"] == 7
    given = info["video_tokens"][3:27]  # the conditioning frame opens the video
    assert given[0] == 8197 and given[-1] == 8196
    stamp = (tmp / "i2v" / "sample_00000.mp4").stat().st_mtime_ns
    again = _generate(assets, *args)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["written"] == 0
    assert (tmp / "i2v" / "sample_00000.mp4").stat().st_mtime_ns == stamp


def _one_error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lumos_megatron.generate: error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_bad_inputs(assets):
    tmp = assets[0]
    missing = _generate(assets, "--prompt", "x", "--out", str(tmp / "bad1"), load=tmp / "nowhere")
    assert "nowhere" in _one_error_line(missing)
    codebook = _generate(assets, "--prompt", "x", "--out", str(tmp / "bad2"), load=tmp / "ckpt_64_codes")
    assert "1000 codes" in _one_error_line(codebook)
    grid = _generate(assets, "--prompt", "x", "--resolution", "40x32", "--out", str(tmp / "bad3"))
    assert "multiples of 32" in _one_error_line(grid)
    image = _generate(assets, "--task", "i2v", "--prompt", "x", "--image", str(tmp / "broken.png"),
                      "--out", str(tmp / "bad4"))
    assert "broken.png" in _one_error_line(image)


def test_tokenizers_default_to_the_checkpoints(assets):
    tmp, text, video = assets
    recorded = yaml.safe_load(next((tmp / "ckpt").glob("iter_*/run_config.yaml")).read_text())["data"]
    assert (recorded["video_tokenizer"], recorded["text_tokenizer"]) == (video, text)
    proc = _generate(assets, "--task", "t2i", "--prompt", "a cat", "--out", str(tmp / "t2i_recorded"),
                     "--no-progress", tokenizer_flags=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = _check_sample(tmp / "t2i_recorded", "sample_00000", 1, "t2i")
    assert info["video_tokenizer"] == video and info["text_tokenizer"] == text
    # A checkpoint trained on mock data records none: one line naming the flag.
    none = _generate(assets, "--prompt", "x", "--out", str(tmp / "bad5"), load=tmp / "ckpt_64_codes",
                     tokenizer_flags=False)
    assert "no --video-tokenizer given" in _one_error_line(none)
