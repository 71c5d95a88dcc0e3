"""Layout enumeration of the sweep (``plan.layouts``): every candidate is one the trainer accepts,
known-impossible layouts are absent with a reason, and the overrides round-trip through the CLI.
Pure config work: no model is built and no process group is created."""

import pytest

from lumos_megatron.config import parse_cli, validate_config
from lumos_megatron.plan.layouts import (
    MAX_VPP_OPTIONS,
    apply_candidate,
    candidate_layouts,
    enumerate_layouts,
    rejected_layouts,
)
from lumos_megatron.platform.parallel import resolve_layout

from conftest import REPO, TINY_RECIPE

RECIPE_1B_384 = REPO / "examples" / "recipes" / "lumos_1b_stage2-joint-384p_8gpu_h100_bf16.yaml"


def _cfg(recipe, *overrides):
    return parse_cli(["--config", str(recipe), *overrides])


def _sizes(cands):
    return {(c.tp, c.pp, c.vpp, c.cp, c.dp) for c in cands}


@pytest.fixture(scope="module")
def sweeps():
    """(recipe path, world size) -> (recipe config, accepted, rejected), computed once."""
    out = {}
    for recipe, world in ((TINY_RECIPE, 4), (RECIPE_1B_384, 8), (RECIPE_1B_384, 64)):
        cfg = _cfg(recipe)
        out[(recipe, world)] = (cfg, *enumerate_layouts(cfg, world))
    return out


def test_tiny_at_4_is_exactly_the_valid_factorisations(sweeps):
    cfg, accepted, rejected = sweeps[(TINY_RECIPE, 4)]
    # 4 heads / 2 query groups: TP <= 2; 2 layers: PP <= 2 and no VPP (1 layer per stage);
    # sdpa supports CP; 96 tokens divide by TP x 2CP; batch 8 = 2 x DP x micro-batches.
    assert _sizes(accepted) == {
        (1, 1, None, 1, 4), (1, 1, None, 2, 2), (1, 1, None, 4, 1), (1, 2, None, 1, 2),
        (1, 2, None, 2, 1), (2, 1, None, 1, 2), (2, 1, None, 2, 1), (2, 2, None, 1, 1)}
    # The recipe has no recompute: its own ("none") plus "full".
    assert {c.recompute for c in accepted} == {"none", "full"}
    assert len(accepted) == 16
    reasons = {(r.tp, r.pp, r.cp): r.reason for r in rejected}
    assert set(reasons) == {(4, 1, 1), (1, 4, 1)}
    assert "model.num_query_groups=2 is not divisible by TP=4" in reasons[(4, 1, 1)]
    assert "PP=4 exceeds model.num_layers=2" in reasons[(1, 4, 1)]


@pytest.mark.parametrize("key", [(TINY_RECIPE, 4), (RECIPE_1B_384, 8), (RECIPE_1B_384, 64)],
                         ids=["tiny@4", "1b384@8", "1b384@64"])
def test_every_candidate_resolves_validates_and_round_trips(sweeps, key):
    recipe, world = key
    cfg, accepted, _ = sweeps[key]
    assert accepted
    for c in accepted:
        assert c.tp * c.pp * c.cp * c.dp == world == c.world_size
        assert c.sequence_parallel == (c.tp > 1)
        assert c.use_distributed_optimizer == cfg.parallel.use_distributed_optimizer
        assert c.tp <= 8
        # The overrides as parse_cli takes them after the recipe (validation included).
        via_cli = parse_cli(["--config", str(recipe), *c.overrides])
        assert via_cli == apply_candidate(cfg, c)
        layout = resolve_layout(via_cli, world)
        assert (layout.tp, layout.pp, layout.cp, layout.dp, layout.vpp) == (c.tp, c.pp, c.cp, c.dp, c.vpp)
        p = via_cli.parallel
        assert p.sequence_parallel == c.sequence_parallel
        assert (via_cli.model.recompute_granularity or "none") == c.recompute
        validate_config(via_cli)
        assert c.label.startswith(f"TP{c.tp} PP{c.pp}")
        assert f"CP{c.cp} DP{c.dp}" in c.label and c.label.endswith("-recompute")


