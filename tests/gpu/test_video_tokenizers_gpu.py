"""Video tokenizers on CUDA: the Cosmos wrapper runs bf16 and matches the fp32 CPU codes."""

import pytest
import torch

import tiny_cosmos
from lumos_megatron.tokenizers.video import (
    CosmosVideoTokenizer,
    FSQVideoAutoencoder,
    FSQVideoConfig,
    FSQVideoTokenizer,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def smooth_video(t, h, w, seed):
    """Low-frequency colour fields plus noise: closer to real frames than pure noise."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (1, 3, t, h // 8, w // 8), generator=gen).float()
    video = torch.nn.functional.interpolate(base, size=(t, h, w), mode="trilinear")[0].permute(1, 2, 3, 0)
    noise = torch.randint(-20, 21, video.shape, generator=gen)
    return (video + noise).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def cosmos_dir(tmp_path_factory):
    return tiny_cosmos.write_tiny_cosmos(tmp_path_factory.mktemp("cosmos"))


def test_cosmos_bf16_cuda_matches_fp32_cpu(cosmos_dir):
    gpu = CosmosVideoTokenizer(cosmos_dir)                                  # defaults: CUDA, bf16
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    cpu = CosmosVideoTokenizer(cosmos_dir, device="cpu")
    assert cpu.dtype == torch.float32
    agreement = []
    for seed, t in enumerate((9, 17, 24)):
        video = smooth_video(t, 128, 192, seed)
        codes_gpu, codes_cpu = gpu.encode(video), cpu.encode(video)
        assert codes_gpu.shape == codes_cpu.shape == cpu.latent_shape(t, 128, 192)
        agreement.append((codes_gpu == codes_cpu).float().mean().item())
    assert min(agreement) >= 0.95, agreement
    frames = gpu.decode(codes_cpu)
    assert frames.shape == (1 + 4 * (codes_cpu.shape[0] - 1), 128, 192, 3) and frames.dtype == torch.uint8


def test_fsq_tokenizer_cuda_matches_cpu():
    torch.manual_seed(0)
    model = FSQVideoAutoencoder(FSQVideoConfig(channels=(16, 16, 16), norm_groups=4))
    cpu = FSQVideoTokenizer(model, device="cpu")
    video = smooth_video(9, 64, 64, seed=7)
    codes_cpu = cpu.encode(video)
    gpu = FSQVideoTokenizer(model, device="cuda")
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False       # compare fp32 with fp32, not with TF32 convs
    try:
        codes_gpu = gpu.encode(video)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert (codes_gpu == codes_cpu).float().mean().item() >= 0.95
    assert gpu.decode(codes_cpu).shape == (9, 64, 64, 3)
