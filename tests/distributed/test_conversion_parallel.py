"""Imported official checkpoints at other layouts, through the real entry points (gloo).

* ``load_model`` of an imported checkpoint at TP=2 and at PP=2 gives the TP=1 logits, which
  equal the independent plain-PyTorch reference;
* training from the imported checkpoint (``--load C`` alone at TP=1; its ``run_config.yaml``, which
  sets ``--finetune``, at TP=2) at TP=2 has the TP=1 losses; ``--finetune`` from a trained TP=2 checkpoint at PP=2 with the distributed
  optimizer starts at iteration 0;
* export of that PP=2 checkpoint with optimizer state re-imports to the same model tensors, and
  inspect reports its layout and optimizer state.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, _free_port, read_scalars, run_train
from official_format import random_official_state_dict, tiny_official_config, write_official_checkpoint
from reference_forward import official_video_tokens, reference_logits
from lumos_megatron.conversion.cli import inspect_main
from lumos_megatron.conversion.export_hf import export_hf
from lumos_megatron.conversion.import_hf import import_hf
from lumos_megatron.conversion.torch_dist_io import TorchDistReader

pytestmark = pytest.mark.distributed

LOGITS = REPO / "tests" / "distributed" / "_load_model_logits.py"
REL = 1e-5


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conversion_parallel")
    config = tiny_official_config()
    state = random_official_state_dict(config, seed=11)
    hf = write_official_checkpoint(tmp / "hf", config, state)
    import_hf(hf, tmp / "ckpt", progress=False)
    return tmp, config, state


def _logits(tmp, ckpt, tokens_file, name, tp, pp, nproc):
    out = tmp / f"{name}.pt"
    prefix = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LUMOS_STRICT_CPU": "1"}
    proc = subprocess.run([*prefix, str(LOGITS), str(ckpt), str(tokens_file), str(out), str(tp), str(pp)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return torch.load(out)


def _rel(got, ref):
    return ((got - ref).abs().max() / ref.abs().max()).item()


def test_load_model_at_tp2_and_pp2(imported):
    tmp, config, state = imported
    gen = torch.Generator().manual_seed(1)
    tokens = official_video_tokens(list(range(200, 215)), torch.randint(0, 64, (3, 4, 4), generator=gen)).unsqueeze(0)
    tokens_file = tmp / "tokens.pt"
    torch.save(tokens, tokens_file)
    tp1 = _logits(tmp, tmp / "ckpt", tokens_file, "tp1", 1, 1, 1)
    assert _rel(tp1, reference_logits(state, config, tokens)) <= REL
    for name, tp, pp in (("tp2", 2, 1), ("pp2", 1, 2)):
        assert _rel(_logits(tmp, tmp / "ckpt", tokens_file, name, tp, pp, 2), tp1) <= REL, name


def _losses(tb):
    return dict(read_scalars(tb, "lm loss"))


def _train(args, nproc):
    proc = run_train(args, nproc=nproc)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_finetune_from_imported_checkpoint_and_export_of_trained_ones(imported, capsys):
    tmp, _, _ = imported
    recipe = tmp / "ckpt" / "iter_0000000" / "run_config.yaml"
    # Without --config the checkpoint supplies the model (Megatron's --use-checkpoint-args).
    tp1 = _train(["--load", str(tmp / "ckpt"), "--train-iters", "2", "--tensorboard-dir", str(tmp / "tb1")], 1)
    assert "holds model weights only" in tp1.stdout
    tp2 = _train(["--config", str(recipe), "--train-iters", "2", "--tensor-model-parallel-size", "2",
                  "--tensorboard-dir", str(tmp / "tb2"), "--save", str(tmp / "trained_tp2")], 2)
    assert "holds model weights only" not in tp2.stdout and "(--finetune)" in tp2.stdout
    ref, got = _losses(tmp / "tb1"), _losses(tmp / "tb2")
    assert sorted(got) == [1, 2]
    for step in (1, 2):
        assert abs(got[step] - ref[step]) <= REL * abs(ref[step]), (step, got[step], ref[step])

    # --finetune from a trained (optimizer-carrying) TP=2 checkpoint, at PP=2 with the DistOpt.
    pp2 = _train(["--config", str(recipe), "checkpoint.finetune=false", "--finetune",
                  "--load", str(tmp / "trained_tp2"), "--pipeline-model-parallel-size", "2",
                  "--use-distributed-optimizer", "--train-iters", "1", "--save", str(tmp / "trained_pp2")], 2)
    assert "(--finetune): starting at iteration 0" in pp2.stdout and "iteration        1/       1" in pp2.stdout

    capsys.readouterr()
    assert inspect_main([str(tmp / "trained_pp2"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["iteration"] == 1 and summary["optimizer_state"] == "distributed"
    assert summary["saved_parallel_layout"]["pp"] == 2 and not summary["weights_only"]

    export_hf(tmp / "trained_pp2", tmp / "exported", progress=False)
    import_hf(tmp / "exported", tmp / "reimported", progress=False)
    trained = TorchDistReader(tmp / "trained_pp2" / "iter_0000001")
    again = TorchDistReader(tmp / "reimported" / "iter_0000000")
    model_keys = [k for k in trained.tensors() if not k.startswith("optimizer")]
    assert set(model_keys) == set(again.tensors())
    for key in model_keys:
        assert torch.equal(trained.read(key), again.read(key)), key
