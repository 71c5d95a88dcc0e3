"""The planner's quick parts: rank kinds and megatron's rank order, the verdict, argument and
version errors, the dense-SDPA validation rule. No trace runs here (tests/unit/test_plan_traces.py)."""

from __future__ import annotations

import pytest
import torch

from lumos_megatron.config import parse_cli
from lumos_megatron.config.loader import ConfigError
from lumos_megatron.config.validate import validate_config
from lumos_megatron.plan.calibration import Calibration, communicator_count, verdict
from lumos_megatron.plan.cli import main
from lumos_megatron.plan.planner import merged_host_syncs
from lumos_megatron.plan.rank_kinds import global_rank, loss_tp_rank, rank_kinds
from lumos_megatron.platform.parallel import ParallelLayout
from lumos_megatron.vocab import LumosVocab

from conftest import REPO, TINY_RECIPE

RECIPE_1B_384 = REPO / "examples" / "recipes" / "lumos_1b_stage2-joint-384p_8gpu_h100_bf16.yaml"


def _layout(tp, pp, cp, dp):
    return ParallelLayout(world_size=tp * pp * cp * dp, tp=tp, pp=pp, cp=cp, dp=dp, vpp=None)


@pytest.mark.parametrize("tp,cp,dp,pp", [(2, 1, 2, 2), (2, 2, 2, 2), (4, 1, 2, 4), (1, 4, 2, 1)])
def test_global_rank_follows_megatrons_rank_generator(tp, cp, dp, pp):
    from megatron.core.parallel_state import RankGenerator

    gen = RankGenerator(tp=tp, ep=1, dp=dp, pp=pp, cp=cp, order="tp-cp-ep-dp-pp")
    layout = _layout(tp=tp, pp=pp, cp=cp, dp=dp)
    for group in gen.get_ranks("pp"):  # each group: one (tp, cp, dp) coordinate, every stage
        for pp_rank, rank in enumerate(group):
            tp_rank = [g for g in gen.get_ranks("tp") if rank in g][0].index(rank)
            cp_rank = [g for g in gen.get_ranks("cp") if rank in g][0].index(rank)
            dp_rank = [g for g in gen.get_ranks("dp") if rank in g][0].index(rank)
            assert global_rank(layout, tp_rank, cp_rank, dp_rank, pp_rank) == rank


def test_rank_kinds_cover_stages_the_loss_tp_rank_and_cp():
    vocab = LumosVocab()  # 129,536 ids: the visual codes are in the upper half
    kinds = rank_kinds(_layout(tp=2, pp=4, cp=2, dp=2), vocab)
    assert kinds[0].rank == 0 and kinds[0].role.startswith("first stage")
    assert [k.pp_rank for k in kinds] == [0, 1, 3, 3]
    assert kinds[2].tp_rank == loss_tp_rank(_layout(tp=2, pp=4, cp=2, dp=2), vocab) == 1
    assert kinds[3].cp_rank == 1
    single = rank_kinds(_layout(tp=1, pp=1, cp=1, dp=8), vocab)
    assert [(k.rank, k.role) for k in single] == [(0, "single stage TP 0 CP 0")]


def test_verdict_adds_the_allowances_and_names_assumptions():
    c = Calibration(allocator_overhead=0.1, cuda_context_bytes=100, nccl_bytes_per_group=10)
    v = verdict(1000, 1300, communicator_count(2, 1, 1, 4), False, c)
    assert communicator_count(2, 1, 1, 4) == 3  # TP, DP, and megatron's model-parallel group
    assert v.required_bytes == 1000 + 100 + 100 + 30 and v.fits and v.headroom_bytes == 70
    assert v.calibration == "assumed"
    measured = Calibration(measured={k: "H100 2026-12" for k in ("allocator_overhead", "cuda_context_bytes",
                                                                 "nccl_bytes_per_group")})
    assert verdict(1, 2**40, 0, False, measured).calibration == "measured"


def test_merged_host_syncs_keep_the_largest_count_per_site():
    a = {"host_syncs": [{"where": "x.py:1", "op": "item()/tolist()", "count": 2}]}
    b = {"host_syncs": [{"where": "x.py:1", "op": "item()/tolist()", "count": 5},
                        {"where": "y.py:9", "op": "aten.nonzero", "count": 1}]}
    assert merged_host_syncs([a, b]) == [{"where": "x.py:1", "op": "item()/tolist()", "count": 5},
                                         {"where": "y.py:9", "op": "aten.nonzero", "count": 1}]


@pytest.mark.parametrize("args,message", [
    (["--config", str(TINY_RECIPE)], "--world-size"),
    (["--config", str(TINY_RECIPE), "--world-size", "2", "--gpu", "v100"], "unknown GPU"),
    (["--config", str(TINY_RECIPE), "--world-size", "3", "--tensor-model-parallel-size", "2"], "world size"),
    (["--config", str(TINY_RECIPE), "--world-size", "1", "model.no_such_field=1"], "no_such_field"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lumos-plan: error:") and message in err and "\n" not in err


def test_other_torch_versions_are_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    assert main(["--config", str(TINY_RECIPE), "--world-size", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "supports torch 2.13.x with megatron-core 0.16.1" in err and "found torch 2.9.1+cpu" in err
    assert "\n" not in err


def test_missing_compiler_is_one_clear_line(monkeypatch, tmp_path):
    from lumos_megatron.plan import fake_device
    from lumos_megatron.plan.fake_mode import PlannerEnvironmentError

    monkeypatch.setenv("LUMOS_PLAN_CACHE", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(fake_device.shutil, "which", lambda name: None)
    with pytest.raises(PlannerEnvironmentError, match="found no C\\+\\+ compiler"):
        fake_device.build_library()


def test_dense_sdpa_at_long_lengths_is_refused_with_a_pointer_to_flex():
    with pytest.raises(ConfigError, match="use model.attention_backend=flex") as err:
        parse_cli(["--config", str(RECIPE_1B_384), "model.attention_backend=sdpa"])
    assert "GiB of fp32 attention scores per layer" in str(err.value)
    # Short sequences keep sdpa (the tiny CPU recipe trains on it).
    validate_config(parse_cli(["--config", str(TINY_RECIPE)]))
    assert parse_cli(["--config", str(RECIPE_1B_384), "model.attention_backend=sdpa", "data.seq_length=4096",
                      "data.image_seq_length=2048"]).model.attention_backend == "sdpa"
