"""AR-DF generation (docs/method.md §5) on a tiny imported model.

* the schedules: tokens left masked per step (float32 cosine, the T = 6 quirk), the ρ_inf pattern;
* ``generate_video_tokens`` equals the official algorithm written out plainly below (a full
  forward over the explicit sequence every step, no cache, the §5.2a draw order), for T2V with
  2 and 3 latent frames at T = 4 and T = 6, and for I2V;
* KV-cache logits of frame k equal a full forward over the explicitly ρ_inf-masked history;
* cached = uncached, batched CFG = sequential, a batch of prompts = one at a time;
* the cache's layer forward adds the linear biases megatron returns separately (``add_bias_linear``).
"""

import math

import pytest
import torch

from conftest import TINY_RECIPE, run_train
from official_format import imported_tiny_checkpoint
from lumos_megatron.ardf import history_mask_indices, unmask_schedule

GRID = (4, 4)
PROMPT = [0, 101, 102, 103, 104, 8710]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from lumos_megatron.inference import load_model

    return load_model(imported_tiny_checkpoint(tmp_path_factory.mktemp("generation"), seed=5))


def test_unmask_schedule_and_history_pattern():
    assert unmask_schedule(4032, 50)[:5] == [4030, 4024, 4014, 4000, 3982]
    assert unmask_schedule(4032, 50)[-1] == 0 and len(unmask_schedule(4032, 50)) == 50
    # float32 cos(pi/3) = 0.49999997: floor(16 * that) = 7, not 8 (float64 would give 8)
    assert unmask_schedule(16, 6) == [15, 13, 11, 7, 4, 0]
    assert unmask_schedule(16, 4) == [14, 11, 6, 0]
    assert unmask_schedule(3, 5) == [2, 1, 1, 1, 0]  # clamped to [1, masked - 1]
    assert history_mask_indices(20, 0.7) == [0, 1, 3, 4, 6, 7, 9, 10, 11, 13, 14, 16, 17, 19]
    assert history_mask_indices(20, 0.0) == [0]  # officially at least one position
    assert len(history_mask_indices(4 * 85, 0.3)) == 102


def _official_generation(model, prompt, fps, duration, steps, cfg, rho, seed, given=(), frames=None):
    """The official sampler, written out plainly: explicit sequences, full forward every step."""
    rows, cols = GRID
    n = rows * cols
    total = frames or math.ceil((fps * duration - 1) / 4) + 1
    g = torch.Generator().manual_seed(seed)
    video = [9004, 8804 + duration, 8804 + fps] + [t for b in given for t in b]
    history = []  # what the caches hold: generated frames with the rho_inf mask
    content = rows * (cols + 1)
    count = max(1, round(rho * content))
    hidden = [round(k * content / count) for k in range(count)]
    out = list(video)
    temperature = 1.0
    code_at = [3 + r * (cols + 1) + c for r in range(rows) for c in range(cols)]
    for _ in range(total - len(given)):
        block = [8197, 8805, 8805] + ([9003] * cols + [8803]) * rows + [8196]
        unknown = torch.ones(n, dtype=torch.bool)
        for s in range(steps):
            cond = prompt + video + history + block
            uncond = video + history + block
            width = max(len(cond), len(uncond))
            batch = torch.zeros(2, width, dtype=torch.long)
            batch[0, : len(cond)] = torch.tensor(cond)
            batch[1, : len(uncond)] = torch.tensor(uncond)
            logits = model.forward_logits(batch)
            lc = logits[0, [len(cond) - len(block) + i for i in code_at]]
            lu = logits[1, [len(uncond) - len(block) + i for i in code_at]]
            mixed = cfg * (lc - lu) + lu
            mixed[:, :65536] = -math.inf
            probs = torch.softmax(mixed, -1)
            sampled = torch.multinomial(probs, 1, generator=g)[:, 0]
            current = torch.tensor([block[i] for i in code_at])
            sampled = torch.where(unknown, sampled, current)
            selected = probs.gather(-1, sampled[:, None])[:, 0]
            selected = torch.where(unknown, selected, torch.tensor(torch.finfo(torch.float32).max))
            mask_ratio = torch.cos(torch.tensor((s + 1) / steps) * math.pi / 2)
            mask_len = int(torch.floor(n * mask_ratio))
            mask_len = max(1, min(int(unknown.sum()) - 1, mask_len))
            temperature = temperature * (1 - (s + 1) / steps)
            u = torch.zeros_like(selected).uniform_(0, 1, generator=g)
            gumbel = -torch.log(torch.clamp(-torch.log(torch.clamp(u, min=1e-20)), min=1e-20))
            confidence = torch.log(torch.clamp(selected, min=1e-20)) + temperature * gumbel
            if s < steps - 1:
                remask = confidence < torch.sort(confidence).values[mask_len]
                sampled = torch.where(remask, torch.tensor(9003), sampled)
                unknown = remask
            for i, t in zip(code_at, sampled.tolist()):
                block[i] = t
        out += block
        masked = list(block)
        for i in hidden:
            masked[3 + i] = 9003
        history += masked
    return out + [9005]


