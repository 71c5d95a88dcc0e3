"""``load_model`` of an imported official checkpoint against an independent plain-PyTorch forward.

The reference (``tests/reference_forward.py``) is written from docs/method.md with no code from
``lumos_megatron``: its own layout parser, MM-RoPE tables, frame-causal mask, QK-norm and
SwiGLU. Our megatron-core model, built from the imported torch_dist checkpoint, must give the
same fp32 logits (1e-5 relative) on text + video sequences, batched with right padding.
"""

import pytest
import torch

from official_format import random_official_state_dict, tiny_official_config, write_official_checkpoint
from reference_forward import official_tiny_tokens, official_video_tokens, reference_logits
from lumos_megatron.checkpoint.directory import CheckpointError
from lumos_megatron.conversion.import_hf import import_hf

REL = 1e-5


def _relative_error(got, ref):
    return ((got - ref).abs().max() / ref.abs().max()).item()


def _batch(vocab_codes, seed=0):
    """Two text+video samples of different prompt lengths and frame counts, right-padded with 0."""
    gen = torch.Generator().manual_seed(seed)
    a = official_video_tokens(torch.randint(100, 8000, (9,), generator=gen).tolist(),
                              torch.randint(0, vocab_codes, (2, 4, 8), generator=gen))
    b = official_video_tokens(torch.randint(100, 8000, (23,), generator=gen).tolist(),
                              torch.randint(0, vocab_codes, (3, 4, 4), generator=gen))
    batch = torch.zeros(2, max(a.numel(), b.numel()), dtype=torch.long)
    batch[0, : a.numel()], batch[1, : b.numel()] = a, b
    return batch, (a.numel(), b.numel())


@pytest.fixture(scope="module", params=[True, False], ids=["mm_rope", "1d_rope"])
def imported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load_model")
    config = tiny_official_config(mm_rope=request.param)
    state = random_official_state_dict(config, seed=3)
    hf = write_official_checkpoint(tmp / "hf", config, state, num_shards=2)
    import_hf(hf, tmp / "ckpt", progress=False)
    return tmp / "ckpt", config, state


def test_logits_equal_the_independent_reference(imported):
    from lumos_megatron.inference import load_model

    ckpt, config, state = imported
    model = load_model(ckpt)
    assert model.vocab.vocab_size == config["vocab_size"]
    assert model.config.model.rope_variant == ("mm_rope" if config["mm_rope"] else "1d")
    tiny = official_tiny_tokens()
    got = model.forward_logits(tiny)
    assert got.shape == (1, tiny.numel(), config["vocab_size"]) and got.dtype == torch.float32
    assert _relative_error(got, reference_logits(state, config, tiny.unsqueeze(0))) <= REL

    batch, lengths = _batch(config["vocab_size"] - 65536)
    got = model.forward_logits(batch)
    ref = reference_logits(state, config, batch)
    for b, n in enumerate(lengths):  # real tokens only (padding logits are not compared)
        assert _relative_error(got[b, :n], ref[b, :n]) <= REL


def test_bf16_and_explicit_iteration(imported):
    from lumos_megatron.inference import load_model

    ckpt, config, state = imported
    tiny = official_tiny_tokens()
    ref = reference_logits(state, config, tiny.unsqueeze(0))
    model = load_model(ckpt / "iter_0000000", dtype=torch.bfloat16)
    got = model.forward_logits(tiny)
    assert got.dtype == torch.float32 and next(model._model.parameters()).dtype == torch.bfloat16
    assert _relative_error(got, ref) < 0.05
    assert load_model(ckpt, iteration=0).checkpoint == ckpt / "iter_0000000"


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    from lumos_megatron.inference import load_model

    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="latest_checkpointed_iteration.txt"):
        load_model(tmp_path / "empty")
