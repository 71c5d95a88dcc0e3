"""Fake-CUDA traces of the planner (worker processes): model state against the analytic count,
TP halving the parameters, activations linear in the sequence length under flex + full
recompute, the CLI's JSON contract and the generation plan. Slow: each trace is a process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lumos_megatron.config import parse_cli
from lumos_megatron.plan.gpus import gpu_spec
from lumos_megatron.plan.model_state import analytic_model_state
from lumos_megatron.plan.planner import plan_training
from lumos_megatron.models.parameter_counts import parameter_counts

from conftest import REPO, TINY_RECIPE

pytestmark = pytest.mark.slow

# A small model whose state is not dominated by one tensor: 4 layers, width 256.
WIDER = ["--config", str(TINY_RECIPE), "model.num_layers=4", "model.hidden_size=256",
         "model.num_attention_heads=8", "model.num_query_groups=4", "model.ffn_hidden_size=704",
         "model.max_position_embeddings=8192"]


def _plan(argv, world_size):
    return plan_training(argv, parse_cli(argv), world_size, gpu_spec("h100"), jobs=2)


@pytest.mark.parametrize("extra,world_size", [
    ([], 1),
    (["--bf16"], 1),
    (["--bf16", "--use-distributed-optimizer"], 2),
    (["--use-distributed-optimizer"], 2),
])
def test_model_state_equals_the_analytic_count(extra, world_size):
    argv = WIDER + extra
    cfg = parse_cli(argv)
    rank = _plan(argv, world_size)["ranks"][0]
    expected = analytic_model_state(parameter_counts(cfg.model).total, cfg.train.precision,
                                    cfg.parallel.use_distributed_optimizer, world_size)
    assert rank["parameter_bytes"] == pytest.approx(expected.parameter_bytes, rel=0.01)
    assert rank["gradient_bytes"] == pytest.approx(expected.gradient_bytes, rel=0.01)
    assert rank["optimizer_bytes"] == pytest.approx(expected.optimizer_bytes, rel=0.01)


def test_tp2_halves_the_parameter_bytes_per_rank():
    one = _plan(WIDER + ["--bf16"], 1)["ranks"][0]["parameter_bytes"]
    two = _plan(WIDER + ["--bf16", "--tensor-model-parallel-size", "2", "--sequence-parallel"], 2)
    for rank in two["ranks"]:
        # Only the norms are replicated: a hair over one half.
        assert 0.5 <= rank["parameter_bytes"] / one < 0.505


def test_activations_grow_linearly_with_sequence_length_under_flex_and_full_recompute():
    argv = WIDER + ["--bf16", "model.attention_backend=flex", "model.recompute_granularity=full"]
    lengths = (1024, 2048, 3072)
    act = [_plan(argv + [f"data.seq_length={n}"], 1)["ranks"][0]["activation_bytes"] for n in lengths]
    per_token = [a / n for a, n in zip(act, lengths)]
    assert max(per_token) / min(per_token) < 1.01, act
    # Without recompute the same steps keep far more (every layer's activations).
    plain = _plan(WIDER + ["--bf16", "model.attention_backend=flex", "data.seq_length=2048"], 1)
    assert plain["ranks"][0]["activation_bytes"] > 2 * act[1]


def test_cli_writes_the_json_contract(tmp_path):
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "lumos_megatron.plan", "--config", str(TINY_RECIPE),
                           "--pipeline-model-parallel-size", "2", "train.global_batch_size=16",
                           "--world-size", "4", "--json", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(out.read_text())
    first, last = plan["ranks"][0], plan["ranks"][-1]
    assert first["rank"] == 0 and first["role"].startswith("first stage")
    assert last["role"].startswith("last stage") and last["rank"] == 2
    for rank in plan["ranks"]:
        for key in ("peak_bytes", "parameter_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes"):
            assert isinstance(rank[key], int) and rank[key] > 0
        assert rank["peak_bytes"] >= rank["parameter_bytes"] + rank["gradient_bytes"]
        assert rank["verdict"]["fits"] is True
    wheres = {s["where"] for s in plan["host_syncs"]}
    assert any(w.startswith("megatron/core/optimizer/") for w in wheres)
    assert all(":" in s["where"] and s["count"] >= 1 for s in plan["host_syncs"])
    assert "first stage" in proc.stdout and "host syncs" in proc.stdout


def test_generation_plan_grows_with_the_batch(tmp_path):
    out = tmp_path / "gen.json"
    proc = subprocess.run([sys.executable, "-m", "lumos_megatron.plan", "--config", str(TINY_RECIPE),
                           "--world-size", "1", "--generate", "--gen-batch", "1,4", "--gen-frames", "3",
                           "--gen-grid", "8x8", "--json", str(out), "--quiet"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(out.read_text())
    one, four = plan["generation"]["batches"]
    assert (one["rows"], four["rows"]) == (2, 8)
    # The KV cache is rows x layers x 2 (K, V) x groups x tokens x head dim x 4 bytes (fp32).
    cfg = parse_cli(["--config", str(TINY_RECIPE)])
    m = cfg.model
    tokens = one["cached_tokens"] + one["block_tokens"]
    assert one["kv_cache_bytes"] == 2 * m.num_layers * 2 * m.num_query_groups * tokens * m.kv_channels * 4
    assert four["kv_cache_bytes"] == 4 * one["kv_cache_bytes"]
    assert four["peak_bytes"] > one["peak_bytes"]
    assert plan["ranks"][0]["role"].startswith("generation")
