"""Packing changes no number: with the same global batches (length-grouped, mixed shapes), packed
runs at 1 process, TP=2, PP=2 and DP=2 with the distributed optimizer give the padded 1-process
run's per-iteration ``lm loss`` and ``grad-norm`` (fp32 tolerance) while computing fewer tokens;
a packed, length-grouped run resumed from its checkpoint continues exactly.
"""

import pytest

from conftest import TINY_RECIPE, read_scalars, run_train

pytestmark = pytest.mark.distributed

ITERS = 3
MIXED = ["data.seq_length=192", "data.mock_layouts=[[2,4,4],[1,4,4],[3,4,8],[1,8,8]]",
         "data.length_grouped=true", "data.length_group_window=2"]
PACKED = ["train.micro_batch_size=1", "data.packing=true"]
REL = {"lm loss": 1e-5, "grad-norm": 1e-4}  # as test_parallel_equivalence: other layouts sum in other orders


def _run(tmp_path, name, extra, nproc=1, iters=ITERS):
    tb = tmp_path / name
    proc = run_train(["--config", str(TINY_RECIPE), "--train-iters", str(iters), "--tensorboard-dir", str(tb),
                      *MIXED, *extra], nproc=nproc)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return {tag: dict(read_scalars(tb, tag)) for tag in ("lm loss", "grad-norm", "tokens", "data/padding-fraction")}


def _assert_same(ref, got, steps, what, rel=REL):
    for tag in ("lm loss", "grad-norm"):
        for step in steps:
            a, b = ref[tag][step], got[tag][step]
            assert abs(a - b) <= rel[tag] * abs(a), f"{what}: iteration {step} {tag} {b} != {a}"


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("padded"), "padded", [])


@pytest.mark.parametrize("name, extra, nproc", [
    ("packed", [], 1),
    ("packed_tp2_sp", ["--tensor-model-parallel-size", "2", "--sequence-parallel"], 2),
    ("packed_pp2", ["--pipeline-model-parallel-size", "2"], 2),
    ("packed_dp2_distopt", ["--use-distributed-optimizer"], 2),
])
def test_packing_gives_the_padded_losses_with_fewer_tokens(tmp_path, padded, name, extra, nproc):
    got = _run(tmp_path, name, [*PACKED, *extra], nproc)
    _assert_same(padded, got, range(1, ITERS + 1), name)
    # Under PP every packed sequence has the one exchanged length (data.seq_length), so a step of
    # long samples may need as many sequences as the padded run has rows: never more tokens.
    fewer = (lambda a, b: a <= b) if "pp2" in name else (lambda a, b: a < b)
    for step in range(1, ITERS + 1):
        assert fewer(got["tokens"][step], padded["tokens"][step]), name
        assert fewer(got["data/padding-fraction"][step], padded["data/padding-fraction"][step]), name


def test_packed_length_grouped_run_resumes_exactly(tmp_path, padded):
    save = tmp_path / "ckpt"
    straight = _run(tmp_path, "straight", PACKED, iters=4)
    _run(tmp_path, "first", [*PACKED, "--save", str(save), "--load", str(save)], iters=2)
    resumed = _run(tmp_path, "resumed", [*PACKED, "--save", str(save), "--load", str(save)], iters=4)
    _assert_same(straight, resumed, (3, 4), "resume", rel={"lm loss": 1e-6, "grad-norm": 1e-5})