@pytest.mark.parametrize("steps,duration,fps", [(4, 1, 5), (6, 1, 9)])  # 2 and 3 latent frames
def test_generation_equals_the_plain_official_algorithm(model, steps, duration, fps):
    from lumos_megatron.inference import generate_video_tokens

    expected = _official_generation(model, PROMPT, fps, duration, steps, 15.0, 0.7, seed=0)
    got = generate_video_tokens(model, PROMPT, latent_grid=GRID, fps=fps, duration=duration, steps=steps,
                                cfg_scale=15.0, history_mask_ratio=0.7, generator=torch.Generator().manual_seed(0))
    assert got == expected
    assert got[0] == 9004 and got[-1] == 9005 and len(got) == 4 + (math.ceil((fps * duration - 1) / 4) + 1) * 24


def test_i2v_keeps_the_given_frame_and_matches(model):
    from lumos_megatron.inference import generate_video_tokens

    codes = torch.arange(16) % 64 + 65536
    given = [8197, 8805, 8805]
    for r in range(4):
        given += codes[4 * r: 4 * r + 4].tolist() + [8803]
    given += [8196]
    expected = _official_generation(model, PROMPT, 12, 1, 4, 15.0, 0.7, seed=3, given=[given], frames=3)
    got = generate_video_tokens(model, PROMPT, latent_grid=GRID, fps=12, duration=1, steps=4, cfg_scale=15.0,
                                history_mask_ratio=0.7, generator=torch.Generator().manual_seed(3),
                                num_latent_frames=3, given_frames=[given])
    assert got == expected and got[3: 3 + len(given)] == given


def test_kv_cache_logits_equal_a_full_forward_over_the_masked_history(model):
    from lumos_megatron.inference.frame_decoding import code_positions, frame_template, mask_history
    from lumos_megatron.inference.frame_logits import CachedLogits, FullForwardLogits

    vocab = model.vocab
    gen = torch.Generator().manual_seed(1)
    finished = [frame_template(vocab, GRID) for _ in range(2)]
    for block in finished:
        for i in code_positions(GRID).tolist():
            block[i] = 65536 + int(torch.randint(0, 64, (1,), generator=gen))
    history = history_mask_indices(20, 0.7)
    prefix = [9004, 8806, 8816]
    contexts = [PROMPT + prefix, prefix]
    current = frame_template(vocab, GRID)
    cached = CachedLogits(model, 2, 200)
    codes = code_positions(GRID)
    for k in range(3):  # frame k, after k finished frames
        got = cached.frame_logits([0, 1], contexts, [current, current], codes)
        ref = FullForwardLogits(model).frame_logits([0, 1], contexts, [current, current], codes)
        assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-5, k
        if k < 2:
            contexts = [c + mask_history(finished[k], history, vocab) for c in contexts]
    assert 9003 in contexts[0][-24:]  # the history really is masked


def _assert_cache_matches_full_forward(model):
    """One row's block logits: KV cache == full forward (fp32 rounding)."""
    from lumos_megatron.inference.frame_decoding import code_positions, frame_template
    from lumos_megatron.inference.frame_logits import CachedLogits, FullForwardLogits

    contexts = [PROMPT + [9004, 8806, 8816]]
    current = [frame_template(model.vocab, GRID)]
    codes = code_positions(GRID)
    got = CachedLogits(model, 1, 200).frame_logits([0], contexts, current, codes)
    ref = FullForwardLogits(model).frame_logits([0], contexts, current, codes)
    assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-5


