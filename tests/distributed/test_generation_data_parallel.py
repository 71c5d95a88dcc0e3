"""Data-parallel prompt sets: ``torchrun --nproc-per-node 2 -m lumos_megatron.generate
--tensor-model-parallel-size 1`` shares the prompts between two model copies and writes the files
of a one-process run (same tokens), each sample once, with its ``data_parallel_rank``, one
``index.jsonl`` of all samples, and resumes per sample."""

import json
import os
import subprocess
import sys

import pytest

from conftest import _free_port
from official_format import random_official_state_dict, tiny_official_config, write_official_checkpoint
from lumos_megatron.conversion.import_hf import import_hf

pytestmark = pytest.mark.distributed

PROMPTS = [{"prompt": "a red ball rolls"}, {"prompt": "a cat sleeps", "seed": 7}, {"prompt": "waves crash"},
           {"prompt": "a dog runs"}, {"prompt": "rain falls"}]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from lumos_megatron.data.pretokenize import default_video_tokenizer
    from lumos_megatron.tokenizers.text import train_sentencepiece

    tmp = tmp_path_factory.mktemp("generate_dp")
    config = tiny_official_config(vocab_size=66536)  # 65,536 text ids + the FSQ tokenizer's 1,000 codes
    hf = write_official_checkpoint(tmp / "hf", config, random_official_state_dict(config, seed=3))
    import_hf(hf, tmp / "ckpt", progress=False)
    text = train_sentencepiece([p["prompt"] for p in PROMPTS] * 5, tmp / "text", 100)
    (tmp / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return tmp, f"sp:{text}", default_video_tokenizer(str(tmp))


def _generate(assets, out, nproc):
    tmp, text, video = assets
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(_free_port())]
    cmd = [*launcher, "-m", "lumos_megatron.generate", "--tensor-model-parallel-size", "1", "--load", str(tmp / "ckpt"),
           "--prompts", str(tmp / "prompts.jsonl"), "--out", str(tmp / out), "--video-tokenizer", video,
           "--text-tokenizer", text, "--task", "t2v", "--resolution", "32x32", "--fps", "5", "--duration", "1",
           "--steps", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LUMOS_STRICT_CPU": "1"}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, proc.stdout  # global rank 0 alone reports
    return json.loads(summaries[0])


def _samples(directory):
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("sample_*.json"))}


def test_two_data_parallel_groups_write_the_one_process_files(assets):
    tmp = assets[0]
    assert _generate(assets, "one", 1)["written"] == 5
    assert _generate(assets, "dp2", 2)["written"] == 5  # each sample written once, by one group
    one, dp2 = _samples(tmp / "one"), _samples(tmp / "dp2")
    assert sorted(one) == sorted(dp2) == [f"sample_{i:05d}" for i in range(5)]
    for name in one:
        assert dp2[name]["video_tokens"] == one[name]["video_tokens"], name
        assert dp2[name]["seed"] == one[name]["seed"] and one[name]["data_parallel_rank"] == 0
        assert one[name]["sample_device"] == dp2[name]["sample_device"] == "cpu"  # the model device on CPU
    # Equal work per sample: dealt out in turn.
    assert [dp2[n]["data_parallel_rank"] for n in sorted(dp2)] == [0, 1, 0, 1, 0]
    index = [json.loads(line) for line in (tmp / "dp2" / "index.jsonl").read_text().splitlines()]
    assert [(x["name"], x["data_parallel_rank"], x["seed"]) for x in index] == [
        (n, dp2[n]["data_parallel_rank"], dp2[n]["seed"]) for n in sorted(dp2)]
    assert (tmp / "dp2" / "sample_00001.mp4").is_file() and dp2["sample_00001"]["seed"] == 7
    # Resume: only the missing sample is generated again, with the same tokens.
    (tmp / "dp2" / "sample_00003.json").unlink()
    stamp = (tmp / "dp2" / "sample_00000.json").stat().st_mtime_ns
    assert _generate(assets, "dp2", 2)["written"] == 1
    assert _samples(tmp / "dp2")["sample_00003"]["video_tokens"] == one["sample_00003"]["video_tokens"]
    assert (tmp / "dp2" / "sample_00000.json").stat().st_mtime_ns == stamp
    assert len((tmp / "dp2" / "index.jsonl").read_text().splitlines()) == 5