def test_1b_384p_at_8_gpus(sweeps):
    cfg, accepted, rejected = sweeps[(RECIPE_1B_384, 8)]
    # flex has no context-parallel attention: every CP > 1 is refused by validation.
    assert all(c.cp == 1 for c in accepted)
    cp_refusals = [r for r in rejected if r.cp > 1]
    assert cp_refusals and all("does not support context parallelism" in r.reason for r in cp_refusals)
    assert {c.tp for c in accepted} == {1, 2, 4, 8}  # 32 heads, 8 groups, all within the node
    assert (2, 1, None, 1, 4) in _sizes(accepted)  # the recipe's own layout
    # VPP: only with PP >= 2, dividing the layers per stage, at most MAX_VPP_OPTIONS per PP.
    for c in accepted:
        assert c.vpp is None or (c.pp >= 2 and c.vpp >= 2 and cfg.model.num_layers % (c.pp * c.vpp) == 0)
    for pp in {c.pp for c in accepted}:
        vpps = {c.vpp for c in accepted if c.pp == pp and c.vpp}
        assert len(vpps) <= MAX_VPP_OPTIONS
    assert {c.vpp for c in accepted if c.pp == 2} == {None, 2, 4, 8}
    # Recipe recompute is 'full': variants full and none, no selective.
    assert {c.recompute for c in accepted} == {"full", "none"}


def test_1b_384p_at_64_gpus(sweeps):
    _, accepted, rejected = sweeps[(RECIPE_1B_384, 64)]
    assert all(c.tp <= 8 for c in accepted)
    tp16 = [r for r in rejected if r.tp == 16]
    assert tp16 and all("spans nodes" in r.reason for r in tp16)
    # 48 samples per step, 1 per micro-batch: DP must divide 48 (so not 32 or 64).
    assert all(48 % c.dp == 0 for c in accepted)
    assert any(r.dp == 64 and "global batch 48" in r.reason for r in rejected)
    # Interleaving needs the micro-batches per step to be a multiple of PP.
    for c in accepted:
        if c.vpp:
            assert (48 // c.dp) % c.pp == 0
    assert any(r.vpp and "multiple of PP" in r.reason for r in rejected)
    assert (4, 1, None, 1, 16) in _sizes(accepted)


def test_tp3_and_cp_with_sdpa():
    tiny = _cfg(TINY_RECIPE)
    at6 = enumerate_layouts(tiny, 6)
    assert all(c.tp != 3 for c in at6[0])
    assert any(r.tp == 3 and "not divisible by TP=3" in r.reason for r in at6[1])
    # The same 1B recipe on sdpa (which has a CP attention) gains CP layouts, at lengths where a
    # dense mask is allowed at all (validation refuses sdpa at 32k: see test_plan_cli).
    sdpa = _cfg(RECIPE_1B_384, "model.attention_backend=sdpa", "data.seq_length=4096",
                "data.image_seq_length=2048")
    assert {c.cp for c in candidate_layouts(sdpa, 8)} == {1, 2, 4, 8}


def test_recompute_variants():
    full_recipe = _cfg(RECIPE_1B_384)
    own = candidate_layouts(full_recipe, 8, with_recompute_variants=False)
    assert {c.recompute for c in own} == {"full"}
    selective = _cfg(RECIPE_1B_384, "model.recompute_granularity=selective")
    assert {c.recompute for c in candidate_layouts(selective, 8)} == {"none", "selective", "full"}
    # recompute_num_layers stays with 'full' and is cleared for the others (validation needs it).
    partial = _cfg(RECIPE_1B_384, "model.recompute_num_layers=2")
    for c in candidate_layouts(partial, 8):
        cfg = apply_candidate(partial, c)
        validate_config(cfg)
        assert cfg.model.recompute_num_layers == (2 if c.recompute == "full" else None)


def test_sorted_and_deterministic(sweeps):
    cfg, accepted, rejected = sweeps[(RECIPE_1B_384, 8)]
    order = {"none": 0, "selective": 1, "full": 2}
    keys = [(c.tp, c.pp, c.vpp or 0, c.cp, c.dp, order[c.recompute]) for c in accepted]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    again = enumerate_layouts(cfg, 8)
    assert again == (accepted, rejected)
    assert rejected_layouts(cfg, 8) == rejected


def test_bad_world_size():
    with pytest.raises(ValueError):
        candidate_layouts(_cfg(TINY_RECIPE), 0)
