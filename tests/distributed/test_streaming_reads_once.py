"""Streaming at TP=2: one rank of the tensor-parallel group decodes a micro-batch's videos and
shares them, so each sample is decoded once per read across the group, as in a 1-process run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import video_clips
from conftest import REPO, TINY_RECIPE, _free_port, train_command

SCRIPT = Path(__file__).resolve().parent / "_count_decodes.py"
ITERS, GLOBAL_BATCH = 2, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The fixture of tests/unit/test_streaming.py: two real clips and a missing file, FSQ, SP."""
    return video_clips.streaming_manifest(tmp_path_factory.mktemp("streaming_tp"))


def _count_decodes(setup, name, nproc, *extra):
    """{rank: report} of a streaming training run under ``_count_decodes.py`` on ``nproc`` ranks."""
    out_dir = setup["out"] / name
    args = ["--config", str(TINY_RECIPE), "data.mock=false", "model.vocab_size=66536",
            f"data.streaming_manifest={setup['manifest']}", f"data.video_tokenizer=fsq:{setup['fsq']}",
            f"data.text_tokenizer=sp:{setup['sp']}", "data.media_resolution=64", "data.split=100,0,0",
            "data.seq_length=1024", "model.max_position_embeddings=1024", "--train-iters", str(ITERS),
            "--global-batch-size", str(GLOBAL_BATCH), *extra]
    _, env = train_command(args, nproc)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                 "--master-port", str(_free_port())] if nproc > 1 else [sys.executable])
    proc = subprocess.run([*launcher, str(SCRIPT), str(out_dir), "--", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("lm loss:") == ITERS, proc.stdout[-2000:]
    reports = {r: json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(nproc)}
    for rank, report in reports.items():
        assert report["status"] == 0, (rank, report)
    return reports


def test_tp_group_decodes_each_sample_once(setup):
    single = _count_decodes(setup, "tp1", 1)[0]["decodes"]
    tp2 = _count_decodes(setup, "tp2", 2, "--tensor-model-parallel-size", "2")

    # One read per consumed sample; a read that lands on the missing file decodes it, then the
    # next usable row of the order.
    reads = ITERS * GLOBAL_BATCH
    assert sum(single.get(p, 0) for p in setup["good"]) == reads, single
    assert sum(single.values()) == reads + single.get(setup["missing"], 0), single
    assert single.get(setup["missing"], 0) >= 1, single  # the substitution is exercised

    # TP=2, one group: rank 0 reads and broadcasts; rank 1 decodes nothing.
    assert tp2[1]["decodes"] == {}, tp2[1]
    assert tp2[0]["decodes"] == single, (tp2[0], single)
