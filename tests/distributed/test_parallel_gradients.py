"""Per-parameter gradient evidence: TP=2, TP=2+SP, PP=2 and CP=2 give 1 process's gradients.

test_parallel_equivalence compares losses and the global grad norm; a norm can hide a wrong
shard (e.g. a swapped SwiGLU half, a missing SP norm reduction, a mis-numbered pipeline layer).
Here one forward/backward of one global batch of the tiny recipe (real Lumos layouts, MM-RoPE,
frame-causal mask, 4 micro-batches) runs once in a single process and once per layout in 2 gloo
processes (_dump_grads.py); every parameter's full gradient (DDP main_grad after megatron's
finalize_model_grads, TP shards gathered, stages merged under global layer numbers) must match:
``||g - g_ref|| <= 1e-5 ||g_ref||``, plus a tiny absolute floor for near-zero gradients.
"""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, _free_port

pytestmark = pytest.mark.distributed

SCRIPT = REPO / "tests" / "distributed" / "_dump_grads.py"
LAYOUTS = {
    "tp2": "--tensor-model-parallel-size=2",
    "tp2_sp": "--tensor-model-parallel-size=2,--sequence-parallel",
    "pp2": "--pipeline-model-parallel-size=2",
    "cp2": "--context-parallel-size=2",
}
REL_TOL = 1e-5
# fp32 rounding of a sum of O(1e2) terms, relative to the largest gradient norm of the model.
ABS_FLOOR = 1e-7


@pytest.fixture(scope="module")
def gradients(tmp_path_factory):
    """{layout: {name: grad}} for the reference and every layout; the two launches overlap."""
    out = tmp_path_factory.mktemp("grads")
    env = dict(os.environ, LUMOS_STRICT_CPU="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    specs = [f"{name}:{args}" for name, args in LAYOUTS.items()]
    launches = {
        "ref": [sys.executable, str(SCRIPT), str(out), "ref"],
        "2 processes": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-port", str(_free_port()), str(SCRIPT), str(out), *specs],
    }
    procs = {name: subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for name, cmd in launches.items()}
    for name, proc in procs.items():
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name} failed:\n{log[-5000:]}"
    return {name: torch.load(out / f"{name}.pt") for name in ["ref", *LAYOUTS]}


def test_reference_gradients_are_complete_and_nonzero(gradients):
    ref = gradients["ref"]
    assert "output_layer.weight" in ref and "decoder.layers.1.mlp.linear_fc1.weight" in ref
    zero = [name for name, grad in ref.items() if not torch.any(grad != 0)]
    assert not zero, f"parameters without gradient in the reference: {zero}"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_parameter_gradient_matches_one_process(gradients, layout):
    ref, got = gradients["ref"], gradients[layout]
    assert got.keys() == ref.keys(), sorted(got.keys() ^ ref.keys())
    scale = max(grad.norm().item() for grad in ref.values())
    bad = []
    for name, expected in ref.items():
        assert got[name].shape == expected.shape, name
        diff = (got[name] - expected).norm().item()
        if diff > REL_TOL * expected.norm().item() + ABS_FLOOR * scale:
            bad.append(f"{name}: |diff| {diff:.3e}, |ref| {expected.norm().item():.3e}")
    assert not bad, f"{layout}: " + "; ".join(bad)
