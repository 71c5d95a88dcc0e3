"""The explicit FLOPs model behind MFU."""

import torch

from lumos_megatron.config import LumosConfig
from lumos_megatron.models.frame_mask import frame_segment_ids, mask_from_segment_ids
from lumos_megatron.training.flops import attention_pairs, step_flops
from lumos_megatron.training.gpu_peaks import device_peak_tflops
from lumos_megatron.vocab import LumosVocab

from conftest import lumos_batch


def test_attention_pairs_count_the_frame_causal_mask():
    tokens = lumos_batch(text_lens=(20, 40), frames=3, grid=(4, 4))
    seg = frame_segment_ids(tokens, LumosVocab())
    assert attention_pairs(seg) == float(mask_from_segment_ids(seg).sum())


def test_step_flops_by_part():
    cfg = LumosConfig()
    m = cfg.model
    m.num_layers, m.hidden_size, m.ffn_hidden_size = 2, 64, 176
    m.num_attention_heads, m.num_query_groups, m.kv_channels, m.vocab_size = 4, 2, 32, 65600
    flops = step_flops(cfg, tokens=100, pairs=5000, loss_rows=30)
    per_token_layer = 2 * 64 * (4 * 32 + 2 * 2 * 32) + 2 * 4 * 32 * 64 + 6 * 64 * 176
    assert flops.dense == 3 * 2 * per_token_layer * 100
    assert flops.attention == 3 * 2 * 4 * 32 * 4 * 5000
    assert flops.lm_head == 3 * 2 * 64 * 64 * 30  # AR-DF: loss rows x 64 visual columns
    cfg.ardf.enabled = False
    assert step_flops(cfg, 100, 5000, 30).lm_head == 3 * 2 * 64 * 65600 * 100
    assert flops.total == flops.dense + flops.attention + flops.lm_head


def test_device_peak():
    assert device_peak_tflops(123.0) == (123.0, "logging.peak_tflops")
    if not torch.cuda.is_available():
        peak, source = device_peak_tflops()
        assert peak > 0 and "measured" in source
