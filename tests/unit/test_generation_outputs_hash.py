"""A re-run of ``lumos_megatron.generate`` into an existing ``--out`` (W3.4).

Every sample JSON records its determinants and their sha256. A re-run with the same settings skips
the finished samples (resume); one whose settings would give other tokens for a sample of the same
name is refused with one stderr line and exit status 2, unless ``--overwrite`` regenerates it.
Runs in-process on a tiny imported checkpoint with a 64-code FSQ tokenizer (a few seconds).
"""

import json

import pytest
import torch

from official_format import imported_tiny_checkpoint
from lumos_megatron.inference.run import changed_determinants, determinants_hash, stored_sample_problem


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from lumos_megatron.tokenizers.text import train_sentencepiece
    from lumos_megatron.tokenizers.video.fsq_model import FSQVideoAutoencoder, FSQVideoConfig
    from lumos_megatron.tokenizers.video.fsq_tokenizer import save_fsq_checkpoint

    tmp = tmp_path_factory.mktemp("outputs_hash")
    checkpoint = imported_tiny_checkpoint(tmp, seed=1)  # 64 visual codes: levels 4 x 4 x 4
    with torch.random.fork_rng():
        torch.manual_seed(0)
        video = FSQVideoAutoencoder(FSQVideoConfig(channels=(8, 8, 8), levels=(4, 4, 4)))
    save_fsq_checkpoint(tmp / "video.pt", video)
    text = train_sentencepiece(["a red ball rolls", "a cat sleeps", "a dog runs"] * 5, tmp / "text", 300)
    return tmp, checkpoint, f"fsq:{tmp / 'video.pt'}", f"sp:{text}"


