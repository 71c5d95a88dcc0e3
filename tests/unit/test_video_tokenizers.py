"""Video tokenizers: FSQ index convention, causal FSQ autoencoder, Cosmos TorchScript wrapper, specs."""

import math

import numpy as np
import pytest
import torch

import tiny_cosmos
from lumos_megatron.tokenizers.video import (
    COSMOS_LEVELS,
    CosmosVideoTokenizer,
    FSQuantizer,
    FSQVideoAutoencoder,
    FSQVideoConfig,
    FSQVideoTokenizer,
    fsq_basis,
    latent_frames_for,
    load_video_tokenizer,
    rgb_frames_for,
    save_fsq_checkpoint,
)

TINY = FSQVideoConfig(channels=(8, 8, 8), norm_groups=4)


def random_video(t, h=32, w=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), generator=gen, dtype=torch.uint8)


def mixed_radix_digits(index, levels):
    """Digits of ``index`` with the first level varying fastest (written independently of fsq.py)."""
    digits = []
    for level in levels:
        digits.append(index % level)
        index //= level
    return digits


# ----------------------------------------------------------------------------------- FSQ quantizer


def test_fsq_basis_and_codebook_size_match_cosmos():
    assert fsq_basis(COSMOS_LEVELS).tolist() == [1, 8, 64, 512, 2560, 12800]
    assert FSQuantizer(COSMOS_LEVELS).codebook_size == 64000
    assert FSQuantizer().codebook_size == 1000 and FSQuantizer().levels == (8, 5, 5, 5)


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), COSMOS_LEVELS, (3, 4)])
def test_fsq_indices_codes_round_trip_and_digit_order(levels):
    fsq = FSQuantizer(levels)
    indices = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(indices)
    assert codes.shape == (fsq.codebook_size, len(levels))
    assert torch.equal(fsq.codes_to_indices(codes), indices)
    gen = torch.Generator().manual_seed(0)
    for index in torch.randint(0, fsq.codebook_size, (20,), generator=gen).tolist():
        expected = [(d - lv // 2) / (lv // 2) for d, lv in zip(mixed_radix_digits(index, levels), levels)]
        assert codes[index].tolist() == pytest.approx(expected)


def test_fsq_even_levels_are_offset_and_every_level_is_reached():
    fsq = FSQuantizer((8, 5, 5, 5))
    # z = 0 lands on digit L // 2: the even level 8 uses -4..3 (not symmetric), 5 uses -2..2.
    codes, index = fsq(torch.zeros(1, 4), dim=1)
    assert index.item() == 4 * 1 + 2 * 8 + 2 * 40 + 2 * 200
    assert codes.tolist() == [[0.0, 0.0, 0.0, 0.0]]
    sweep = torch.linspace(-6, 6, 2001)[:, None].expand(-1, 4)
    codes, _ = fsq(sweep.contiguous(), dim=1)
    assert sorted(set(codes[:, 0].tolist())) == [v / 4 for v in range(-4, 4)]   # 8 levels, max 0.75
    assert sorted(set(codes[:, 1].tolist())) == [v / 2 for v in range(-2, 3)]   # 5 levels, symmetric


def test_fsq_straight_through_gradient_is_the_bound_derivative():
    fsq = FSQuantizer((8, 5))
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), requires_grad=True)
    codes, _ = fsq(z, dim=1)
    codes.sum().backward()
    z2 = z.detach().clone().requires_grad_()
    (fsq.bound(z2) / torch.tensor([4.0, 2.0])).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad)
    assert (z.grad > 0).all()


def test_fsq_channel_axis_and_errors():
    fsq = FSQuantizer()
    z = torch.randn(2, 4, 3, 5, 6)
    codes, indices = fsq(z, dim=1)
    assert codes.shape == z.shape and indices.shape == (2, 3, 5, 6) and indices.dtype == torch.int64
    assert torch.equal(fsq.codes_to_indices(codes.movedim(1, -1)), indices)
    with pytest.raises(ValueError, match="4 channels"):
        fsq(torch.randn(2, 3, 5), dim=1)
    with pytest.raises(ValueError, match="levels"):
        FSQuantizer((8, 1))
    with pytest.raises(TypeError, match="integers"):
        fsq.indices_to_codes(torch.zeros(3))


# ------------------------------------------------------------------------ causal FSQ autoencoder


@pytest.mark.parametrize("t", range(1, 14))
def test_latent_and_decoded_frame_counts(t):
    assert latent_frames_for(t) == 1 + math.ceil((t - 1) / 4)
    assert rgb_frames_for(latent_frames_for(t)) >= t
    assert rgb_frames_for(latent_frames_for(t)) - t < 4


