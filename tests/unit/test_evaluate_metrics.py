"""Offline quality metrics (``lumos_megatron.evaluation_metrics``) against hand-computed values, and
``python -m lumos_megatron.evaluate`` on a small fabricated generated directory (an untrained FSQ
video tokenizer, an I2V sample with its source clip, a T2V and a T2I sample, a broken JSON) with a
pre-tokenized reference dataset."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from lumos_megatron.evaluation_metrics import (
    codebook_usage,
    psnr,
    ssim,
    temporal_flicker,
    token_histogram_divergence,
)
from lumos_megatron.evaluation_metrics.generated_set import (
    EvaluationInputError,
    read_sources,
    window_indices,
)


def _image(seed=0, shape=(24, 20, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ------------------------------------------------------------------ PSNR / SSIM
def test_psnr_of_identical_videos_is_infinite_and_of_known_noise_exact():
    a = _image().astype(np.float64) * (250 / 255)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 5) == pytest.approx(10 * math.log10(255 ** 2 / 25), abs=1e-12)
    # ±3 noise of random sign on a [T, H, W, C] clip: MSE 9 whatever the signs.
    signs = np.where(np.random.default_rng(1).random((3, 8, 8, 3)) < 0.5, -3.0, 3.0)
    base = np.full((3, 8, 8, 3), 100.0)
    assert psnr(base, base + signs) == pytest.approx(10 * math.log10(255 ** 2 / 9), abs=1e-12)
    assert psnr(base, base + signs, data_range=1.0) == pytest.approx(10 * math.log10(1 / 9), abs=1e-12)
    # torch and numpy, uint8 and float, video and picture are one thing.
    pic = _image()
    assert psnr(torch.from_numpy(pic), pic.astype(np.float32)) == math.inf
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(pic, pic[:, :10])
    with pytest.raises(ValueError, match="channels last"):
        psnr(pic[..., :2], pic[..., :2])


def test_ssim_identical_is_one_and_constant_pictures_follow_the_luminance_term():
    pic = _image(shape=(2, 16, 16, 3))
    assert ssim(pic, pic) == pytest.approx(1.0, abs=1e-12)
    assert ssim(pic, pic, channels="rgb") == pytest.approx(1.0, abs=1e-12)
    # Constant pictures: every variance is 0, so SSIM = (2 a b + C1) / (a² + b² + C1).
    c1 = (0.01 * 255) ** 2
    a, b = np.full((16, 16, 1), 40.0), np.full((16, 16, 1), 90.0)
    assert ssim(a, b) == pytest.approx((2 * 40 * 90 + c1) / (40 ** 2 + 90 ** 2 + c1), abs=1e-9)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(pic[:, :10], pic[:, :10])


def _ssim_by_windows(x, y, size=11, sigma=1.5, data_range=255.0):
    """Wang et al.'s definition written out window by window (the reference for the fast filter)."""
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cov = (w * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_the_definition_window_by_window():
    a = _image(2, (15, 14, 3))
    b = np.clip(a.astype(np.int16) + np.random.default_rng(3).integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    luma = lambda v: v.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    assert ssim(a, b) == pytest.approx(_ssim_by_windows(luma(a), luma(b)), abs=1e-10)
    per_channel = np.mean([_ssim_by_windows(a[..., c].astype(float), b[..., c].astype(float)) for c in range(3)])
    assert ssim(a, b, channels="rgb") == pytest.approx(per_channel, abs=1e-10)
    assert ssim(a, b) < 1.0


# ------------------------------------------------------------------ temporal flicker
def test_temporal_flicker_of_constant_and_alternating_videos():
    assert temporal_flicker(np.full((5, 8, 8, 3), 77, dtype=np.uint8)) == 1.0
    black_white = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    black_white[1::2] = 255
    assert temporal_flicker(black_white) == 0.0
    alternating = np.zeros((6, 8, 8, 3), dtype=np.uint8)
    alternating[1::2] = 51  # every pair differs by 51 = 255 / 5
    assert temporal_flicker(torch.from_numpy(alternating)) == pytest.approx(0.8, abs=1e-12)
    # One frame changes in half its pixels by 255 among 3 frames: pair MAEs 127.5 and 127.5.
    half = np.zeros((3, 4, 4, 1), dtype=np.uint8)
    half[1, :2] = 255
    assert temporal_flicker(half) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_flicker(np.zeros((1, 8, 8, 3), dtype=np.uint8))


# ------------------------------------------------------------------ codebook usage / divergence
def test_codebook_usage_by_hand():
    usage = codebook_usage(torch.tensor([[0, 0], [1, 1]]), 4)
    assert (usage.tokens, usage.codes_used, usage.usage) == (4, 2, 0.5)
    assert usage.entropy_bits == pytest.approx(1.0) and usage.perplexity == pytest.approx(2.0)
    assert usage.normalized_entropy == pytest.approx(0.5)
    one = codebook_usage(np.array([3, 3, 3]), 8)
    assert (one.codes_used, one.entropy_bits, one.perplexity) == (1, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        codebook_usage([0, 4], 4)


def test_jensen_shannon_divergence_by_hand():
    assert token_histogram_divergence([3, 1, 0], [6, 2, 0]) == pytest.approx(0.0, abs=1e-15)
    assert token_histogram_divergence([5, 0], [0, 2]) == pytest.approx(1.0)
    # M = (0.75, 0.25): H(M) - (H(P) + H(Q)) / 2 = 0.811278 - 0.5
    h = lambda *p: -sum(x * math.log2(x) for x in p if x)  # noqa: E731
    assert token_histogram_divergence([1, 1], [1, 0]) == pytest.approx(h(0.75, 0.25) - 0.5, abs=1e-12)
    # Smoothing 1: P = (2/3, 1/3), Q = (1/3, 2/3), M uniform: 1 - H(2/3, 1/3).
    assert token_histogram_divergence([1, 0], [0, 1], smoothing=1.0) == pytest.approx(1 - h(2 / 3, 1 / 3), abs=1e-12)
    with pytest.raises(ValueError, match="same codebook"):
        token_histogram_divergence([1, 2], [1, 2, 3])


def test_aggregates_leave_infinite_psnr_out_of_the_mean():
    from lumos_megatron.evaluation_metrics.report import summarize

    assert summarize([30.0, math.inf, 40.0]) == {"mean": 35.0, "count": 3, "min": 30.0, "max": 40.0, "infinite": 1}
    assert summarize([math.inf]) == {"mean": None, "count": 1, "infinite": 1}


# ------------------------------------------------------------------ sources and windows
def test_source_file_formats_and_frame_windows(tmp_path):
    lines = ['{"prompt": "a", "image": "a.png", "reference_video": "clips/a.mp4"}', "",
             "not json", '{"prompt": "b"}', '{"sample": "sample_00009", "video": "/abs/b.mp4", "start": "centre"}',
             '{"prompt": "c", "reference_video": "c.mp4", "reference_start": 1.5}']
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    sources, ignored = read_sources(tmp_path / "s.jsonl")
    assert ignored == [3]
    assert sources["sample_00000"].path == str(tmp_path / "clips/a.mp4") and sources["sample_00000"].start == 0.0
    assert sources["sample_00009"].path == "/abs/b.mp4" and sources["sample_00009"].start == "centre"
    assert sources["sample_00004"].start == 1.5 and set(sources) == {"sample_00000", "sample_00004", "sample_00009"}
    (tmp_path / "bad.jsonl").write_text('{"sample": "sample_00000"}\n')
    with pytest.raises(EvaluationInputError, match="bad.jsonl:1"):
        read_sources(tmp_path / "bad.jsonl")
    # 25 fps source, 12 fps output from 0 s: the frame holding each output frame's centre.
    assert window_indices(100, 25.0, 12.0, 5, 0.0).tolist() == [1, 3, 5, 7, 9]
    assert window_indices(10, 10.0, 10.0, 4, "centre").tolist() == [3, 4, 5, 6]
    assert window_indices(10, 10.0, 10.0, 4, 0.8).tolist() == [8, 9]  # past the end: dropped


# ------------------------------------------------------------------ the CLI on a generated directory
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from lumos_megatron.data.indexed import ShardWriter
    from lumos_megatron.evaluation_metrics.generated_set import read_video_file
    from lumos_megatron.inference.video_writer import write_gif, write_mp4, write_png
    from lumos_megatron.tokenizers.video import FSQVideoAutoencoder, FSQVideoTokenizer, save_fsq_checkpoint
    from lumos_megatron.vocab import LumosVocab, build_video_sample

    tmp = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    spec = "fsq:" + str(save_fsq_checkpoint(tmp / "fsq.pt", FSQVideoAutoencoder()))
    tokenizer, vocab = FSQVideoTokenizer.from_checkpoint(tmp / "fsq.pt"), LumosVocab()
    t, y, x = np.meshgrid(np.arange(5), np.arange(32), np.arange(32), indexing="ij")
    clip = np.stack([(x * 8 + t * 10) % 256, y * 8, (x + y + t * 20) % 256], -1).astype(np.uint8)
    write_mp4(clip, tmp / "src.mp4", 5)
    source = read_video_file(tmp / "src.mp4")  # what the evaluator will read (after H.264)
    write_png(source[0], tmp / "cond.png")
    out, rng = tmp / "samples", np.random.default_rng(0)
    out.mkdir()
    samples = [("i2v", tokenizer.encode(source)), ("t2v", torch.from_numpy(rng.integers(0, 1000, (2, 4, 4)))),
               ("t2i", torch.from_numpy(rng.integers(0, 1000, (1, 4, 4))))]
    for index, (task, codes) in enumerate(samples):
        fps = 1 if task == "t2i" else 5
        tokens = build_video_sample([5, 6], codes, 1, fps, vocab)[0].tolist()
        video = tokens[tokens.index(vocab.video_start): tokens.index(vocab.video_end) + 1]
        frames = tokenizer.decode(codes).numpy()
        base = out / f"sample_{index:05d}"
        write_mp4(frames, base.with_suffix(".mp4"), fps)
        write_gif(frames, base.with_suffix(".gif"), fps)
        write_png(frames[0], base.with_suffix(".png"))
        info = {"prompt": "p", "image": str(tmp / "cond.png") if task == "i2v" else None, "task": task,
                "width": 32, "height": 32, "fps": fps, "duration": 1, "rgb_frames": len(frames),
                "sampler": {"num_visual_codes": 1000}, "video_tokenizer": spec, "video_tokens": video}
        base.with_suffix(".json").write_text(json.dumps(info))
    (out / "sample_00003.json").write_text("{not json")
    writer = ShardWriter(str(tmp / "data"), 0)
    for seed in range(4):
        codes = torch.from_numpy(np.random.default_rng(10 + seed).integers(0, 1000, (2, 4, 4)))
        writer.add(build_video_sample([7, 8], codes, 1, 5, vocab)[0], {"latent_frames": 2, "latent_grid": [4, 4]})
    writer.finalize()
    (tmp / "data" / "dataset.json").write_text(json.dumps({"settings": {"vocab_size": vocab.vocab_size,
                                                                        "video_tokenizer": spec}}))
    (tmp / "prompts.jsonl").write_text(json.dumps({"prompt": "p", "image": "cond.png", "reference_video": "src.mp4"})
                                       + "\n" + json.dumps({"prompt": "q"}) + "\n")
    return tmp


def test_evaluate_cli_writes_metrics(generated, capsys):
    from lumos_megatron.evaluate import main

    tmp = generated
    assert main([str(tmp / "samples"), "--reference", str(tmp / "data"), "--sources", str(tmp / "prompts.jsonl"),
                 "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((tmp / "samples" / "metrics.json").read_text())
    assert line["samples"] == metrics["samples"] == 3 and line["out"] == str(tmp / "samples" / "metrics.json")
    assert metrics["unreadable_samples"][0]["file"] == "sample_00003.json"
    assert metrics["tasks"] == {"i2v": 1, "t2i": 1, "t2v": 1}
    i2v, t2v, t2i = metrics["per_sample"]
    assert i2v["frames_from"] == "tokens" and i2v["frames"] == 5 and i2v["source"]["frames_compared"] == 5
    m = i2v["metrics"]
    # The "generated" video is the tokenizer's reconstruction of the source: the ceiling is reached.
    assert m["psnr"] == m["tokenizer_psnr"] and m["ssim"] == m["tokenizer_ssim"] and 0 < m["psnr"] < 100
    assert 0.0 <= m["temporal_flicker"] <= 1.0 and "conditioning_psnr" in m and -1 <= m["ssim"] <= 1
    assert i2v["generated_codes"] == 16  # the conditioning frame is given, not generated
    assert t2v["skipped"]["psnr"].startswith("no source clip") and "temporal_flicker" in t2v["metrics"]
    assert t2i["frames"] == 1 and t2i["skipped"]["temporal_flicker"].startswith("one frame")
    assert metrics["aggregates"]["psnr"]["count"] == 1 and metrics["aggregates"]["temporal_flicker"]["count"] == 2
    assert metrics["skipped"]["psnr"]["count"] == 2
    generated_usage = metrics["codebook"]["generated"]
    assert generated_usage["tokens"] == 16 + 32 + 16 and generated_usage["codebook_size"] == 1000
    histogram = metrics["token_histogram"]
    assert 0.0 < histogram["js_divergence_bits"] <= 1.0 and histogram["reference_samples"] == 4
    assert histogram["noise_floor_samples"] == 2 and 0.0 <= histogram["noise_floor_bits"] <= 1.0
    assert metrics["codebook"]["reference"]["tokens"] == 4 * 32 and metrics["notes"] == []
    assert set(metrics["definitions"]) >= {"psnr", "ssim", "temporal_flicker", "js_divergence_bits"}


def test_evaluate_from_the_video_files(generated, capsys):
    from lumos_megatron.evaluate import main

    tmp = generated
    sources = tmp / "sources.jsonl"
    sources.write_text(json.dumps({"sample": "sample_00000", "video": "src.mp4"}) + "\n")
    assert main([str(tmp / "samples"), "--video-tokenizer", "none", "--sources", str(sources),
                 "--json-out", str(tmp / "files.json"), "--no-progress"]) == 0
    metrics = json.loads((tmp / "files.json").read_text())
    i2v, t2v, t2i = metrics["per_sample"]
    assert i2v["frames_from"] == "sample_00000.mp4" and t2i["frames_from"] == "sample_00002.png"
    assert "psnr" in i2v["metrics"] and i2v["skipped"]["tokenizer_psnr"].startswith("no video tokenizer")
    assert metrics["token_histogram"] == {"skipped": "no --reference DATA given"}
    assert metrics["codebook"]["generated"]["codebook_size"] == 1000  # from the recorded sampler settings


def test_evaluate_bad_input_exits_2(generated, tmp_path, capsys):
    from lumos_megatron.evaluate import main

    tmp = generated
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no sample_*.json" in capsys.readouterr().err
    assert main([str(tmp / "samples"), "--video-tokenizer", f"fsq:{tmp_path / 'missing.pt'}"]) == 2
    assert "--video-tokenizer" in capsys.readouterr().err
    assert main([str(tmp / "samples"), "--reference", str(tmp_path)]) == 2
    assert "--reference" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "lumos_megatron.evaluate", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=120)
    errors = [x for x in proc.stderr.splitlines() if x.startswith("lumos_megatron.evaluate: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
