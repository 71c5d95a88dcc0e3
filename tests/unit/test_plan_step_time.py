"""Step-time model of the layout sweep (``plan.step_time``), the GPU table and the sweep table:
hand-computed bytes and bubbles on the tiny recipe, the FLOPs against the trainer's own model,
placement of groups on nodes, and monotonicity in TP. No model is built."""

import json

import pytest
import torch

from lumos_megatron.config import parse_cli
from lumos_megatron.models.frame_mask import allowed_pairs
from lumos_megatron.plan.gpus import ACHIEVED_FRACTION, GIB, GPUS, gpu_spec
from lumos_megatron.plan.layouts import candidate_layouts
from lumos_megatron.plan.step_time import (
    estimate_step_time,
    spans_nodes,
    stage_parameters,
    step_workload,
)
from lumos_megatron.plan.sweep_table import SweepRow, format_sweep_table, rank_candidates, sweep_json
from lumos_megatron.training.flops import flops_per_token, step_flops

from conftest import REPO, TINY_RECIPE

RECIPE_1B_384 = REPO / "examples" / "recipes" / "lumos_1b_stage2-joint-384p_8gpu_h100_bf16.yaml"
H100 = GPUS["h100"]
NVLINK = 450e9 * ACHIEVED_FRACTION  # achieved bytes/s of an H100 NVLink
TINY_PARAMS = 8_514_112  # 2 x 65,600 x 64 (embedding, head) + 2 x 58,624 (layers) + 64 (final norm)


def _tiny(*overrides):
    # bf16 so activations are 2 bytes, as on a GPU.
    return parse_cli(["--config", str(TINY_RECIPE), "train.precision=bf16", *overrides])


def _pick(cfg, world, tp=1, pp=1, cp=1, vpp=None, recompute="none"):
    found = [c for c in candidate_layouts(cfg, world)
             if (c.tp, c.pp, c.cp, c.vpp, c.recompute) == (tp, pp, cp, vpp, recompute)]
    assert len(found) == 1, (tp, pp, cp, vpp, recompute)
    return found[0]


def test_gpu_table():
    h100 = gpu_spec("H100")
    assert h100 is GPUS["h100"] and h100.memory_bytes == int(79.10 * GIB)
    assert {k: g.bf16_dense_tflops for k, g in GPUS.items()} == {
        "h100": 989.4, "h200": 989.4, "a100": 312.0, "b200": 2250.0}
    assert (GPUS["a100"].nvlink_gbps, GPUS["a100"].ib_gbps_per_gpu) == (300.0, 25.0)
    assert (GPUS["b200"].nvlink_gbps, GPUS["h200"].ib_gbps_per_gpu) == (900.0, 50.0)
    assert h100.link_gbps(True) == 50.0 and h100.link_gbps(False) == 450.0
    with pytest.raises(ValueError, match="a100, b200, h100, h200"):
        gpu_spec("v100")


def test_tp_bytes_by_hand():
    cfg = _tiny()
    st = estimate_step_time(cfg, _pick(cfg, 4, tp=2), H100)
    # DP=2: 8 / (2 x 2) = 2 micro-batches; activation [96, 2, 64] bf16 = 24,576 B; ring at TP=2
    # moves 2 x 1/2 of it per all-reduce; 2 layers x 4 all-reduces + embedding + loss gather.
    activation = 96 * 2 * 64 * 2
    assert st.microbatches == 2
    assert st.tp_bytes == 2 * (2 * 4 + 2) * 1.0 * activation == 491_520
    assert st.tp_comm_s == pytest.approx(491_520 / NVLINK)
    full = estimate_step_time(cfg, _pick(cfg, 4, tp=2, recompute="full"), H100)
    assert full.tp_bytes == 2 * (2 * 6 + 2) * activation  # + 2 all-reduces per recomputed layer
    assert (st.pp_bytes, st.cp_bytes, st.pp_bubble_s) == (0, 0, 0)


def test_cp_and_pp_bytes_by_hand():
    cfg = _tiny()
    cp = estimate_step_time(cfg, _pick(cfg, 4, cp=2), H100)
    # K and V [96, 2, 2 groups x 32] bf16 each, (cp-1)/cp gathered forward, reduce-scattered
    # backward, per layer and micro-batch (DP=2: 2 micro-batches).
    kv = 96 * 2 * 2 * 32 * 2
    assert cp.cp_bytes == 2 * 2 * 2 * 2 * 0.5 * kv
    assert cp.tp_bytes == 0
    pp = estimate_step_time(cfg, _pick(cfg, 4, pp=2), H100)
    # One [96, 2, 64] bf16 activation forward and its gradient backward per micro-batch.
    assert pp.pp_bytes == 2 * 2 * 96 * 2 * 64 * 2
    tp_pp = estimate_step_time(cfg, _pick(cfg, 4, tp=2, pp=2), H100)
    # Under SP megatron sends [s/tp, b, h]; DP=1 -> 4 micro-batches.
    assert tp_pp.pp_bytes == 4 * 2 * 48 * 2 * 64 * 2


