"""AR-DF generation on CUDA: the bf16 KV-cache path against a full forward, and sampling on the device.

* bf16: the cached provider (megatron's layers with the cache-aware core attention) gives the
  logits of a full forward over the explicit sequence, to bf16 rounding.
* Sampling on the device: a generator on the GPU keeps the sampler there (``--sample-device
  model``); the same seed gives the same tokens twice, valid video ids, and the decoding step
  reads nothing back from the device (the planner's audit, on real CUDA tensors).
"""

import pytest
import torch

from official_format import imported_tiny_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GRID = (4, 4)
PROMPT = [0, 101, 102, 103, 104, 8710]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return imported_tiny_checkpoint(tmp_path_factory.mktemp("generation_gpu"), seed=5)


def test_bf16_kv_cache_logits_equal_a_full_forward(checkpoint):
    from lumos_megatron.inference import load_model
    from lumos_megatron.inference.frame_decoding import code_positions, frame_template
    from lumos_megatron.inference.frame_logits import CachedLogits, FullForwardLogits

    model = load_model(checkpoint, dtype=torch.bfloat16, device="cuda")
    contexts = [PROMPT + [9004, 8806, 8816], [9004, 8806, 8816]]
    block = frame_template(model.vocab, GRID)
    codes = code_positions(GRID)
    got = CachedLogits(model, 2, 200).frame_logits([0, 1], contexts, [block, block], codes)
    ref = FullForwardLogits(model).frame_logits([0, 1], contexts, [block, block], codes)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    assert ((got - ref).abs().max() / ref.abs().max()).item() <= 3e-2


def test_device_generators_are_deterministic_and_stay_on_the_device(checkpoint):
    from lumos_megatron.inference import generate_video_tokens, load_model

    model = load_model(checkpoint, dtype=torch.bfloat16, device="cuda")

    def run(seed):
        return generate_video_tokens(model, PROMPT, latent_grid=GRID, fps=5, duration=1, steps=4, cfg_scale=15.0,
                                     history_mask_ratio=0.7,
                                     generator=torch.Generator(device="cuda").manual_seed(seed))

    first, again, other = run(3), run(3), run(4)
    assert first == again and first != other
    assert first[0] == 9004 and first[-1] == 9005
    codes = [t for t in first if t >= model.vocab.visual_offset and t != model.vocab.mask]
    assert len(codes) == 2 * GRID[0] * GRID[1]


def test_decode_step_on_cuda_reads_nothing_back():
    from lumos_megatron.inference.frame_decoding import FrameState, decode_step
    from lumos_megatron.plan.step_audit import StepAudit
    from lumos_megatron.vocab import LumosVocab

    vocab = LumosVocab(vocab_size=65600)
    n, steps = 64, 6
    gen = torch.Generator(device="cuda").manual_seed(0)
    state = FrameState.start(n, vocab, 1.0, torch.device("cuda"))
    with StepAudit("cuda") as audit:
        for step in range(steps):
            cond = torch.randn(n, vocab.vocab_size, device="cuda")
            uncond = torch.randn(n, vocab.vocab_size, device="cuda")
            audit.record = True
            state = decode_step(state, cond, uncond, step, steps, 15.0, vocab, gen)
            audit.record = False
    assert audit.findings("syncs") == [] and audit.findings("leaves_device") == []
    assert state.tokens.device.type == "cuda" and not bool(state.unknown.any())