@pytest.mark.parametrize("t,t_latent", [(1, 1), (5, 2), (6, 3), (9, 3)])
def test_autoencoder_shapes(t, t_latent):
    torch.manual_seed(0)
    model = FSQVideoAutoencoder(TINY)
    x = torch.rand(2, 3, t, 16, 24) * 2 - 1
    codes, indices = model.encode(x)
    assert codes.shape == (2, 4, t_latent, 2, 3) and indices.shape == (2, t_latent, 2, 3)
    assert model.decode_codes(codes).shape == (2, 3, 1 + 4 * (t_latent - 1), 16, 24)
    recon, _ = model(x)
    assert recon.shape == x.shape


def test_encoder_and_decoder_are_causal():
    torch.manual_seed(0)
    model = FSQVideoAutoencoder(TINY).eval()
    x = torch.rand(1, 3, 13, 16, 16) * 2 - 1
    with torch.no_grad():
        latent = model.encode_latent(x)
        for k in range(latent.shape[2] - 1):
            y = x.clone()
            y[:, :, 4 * k + 1:] = torch.rand_like(y[:, :, 4 * k + 1:]) * 2 - 1   # frames after group k
            perturbed = model.encode_latent(y)
            torch.testing.assert_close(perturbed[:, :, : k + 1], latent[:, :, : k + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(perturbed[:, :, k + 1:], latent[:, :, k + 1:])
        codes, _ = model.encode(x)
        frames = model.decode_codes(codes)
        for k in range(codes.shape[2] - 1):
            other = codes.clone()
            other[:, :, k + 1:] = -other[:, :, k + 1:]
            decoded = model.decode_codes(other)
            torch.testing.assert_close(decoded[:, :, : 4 * k + 1], frames[:, :, : 4 * k + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(decoded[:, :, 4 * k + 1:], frames[:, :, 4 * k + 1:])


def test_fsq_tokenizer_encode_decode_and_validation():
    torch.manual_seed(0)
    tok = FSQVideoTokenizer(FSQVideoAutoencoder(TINY))
    video = random_video(6)
    codes = tok.encode(video)
    assert codes.shape == (3, 4, 4) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < tok.codebook_size == 1000
    assert torch.equal(tok.encode(video.numpy()), codes)
    decoded = tok.decode(codes)
    assert decoded.shape == (9, 32, 32, 3) and decoded.dtype == torch.uint8
    assert tok.latent_shape(6, 32, 32) == (3, 4, 4) and tok.name == "fsq-8x5x5x5"
    with pytest.raises(TypeError, match="uint8"):
        tok.encode(video.float())
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        tok.encode(video[..., 0])
    with pytest.raises(ValueError, match="multiples of 8"):
        tok.encode(random_video(5, 30, 32))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        tok.decode(codes + 1000)
    with pytest.raises(TypeError, match="integers"):
        tok.decode(codes.float())


def test_fsq_checkpoint_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = FSQVideoAutoencoder(FSQVideoConfig(channels=(8, 8, 16), levels=(5, 5, 5), norm_groups=4))
    path = save_fsq_checkpoint(tmp_path / "tok.pt", model, extra={"step": 7})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.pt"]          # no temp file left
    loaded = FSQVideoTokenizer.from_checkpoint(path)
    assert loaded.model.config == model.config and loaded.codebook_size == 125
    video = random_video(5, 16, 16)
    assert torch.equal(loaded.encode(video), FSQVideoTokenizer(model).encode(video))
    with pytest.raises(FileNotFoundError, match="train_video_tokenizer"):
        FSQVideoTokenizer.from_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an FSQ video tokenizer checkpoint"):
        FSQVideoTokenizer.from_checkpoint(tmp_path / "other.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        FSQVideoTokenizer.from_checkpoint(tmp_path / "corrupt.pt")


# ------------------------------------------------------------------------ Cosmos TorchScript pair


@pytest.fixture(scope="module")
def cosmos_dir(tmp_path_factory):
    return tiny_cosmos.write_tiny_cosmos(tmp_path_factory.mktemp("cosmos"))


def official_preprocess(video):
    """Lumos-1 vid_tokens_from_pil_list: float64 pixels / 255 * 2 - 1, whole clip as [1, 3, T, H, W]."""
    x = video.numpy() / 255.0
    x = x * 2 - 1
    return torch.from_numpy(x).permute(3, 0, 1, 2)[None]


def test_cosmos_encode_follows_the_official_path(cosmos_dir):
    tok = CosmosVideoTokenizer(cosmos_dir)
    assert tok.device.type == "cpu" and tok.dtype == torch.float32 and tok.codebook_size == 64000
    video = random_video(9)
    with torch.no_grad():
        raw = torch.jit.load(str(cosmos_dir / "encoder.jit"))(official_preprocess(video).float())
    assert isinstance(raw, tuple) and len(raw) == 3 and raw[0].dtype == torch.int32
    codes = tok.encode(video)
    assert codes.dtype == torch.int64 and torch.equal(codes, raw[0][0].long())
    # Same index convention as Cosmos codes_to_indices: our FSQ maps its codes to its indices.
    assert torch.equal(FSQuantizer(COSMOS_LEVELS).codes_to_indices(raw[1].movedim(1, -1)), raw[0].long())


@pytest.mark.parametrize("t", [1, 6, 9])
def test_cosmos_shapes_and_ranges(cosmos_dir, t):
    tok = CosmosVideoTokenizer(cosmos_dir)
    codes = tok.encode(random_video(t, 24, 40, seed=t))
    assert codes.shape == tok.latent_shape(t, 24, 40) == (latent_frames_for(t), 3, 5)
    assert 0 <= int(codes.min()) and int(codes.max()) < 64000
    assert tok.decode(codes).shape == (1 + 4 * (codes.shape[0] - 1), 24, 40, 3)


def test_cosmos_decode_follows_the_official_path(cosmos_dir):
    tok = CosmosVideoTokenizer(cosmos_dir)
    codes = torch.randint(0, 64000, (2, 3, 4), generator=torch.Generator().manual_seed(3))
    frames = tok.decode(codes)
    with torch.no_grad():
        raw = torch.jit.load(str(cosmos_dir / "decoder.jit"))(codes[None].to(torch.int32))
    chw = raw[0].permute(1, 0, 2, 3).float()
    hwc = ((chw.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    expected = (hwc * 255).astype(np.uint8)                       # truncation, as _pil_from_chw_tensor
    assert frames.dtype == torch.uint8 and np.array_equal(frames.numpy(), expected)


def test_cosmos_bf16_agrees_with_fp32(cosmos_dir):
    video = random_video(9, 64, 64, seed=5)
    fp32 = CosmosVideoTokenizer(cosmos_dir, device="cpu").encode(video)
    bf16 = CosmosVideoTokenizer(cosmos_dir, device="cpu", dtype=torch.bfloat16).encode(video)
    assert (fp32 == bf16).float().mean().item() >= 0.95


def test_cosmos_errors(tmp_path, cosmos_dir):
    with pytest.raises(FileNotFoundError, match=r"lacks encoder\.jit, decoder\.jit.*encoder\.jit and decoder\.jit"):
        CosmosVideoTokenizer(tmp_path)
    encode_only = CosmosVideoTokenizer(cosmos_dir, load_decoder=False)
    with pytest.raises(RuntimeError, match="load_decoder=True"):
        encode_only.decode(torch.zeros(1, 1, 1, dtype=torch.long))
    continuous = tmp_path / "cv"
    continuous.mkdir()
    torch.jit.save(torch.jit.script(torch.nn.Conv3d(3, 16, 1)), str(continuous / "encoder.jit"))
    with pytest.raises(ValueError, match="continuous"):
        CosmosVideoTokenizer(continuous, load_decoder=False).encode(random_video(1, 8, 8))
    with pytest.raises(ValueError, match="visual offset"):
        CosmosVideoTokenizer(cosmos_dir).decode(torch.full((1, 1, 1), 65536 + 5))


# ----------------------------------------------------------------------------------------- specs


def test_load_video_tokenizer_specs(tmp_path, cosmos_dir):
    torch.manual_seed(0)
    ckpt = save_fsq_checkpoint(tmp_path / "fsq.pt", FSQVideoAutoencoder(TINY))
    assert isinstance(load_video_tokenizer(f"cosmos:{cosmos_dir}"), CosmosVideoTokenizer)
    assert isinstance(load_video_tokenizer(str(cosmos_dir)), CosmosVideoTokenizer)
    fsq = load_video_tokenizer(f"fsq:{ckpt}")
    assert isinstance(fsq, FSQVideoTokenizer) and fsq.device.type == "cpu"
    assert isinstance(load_video_tokenizer(str(ckpt)), FSQVideoTokenizer)
    with pytest.raises(ValueError, match="unknown video tokenizer kind 'vqgan'"):
        load_video_tokenizer("vqgan:/some/where")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_video_tokenizer(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="no encoder.jit"):
        load_video_tokenizer(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_video_tokenizer(f"cosmos:{tmp_path}")
    with pytest.raises(ValueError, match="no path"):
        load_video_tokenizer("fsq:")
