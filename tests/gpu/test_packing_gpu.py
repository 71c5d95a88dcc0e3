"""Packed rows on CUDA: each sample's logits inside a packed row equal its own forward, with the
compiled FlexAttention kernel and with TransformerEngine's bias path (te_bias, where installed);
and a packed flex run trains with the padded run's losses."""

import pytest
import torch

from lumos_megatron.config import parse_cli
from lumos_megatron.data.mock import MockVideoDataset
from lumos_megatron.models.attention.te_availability import transformer_engine_problem
from lumos_megatron.models.inputs import build_model_inputs
from lumos_megatron.objective import build_objective
from lumos_megatron.vocab import LumosVocab

from conftest import TINY_RECIPE, read_scalars, run_train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
MIXED = ["data.seq_length=192", "data.mock_layouts=[[2,4,4],[1,4,4],[3,4,8],[1,8,8]]"]


@pytest.mark.parametrize("backend", ["flex", "te_bias"])
def test_packed_forward_equals_per_sample_forward_on_cuda(megatron_single_process, backend):
    if backend == "te_bias" and transformer_engine_problem() is not None:
        pytest.skip("needs TransformerEngine (pip install -e '.[te]')")
    from lumos_megatron.models.lumos_model import build_model_chunks

    cfg = parse_cli(["--config", str(TINY_RECIPE), *MIXED, f"model.attention_backend={backend}"])
    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    data = MockVideoDataset(cfg, vocab)
    indices = [0, 1, 2, 3]
    samples = [data[i] for i in indices]
    objective = build_objective(cfg, vocab)
    plain = objective.targets(samples, indices, 0, 192)
    packed = objective.targets(samples, indices, 0, 640, packed=True)
    common = dict(attention_backend_name=backend, rope_variant=cfg.model.rope_variant)
    per_sample = build_model_inputs(plain.tokens, vocab, **common)
    inputs = build_model_inputs(packed.tokens, vocab, documents=packed.documents, **common)
    (model,) = build_model_chunks(cfg)
    model.cuda().eval()
    with torch.no_grad():
        ref = model(plain.tokens.cuda(), per_sample.position_ids.cuda(), per_sample.attention_mask.to("cuda"))
        got = model(packed.tokens.cuda(), inputs.position_ids.cuda(), inputs.attention_mask.to("cuda"))
    start = 0
    for b, n in enumerate(plain.real_lengths):
        torch.testing.assert_close(got[0, start:start + n], ref[b, :n], rtol=1e-4, atol=1e-4)
        start += n


def test_packed_flex_training_follows_the_padded_run(tmp_path):
    curves = {}
    for name, extra in (("padded", []), ("packed", ["train.micro_batch_size=1", "data.packing=true"])):
        tb = tmp_path / name
        proc = run_train(["--config", str(TINY_RECIPE), "--train-iters", "3", "--tensorboard-dir", str(tb),
                          "model.attention_backend=flex", *MIXED, *extra])
        assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        curves[name] = [v for _, v in read_scalars(tb, "lm loss")]
    for a, b in zip(curves["padded"], curves["packed"]):
        assert abs(a - b) <= 1e-4 * abs(a)
