"""AR-DF generation under tensor and pipeline parallelism (gloo, fp32): TP=2 gives the TP=1 tokens,
with the KV cache (which runs megatron's TP linears itself) and without it; PP=2 gives them without
the cache and is refused clearly with it."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, _free_port
from official_format import random_official_state_dict, tiny_official_config, write_official_checkpoint
from lumos_megatron.conversion.import_hf import import_hf

pytestmark = pytest.mark.distributed

SCRIPT = REPO / "tests" / "distributed" / "_generate_tokens.py"


def _tokens(tmp, ckpt, name, tp, kv_cache, pp=1):
    out = tmp / f"{name}.pt"
    prefix = [sys.executable] if tp * pp == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(tp * pp), "--master-port",
        str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LUMOS_STRICT_CPU": "1"}
    proc = subprocess.run([*prefix, str(SCRIPT), str(ckpt), str(out), str(tp), "1" if kv_cache else "0", str(pp)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return torch.load(out)


def test_tp2_generates_the_tp1_tokens(tmp_path):
    config = tiny_official_config()
    hf = write_official_checkpoint(tmp_path / "hf", config, random_official_state_dict(config, seed=2))
    import_hf(hf, tmp_path / "ckpt", progress=False)
    tp1 = _tokens(tmp_path, tmp_path / "ckpt", "tp1", 1, True)
    assert len(tp1) == 2 and all(t[0] == 9004 and t[-1] == 9005 for t in tp1)
    assert _tokens(tmp_path, tmp_path / "ckpt", "tp2_cached", 2, True) == tp1
    assert _tokens(tmp_path, tmp_path / "ckpt", "tp2_full", 2, False) == tp1
    # PP=2: without the cache (the last stage computes only the block's logits) the same tokens;
    # the KV cache refuses pipeline parallelism in one clear line.
    assert _tokens(tmp_path, tmp_path / "ckpt", "pp2_full", 1, False, pp=2) == tp1
    refused = _tokens(tmp_path, tmp_path / "ckpt", "pp2_cached", 1, True, pp=2)
    assert "pipeline parallelism is not supported" in refused["refused"]