def _generate(assets, out, *args, capsys, task="t2i"):
    """``lumos_megatron.generate`` in-process: (exit status, stdout, non-empty stderr lines)."""
    from lumos_megatron.generate import main

    _, checkpoint, video, text = assets
    capsys.readouterr()
    code = main(["--load", str(checkpoint), "--video-tokenizer", video, "--text-tokenizer", text, "--task", task,
                 "--resolution", "32x32", "--steps", "2", "--device", "cpu", "--out", str(out), "--no-progress",
                 *args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def _written(stdout):
    return json.loads(stdout.strip().splitlines()[-1])["written"]


def test_changed_settings_are_refused_overwrite_regenerates_identical_rerun_skips(assets, capsys):
    out = assets[0] / "out"
    code, stdout, _ = _generate(assets, out, "--prompt", "a cat", capsys=capsys)
    assert code == 0 and _written(stdout) == 1
    sample = out / "sample_00000.json"
    first = json.loads(sample.read_text())
    assert first["determinants_hash"] == determinants_hash(first["determinants"])
    d = first["determinants"]
    assert (d["prompt"], d["seed"], d["task"], d["resolution"]) == ("a cat", 0, "t2i", [32, 32])
    assert d["sampler"]["cfg_scale"] == 16.0 and d["checkpoint"]["iteration"] == 0
    assert d["checkpoint"]["run_config_sha256"] and d["precision"] == "fp32" and d["sample_device"] == "cpu"
    stamp = (out / "sample_00000.mp4").stat().st_mtime_ns

    # Identical settings: resumed, nothing regenerated.
    code, stdout, _ = _generate(assets, out, "--prompt", "a cat", capsys=capsys)
    assert code == 0 and _written(stdout) == 0
    assert (out / "sample_00000.mp4").stat().st_mtime_ns == stamp

    # Other prompt and guidance: refused in one line naming the file and what changed.
    code, stdout, err = _generate(assets, out, "--prompt", "a dog", "--cfg", "3", capsys=capsys)
    assert code == 2 and stdout == "" and len(err) == 1, err
    assert err[0].startswith(f"lumos_megatron.generate: error: {sample} was generated with other settings")
    assert "changed: prompt, sampler.cfg_scale" in err[0] and "--overwrite" in err[0]
    assert json.loads(sample.read_text())["determinants_hash"] == first["determinants_hash"]
    assert (out / "sample_00000.mp4").stat().st_mtime_ns == stamp

    # Another seed alone is refused too.
    code, _, err = _generate(assets, out, "--prompt", "a cat", "--seed", "4", capsys=capsys)
    assert code == 2 and len(err) == 1 and "changed: seed)" in err[0], err

    # --overwrite regenerates; then the new settings resume.
    code, stdout, _ = _generate(assets, out, "--prompt", "a dog", "--cfg", "3", "--overwrite", capsys=capsys)
    assert code == 0 and _written(stdout) == 1
    second = json.loads(sample.read_text())
    assert second["prompt"] == "a dog" and second["determinants"]["sampler"]["cfg_scale"] == 3.0
    assert second["determinants_hash"] != first["determinants_hash"]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [(e["name"], e["prompt"]) for e in index] == [("sample_00000", "a dog")]
    code, stdout, _ = _generate(assets, out, "--prompt", "a dog", "--cfg", "3", capsys=capsys)
    assert code == 0 and _written(stdout) == 0


def test_prompt_set_names_the_first_stale_sample_and_counts_the_others(assets, capsys):
    tmp = assets[0]
    out = tmp / "set"
    (tmp / "three.txt").write_text("a red ball\na cat\na dog\n")
    code, stdout, _ = _generate(assets, out, "--prompts", str(tmp / "three.txt"), capsys=capsys)
    assert code == 0 and _written(stdout) == 3
    (tmp / "three.txt").write_text("a red ball\na bird\na fish\n")  # samples 1 and 2 change
    code, _, err = _generate(assets, out, "--prompts", str(tmp / "three.txt"), capsys=capsys)
    assert code == 2 and len(err) == 1, err
    assert f"{out / 'sample_00001.json'} was generated with other settings (changed: prompt)" in err[0]
    assert "1 more sample(s)" in err[0]
    # A JSON written before determinants were recorded cannot be trusted either.
    (tmp / "three.txt").write_text("a red ball\na cat\na dog\n")
    legacy = json.loads((out / "sample_00002.json").read_text())
    for key in ("determinants", "determinants_hash"):
        legacy.pop(key)
    (out / "sample_00002.json").write_text(json.dumps(legacy))
    code, _, err = _generate(assets, out, "--prompts", str(tmp / "three.txt"), capsys=capsys)
    assert code == 2 and len(err) == 1 and "sample_00002.json" in err[0], err
    assert "written without a determinants hash" in err[0]
    code, stdout, _ = _generate(assets, out, "--prompts", str(tmp / "three.txt"), "--overwrite", capsys=capsys)
    assert code == 0 and _written(stdout) == 1  # only the legacy sample is regenerated
    assert "determinants_hash" in json.loads((out / "sample_00002.json").read_text())


def test_determinant_helpers(tmp_path):
    base = {"format": 1, "prompt": "a", "seed": 0, "sampler": {"steps": 2, "cfg_scale": 15.0}}
    other = {**base, "seed": 1, "sampler": {"steps": 2, "cfg_scale": 7.5}}
    assert changed_determinants(base, other) == ["sampler.cfg_scale", "seed"]
    assert changed_determinants(None, other) == ["all (no readable determinants)"]
    assert determinants_hash(base) == determinants_hash(dict(reversed(list(base.items()))))  # key order
    assert determinants_hash(base) != determinants_hash(other)
    path = tmp_path / "sample_00000.json"
    path.write_text(json.dumps({"determinants": base, "determinants_hash": determinants_hash(base)}))
    assert stored_sample_problem(path, base) is None
    assert stored_sample_problem(path, other) == "changed: sampler.cfg_scale, seed"
    path.write_text("{not json")
    assert stored_sample_problem(path, base) == "unreadable (JSONDecodeError)"


def test_i2v_resume_follows_the_image_content_not_its_path(assets, capsys):
    import numpy as np
    from PIL import Image

    tmp = assets[0]
    out = tmp / "i2v"

    def image(seed):
        pixels = (np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp / "cond.png")

    image(0)
    args = ["--prompt", "a red ball", "--image", str(tmp / "cond.png"), "--fps", "5",
            "--duration", "1"]
    code, stdout, _ = _generate(assets, out, *args, capsys=capsys, task="i2v")
    assert code == 0 and _written(stdout) == 1
    determinants = json.loads((out / "sample_00000.json").read_text())["determinants"]
    assert determinants["task"] == "i2v" and determinants["resolution"] == "32x32" and determinants["image_sha256"]
    code, stdout, _ = _generate(assets, out, *args, capsys=capsys, task="i2v")
    assert code == 0 and _written(stdout) == 0
    image(1)  # same path, other pixels: other conditioning tokens
    code, _, err = _generate(assets, out, *args, capsys=capsys, task="i2v")
    assert code == 2 and len(err) == 1 and "changed: image_sha256)" in err[0], err