def test_dp_bytes_with_and_without_distributed_optimizer():
    plain = _tiny()
    st = estimate_step_time(plain, _pick(plain, 4), H100)
    # All-reduce of fp32 gradients over DP=4: 2 x 3/4 x N x 4 B.
    assert st.dp_bytes == pytest.approx(2 * 0.75 * TINY_PARAMS * 4)
    assert st.dp_comm_s == pytest.approx(st.dp_bytes / NVLINK)
    zero = _tiny("parallel.use_distributed_optimizer=true")
    st = estimate_step_time(zero, _pick(zero, 4), H100)
    # Reduce-scatter fp32 gradients + all-gather bf16 weights: 3/4 x N x (4 + 2) B.
    assert st.dp_bytes == pytest.approx(0.75 * TINY_PARAMS * 6)
    # CP ranks join the gradient reduction (DP x CP = 4 here as well).
    st_cp = estimate_step_time(zero, _pick(zero, 4, cp=2), H100)
    assert st_cp.dp_bytes == pytest.approx(st.dp_bytes)
    # Pipeline: the largest stage (the last: one layer, final norm, LM head).
    assert stage_parameters(plain, 2) == 58_624 + 64 + 65_600 * 64
    st_pp = estimate_step_time(plain, _pick(plain, 4, pp=2), H100)
    assert st_pp.dp_bytes == pytest.approx(2 * 0.5 * stage_parameters(plain, 2) * 4)


def test_overlap_exposes_one_bucket():
    cfg = parse_cli(["--config", str(RECIPE_1B_384)])  # overlap_grad_reduce + distributed optimizer
    st = estimate_step_time(cfg, _pick(cfg, 8, tp=2, recompute="full"), H100)
    params = stage_parameters(cfg, 1) / 2
    grad, gather = 0.75 * params * 4, 0.75 * params * 2
    assert st.dp_bytes == pytest.approx(grad + gather)
    assert st.dp_comm_s == pytest.approx((grad * 40e6 / params + gather) / NVLINK)


def test_bubble_by_hand():
    cfg = _tiny("model.num_layers=4")
    st = estimate_step_time(cfg, _pick(cfg, 4, pp=2), H100)
    assert st.microbatches == 2
    assert st.pp_bubble_s == pytest.approx((2 - 1) / 2 * st.compute_s)
    inter = estimate_step_time(cfg, _pick(cfg, 4, pp=2, vpp=2), H100)
    assert inter.pp_bubble_s == pytest.approx((2 - 1) / (2 * 2) * inter.compute_s)
    assert inter.pp_bytes == 2 * st.pp_bytes  # every chunk sends
    assert inter.total_s == pytest.approx(sum((inter.compute_s, inter.tp_comm_s, inter.pp_comm_s,
                                               inter.pp_bubble_s, inter.cp_comm_s, inter.dp_comm_s)))


def test_compute_is_step_flops_over_world_plus_recompute():
    cfg = parse_cli(["--config", str(RECIPE_1B_384)])
    work = step_workload(cfg)
    flops = step_flops(cfg, work.tokens, work.pairs, work.loss_rows)
    peak = H100.bf16_dense_tflops * 1e12 * 0.45
    none = estimate_step_time(cfg, _pick(cfg, 8, tp=2), H100)
    assert none.model_flops_per_rank == pytest.approx(flops.total / 8)
    # The fused visual CE recomputes its logits in backward: a third of the LM-head FLOPs.
    assert none.executed_flops_per_rank == pytest.approx((flops.total + flops.lm_head / 3) / 8)
    assert none.compute_s == pytest.approx(none.executed_flops_per_rank / peak)
    full = estimate_step_time(cfg, _pick(cfg, 8, tp=2, recompute="full"), H100)
    extra = (flops.dense + flops.attention) / 3 / 8
    assert full.executed_flops_per_rank == pytest.approx(none.executed_flops_per_rank + extra)
    assert full.model_flops_per_rank == none.model_flops_per_rank
    assert none.tokens == 48 * 32768 and none.world_size == 8


