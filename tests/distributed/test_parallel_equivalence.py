"""TP=2, TP=2+SP, PP=2, PP=2+VPP, CP=2 and DP=2 (2 gloo processes) reproduce the 1-process run.

Each run is the real entry point under torchrun, writing TensorBoard; the per-iteration `lm loss`
and `grad-norm` scalars are compared (fp32, relative tolerance 1e-5 for the loss). The batches are real Lumos
layouts (text + 2 frames) with MM-RoPE positions and the frame-causal mask, so equal gradient
norms and equal losses after every Adam step cover the MM-RoPE and mask paths under each layout. Strict CPU mode is on, so the runs also
prove that no torch.cuda call is reached outside the compatibility module.
"""

import pytest

from conftest import TINY_RECIPE, read_scalars, run_train

pytestmark = pytest.mark.distributed

ITERS = 4
REL_TOL = {"lm loss": 1e-5,
           # The global grad norm sums squares over differently sharded tensors, in a different
           # order per layout: fp32 rounding shows at ~1e-5 relative, so it gets 1e-4.
           "grad-norm": 1e-4}


def _losses(tmp_path, name, extra, nproc):
    tb = tmp_path / name
    proc = run_train(["--config", str(TINY_RECIPE), "--train-iters", str(ITERS),
                      "--tensorboard-dir", str(tb), *extra], nproc=nproc)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    curves = {}
    for tag in ("lm loss", "grad-norm"):
        scalars = read_scalars(tb, tag)
        assert [step for step, _ in scalars] == list(range(1, ITERS + 1))
        curves[tag] = [v for _, v in scalars]
    return curves


def _assert_same_curve(ref, got, what):
    for tag in ("lm loss", "grad-norm"):
        for i, (a, b) in enumerate(zip(ref[tag], got[tag]), start=1):
            assert abs(a - b) <= REL_TOL[tag] * abs(a), f"{what}: iteration {i} {tag} {b} != {a}"
    assert ref["lm loss"][-1] < ref["lm loss"][0], "the reference run did not learn"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    return {layers: _losses(tmp, f"tp1_{layers}", [f"model.num_layers={layers}"], 1)
            for layers in (2, 4)}


@pytest.mark.parametrize("name, extra, layers", [
    ("tp2", ["--tensor-model-parallel-size", "2"], 2),
    ("tp2_sp", ["--tensor-model-parallel-size", "2", "--sequence-parallel"], 2),
    ("pp2", ["--pipeline-model-parallel-size", "2"], 2),
    ("pp2_vpp2", ["--pipeline-model-parallel-size", "2", "--virtual-pipeline-model-parallel-size", "2"], 4),
    ("dp2_distopt", ["--use-distributed-optimizer"], 2),
    ("cp2", ["--context-parallel-size", "2"], 2),
])
def test_two_process_layout_matches_one_process(tmp_path, reference, name, extra, layers):
    got = _losses(tmp_path, name, [*extra, f"model.num_layers={layers}"], 2)
    _assert_same_curve(reference[layers], got, name)


def test_impossible_layout_exits_with_one_line_naming_sizes(tmp_path):
    proc = run_train(["--config", str(TINY_RECIPE), "--tensor-model-parallel-size", "3"], nproc=2)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("lumos_megatron.train: error")]
    assert len(ours) == 1, proc.stderr
    assert "TP=3 x PP=1 x CP=1 = 3 ranks does not divide the world size 2" in ours[0]


def test_linear_biases_under_tp2_match_one_process(tmp_path):
    """With ``add_bias_linear`` megatron marks the column-parallel biases as sharded itself; our
    initialisation must not mark them twice, and the sharded (column) and replicated (row) biases
    must train as in one process."""
    extra = ["model.add_bias_linear=true", "model.num_layers=2"]
    ref = _losses(tmp_path, "bias_tp1", extra, 1)
    got = _losses(tmp_path, "bias_tp2", [*extra, "--tensor-model-parallel-size", "2"], 2)
    _assert_same_curve(ref, got, "add_bias_linear tp2")