def test_kv_cache_adds_the_linear_biases(tmp_path):
    from lumos_megatron.inference import load_model

    proc = run_train(["--config", str(TINY_RECIPE), "model.add_bias_linear=true", "--train-iters", "1",
                      "--save", str(tmp_path / "ckpt")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    biased = load_model(tmp_path / "ckpt")
    gen = torch.Generator().manual_seed(0)
    linear_biases = [p for name, p in biased._model.named_parameters()
                     if name.endswith("bias") and "layernorm" not in name]
    assert len(linear_biases) == 4 * biased.config.model.num_layers  # qkv, proj, fc1, fc2
    with torch.no_grad():  # non-zero biases, so that a dropped one shows in the logits
        for p in linear_biases:
            p.copy_(torch.randn(p.shape, generator=gen))
    _assert_cache_matches_full_forward(biased)


def test_cache_batching_and_cfg_order_do_not_change_tokens(model):
    from lumos_megatron.inference import SamplerSettings, VideoRequest, generate_batch

    prompts = [PROMPT, [0, 300, 301, 8710], [0, 500, 8710]]

    def requests():
        return [VideoRequest(p, GRID, 5, 1, torch.Generator().manual_seed(10 + i)) for i, p in enumerate(prompts)]

    base = SamplerSettings(steps=4, cfg_scale=15.0)
    together = generate_batch(model, requests(), base)
    one_by_one = [generate_batch(model, [r], base)[0] for r in requests()]
    uncached = generate_batch(model, requests(), SamplerSettings(steps=4, cfg_scale=15.0, kv_cache=False))
    sequential_cfg = generate_batch(model, requests(), SamplerSettings(steps=4, cfg_scale=15.0, batch_cfg=False))
    assert together == one_by_one == uncached == sequential_cfg
    per_frame = generate_batch(model, requests(), SamplerSettings(steps=4, cfg_scale=15.0,
                                                                  temperature_schedule="per_frame"))
    assert per_frame[0][:27] == together[0][:27]  # the first frame is the same either way


def _count_lm_head_rows(model, monkeypatch):
    """Wrap the output layer: the number of rows (positions x sequences) each call receives."""
    layer = model._model.output_layer
    seen = []
    original = layer.forward

    def counting(x, *args, **kwargs):
        seen.append(x.shape[0] * x.shape[1])  # [positions, batch, hidden]
        return original(x, *args, **kwargs)

    monkeypatch.setattr(layer, "forward", counting)
    return seen


def test_no_path_builds_full_sequence_logits(model, monkeypatch):
    """Both providers run the LM head on the block's code positions only: rows x N, never rows x L."""
    from lumos_megatron.inference.frame_decoding import code_positions, frame_template
    from lumos_megatron.inference.frame_logits import CachedLogits, FullForwardLogits

    seen = _count_lm_head_rows(model, monkeypatch)
    contexts = [PROMPT + [9004, 8806, 8816], [9004, 8806, 8816]]
    block = frame_template(model.vocab, GRID)
    codes = code_positions(GRID)
    full = FullForwardLogits(model).frame_logits([0, 1], contexts, [block, block], codes)
    cached = CachedLogits(model, 2, 200).frame_logits([0, 1], contexts, [block, block], codes)
    assert full.shape == cached.shape == (2, codes.numel(), model.vocab.vocab_size)
    assert seen == [2 * codes.numel(), 2 * codes.numel()]
    assert ((cached - full).abs().max() / full.abs().max()).item() <= 1e-5


def test_tied_embeddings_generate_with_the_cache(tmp_path):
    from lumos_megatron.inference import load_model

    proc = run_train(["--config", str(TINY_RECIPE), "model.tie_embeddings=true", "--train-iters", "1",
                      "--save", str(tmp_path / "ckpt")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    tied = load_model(tmp_path / "ckpt")
    assert tied._model.share_embeddings_and_output_weights
    _assert_cache_matches_full_forward(tied)


def test_query_chunks_of_the_cached_attention_change_nothing(model, monkeypatch):
    """The cached core attention splits the queries to bound the score tensor; the logits are the
    same with chunks of one query as with one chunk."""
    from lumos_megatron.inference import kv_cache
    from lumos_megatron.inference.frame_decoding import code_positions, frame_template
    from lumos_megatron.inference.frame_logits import CachedLogits

    contexts = [PROMPT + [9004, 8806, 8816], [9004, 8806, 8816]]
    block = frame_template(model.vocab, GRID)
    codes = code_positions(GRID)
    whole = CachedLogits(model, 2, 200).frame_logits([0, 1], contexts, [block, block], codes)
    monkeypatch.setattr(kv_cache, "SCORE_BUDGET_BYTES", 1)  # one query per chunk
    chunked = CachedLogits(model, 2, 200).frame_logits([0, 1], contexts, [block, block], codes)
    assert ((chunked - whole).abs().max() / whole.abs().max()).item() <= 1e-5  # fp32 rounding of other matmul shapes