def test_workload():
    cfg = parse_cli(["--config", str(RECIPE_1B_384)])
    work = step_workload(cfg)
    n = int(0.9 * 32768) // 7  # 7 frame blocks over 90% of the sequence
    seg = torch.zeros(32768, dtype=torch.long)
    for k in range(7):
        seg[k * n:(k + 1) * n] = k + 1
    assert work.pairs == pytest.approx(48 * float(allowed_pairs(seg)[0]))
    assert work.tokens == 48 * 32768
    # Mock data: the trainer's own sample, padded to seq_length as the worst case. The planner
    # counts the padding as executed work; the model FLOPs per token (flops_per_token) do not.
    tiny = _tiny()
    w = step_workload(tiny)
    assert w.tokens == tiny.train.global_batch_size * tiny.data.seq_length
    per_token = step_flops(tiny, w.tokens, w.pairs, w.loss_rows)
    model = flops_per_token(tiny)
    assert per_token.lm_head / w.tokens == pytest.approx(model.lm_head)
    assert per_token.dense / w.tokens > model.dense and per_token.attention / w.tokens > model.attention


def test_more_tp_less_compute_more_comm():
    cfg = parse_cli(["--config", str(RECIPE_1B_384)])
    times = [estimate_step_time(cfg, _pick(cfg, tp, tp=tp, recompute="full"), H100) for tp in (1, 2, 4, 8)]
    compute = [t.compute_s for t in times]
    comm = [t.tp_bytes for t in times]
    assert compute == sorted(compute, reverse=True) and compute[0] == pytest.approx(8 * compute[3])
    assert comm[0] == 0 and comm == sorted(comm) and len(set(comm)) == 4
    # Ring factor 2(t-1)/t: 1, 1.5, 1.75 at TP 2, 4, 8 (same micro-batches, same activation).
    assert comm[2] / comm[1] == pytest.approx(1.5) and comm[3] / comm[1] == pytest.approx(1.75)


def test_group_placement_follows_megatron_rank_order():
    # 16 GPUs, TP2 x PP2 x DP4: PP is outermost (stride 8) and leaves the node; DP does not.
    assert spans_nodes("pp", 2, 1, 4, 2, 8) and not spans_nodes("dpcp", 2, 1, 4, 2, 8)
    assert not spans_nodes("tp", 8, 1, 2, 1, 8)
    assert spans_nodes("dpcp", 1, 1, 16, 1, 8)
    assert spans_nodes("cp", 4, 4, 1, 1, 8) and not spans_nodes("cp", 2, 4, 2, 1, 8)
    cfg = parse_cli(["--config", str(RECIPE_1B_384)])
    st = estimate_step_time(cfg, _pick(cfg, 64, tp=4, pp=2, recompute="full"), H100)
    assert st.links == {"TP": "nvlink", "PP": "ib", "CP": "nvlink", "DP": "ib"}
    ib = 50e9 * ACHIEVED_FRACTION
    assert st.pp_comm_s == pytest.approx(st.pp_bytes / ib)


def test_assumptions_are_named():
    cfg = _tiny()
    st = estimate_step_time(cfg, _pick(cfg, 4, tp=2), H100, mfu=0.3)
    for key in ("mfu", "links", "workload", "overlap", "placement", "recompute", "gradients"):
        assert st.assumptions[key]
    assert "0.3" in st.assumptions["mfu"] and "0.7" in st.assumptions["links"]


def test_sweep_table_ranking_and_output():
    cfg = _tiny()
    cands = candidate_layouts(cfg, 4)
    times = {c.label: estimate_step_time(cfg, c, H100) for c in cands}
    a, b, c, d, e = cands[:5]
    rows = [(a, times[a.label], 90 * GIB, False, "over"), (b, times[b.label], None, None, ""),
            (c, times[c.label], 10 * GIB, True, ""), (d, times[d.label], 85 * GIB, False, ""),
            SweepRow(e, times[e.label], 20 * GIB, True)]
    ranked = rank_candidates(rows)
    fit = sorted((c, e), key=lambda x: times[x.label].total_s)
    assert [r.candidate for r in ranked] == [*fit, d, a, b]
    text = format_sweep_table(rows, H100)
    lines = text.splitlines()
    assert "5 layouts on h100" in lines[0] and "step s" in lines[1] and "tok/s/GPU" in lines[1]
    assert len(lines) == 3 + 5
    assert f"yes ({(H100.memory_bytes - 10 * GIB) / GIB:+.1f})" in text
    assert "NO (-10.9)" in text  # 79.10 - 90 GiB
    out = sweep_json(rows, H100)
    json.dumps(out)  # serialisable
    assert [r["label"] for r in out["rows"]] == [r.candidate.label for r in ranked]
    assert out["rows"][0]["fits"] is True and out["rows"][-1]["peak_bytes"] is None
    assert out["gpu"]["name"] == "h100" and "mfu" in out["assumptions"]
    assert out["rows"][0]["step_time"]["total_s"] == times[ranked[0].candidate.label].total_s
