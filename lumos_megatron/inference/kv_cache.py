"""A KV cache for AR-DF decoding, run through the loaded model's own megatron layers.

megatron-core 0.16's inference contexts do not fit this decoder: the static one keeps only the
last token's logits and grows one position at a time, the dynamic engine is causal with 1-D
RoPE. AR-DF needs, per decoding step, the logits of every code of one frame block, attention
that is frame-causal (bidirectional inside the block), and a cache that keeps the prompt and the
finished frames (ρ_inf-masked) but not the frame being decoded. So the model's ordinary forward
runs on the new tokens only (megatron's TransformerLayer: norms, QK-norm, TP linears, biases,
MM-RoPE, residuals, the final norm and the output layer, tied or not), and only its core
attention is swapped, for the duration of the call, for :class:`CachedCoreAttention`, which
attends over this layer's cached keys and values plus the new ones, and stores the new tokens
that join the cache (GQA: only the KV heads are stored). Nothing of the layer is copied here, so
nothing can drift from training's forward.

Rows are independent sequences (a sample's conditional and unconditional prompts, several
samples): each has its own cached length, and its new tokens may be of different lengths
(right-padded). A new token sees every cached entry of its row (all earlier in the sequence)
and the new tokens of its row under the frame-causal rule.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List

import torch
import torch.nn.functional as F

from lumos_megatron.checkpoint.sharded import unwrap


SCORE_BUDGET_BYTES = 2 << 30
"""Largest fp32 attention-score tensor one cached attention call may build (queries are chunked)."""


class CachedCoreAttention(torch.nn.Module):
    """Core attention of one layer over its cache + the new tokens (SDPA, grouped-query heads).

    Called by megatron's ``SelfAttention`` with the new tokens' rotated ``query [q, R, np, d]``,
    ``key``/``value [q, R, ng, d]`` and the mask the model was given (``[R, 1, q, past + q]``,
    True = masked out); returns ``[q, R, np * d]`` like every core attention.
    """

    def __init__(self, cache: "LayerKVCache", layer: int, rows: List[int], past: int, keep: List[int],
                 softmax_scale: float):
        super().__init__()
        self.cache, self.layer, self.rows, self.past, self.keep = cache, layer, rows, past, keep
        self.softmax_scale = softmax_scale

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        cache, layer = self.cache, self.layer
        new_k, new_v = key.permute(1, 2, 0, 3), value.permute(1, 2, 0, 3)  # [R, ng, q, d]
        all_k = torch.cat([cache.keys[layer, cache.row_index, :, : self.past], new_k], dim=2)
        all_v = torch.cat([cache.values[layer, cache.row_index, :, : self.past], new_v], dim=2)
        q = query.permute(1, 2, 0, 3)  # [R, np, q, d]
        allowed = ~attention_mask
        # A masked grouped-query SDPA call runs on the math kernel, which materialises fp32 scores
        # [R, np, q, past + q]: 30 GB for one 384p block against a 7-frame cache. Query chunks
        # bound them (the keys are shared, the result is the same).
        rows, heads, length, keys = q.shape[0], q.shape[1], q.shape[2], all_k.shape[2]
        chunk = max(1, min(length, SCORE_BUDGET_BYTES // max(1, rows * heads * keys * 4)))
        out = torch.cat([
            F.scaled_dot_product_attention(q[:, :, i: i + chunk], all_k, all_v, attn_mask=allowed[:, :, i: i + chunk],
                                           scale=self.softmax_scale, enable_gqa=heads != all_k.shape[1])
            for i in range(0, length, chunk)], dim=2)
        for i, r in enumerate(self.rows):  # keep the finished frame (and the prompt) of each row
            if self.keep[i]:
                start = cache.lengths[r]
                cache.keys[layer, r, :, start: start + self.keep[i]] = new_k[i, :, : self.keep[i]]
                cache.values[layer, r, :, start: start + self.keep[i]] = new_v[i, :, : self.keep[i]]
        return out.permute(2, 0, 1, 3).reshape(out.shape[2], out.shape[0], -1)


class LayerKVCache:
    """Keys and values of every layer for ``rows`` sequences of up to ``capacity`` tokens."""

    def __init__(self, model: torch.nn.Module, rows: int, capacity: int, device: torch.device):
        self.model = unwrap(model)
        if not (self.model.pre_process and self.model.post_process):
            raise ValueError("the KV-cache decoder runs the whole model in one process: pipeline "
                             "parallelism is not supported (use tensor parallelism, or kv_cache=False)")
        from megatron.core.transformer.attention import SelfAttention
        from megatron.core.transformer.transformer_layer import TransformerLayer

        for layer in self.model.decoder.layers:
            if not (isinstance(layer, TransformerLayer) and isinstance(layer.self_attention, SelfAttention)):
                raise ValueError(f"the KV cache runs megatron's TransformerLayer with SelfAttention; this model has "
                                 f"{type(layer).__name__} / {type(getattr(layer, 'self_attention', None)).__name__}")
        attn = self.model.decoder.layers[0].self_attention
        self.groups = attn.num_query_groups_per_partition
        self.heads = attn.num_attention_heads_per_partition
        self.head_dim = attn.hidden_size_per_attention_head
        if attn.config.num_query_groups < attn.world_size:
            raise ValueError(f"KV-cache decoding needs at least one key/value head per TP rank "
                             f"({attn.config.num_query_groups} groups, TP {attn.world_size})")
        dtype = next(self.model.parameters()).dtype
        shape = (len(self.model.decoder.layers), rows, self.groups, capacity, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = [0] * rows
        self.capacity = capacity
        self._step = None  # (key, segments, row index, mask) of the last call

    @torch.no_grad()
    def forward(self, rows: List[int], tokens: torch.Tensor, position_ids: torch.Tensor, segments: torch.Tensor,
                query_lengths: List[int], keep: List[int], logits_index: torch.Tensor) -> torch.Tensor:
        """Run new tokens of ``rows`` through the model against the cache.

        ``tokens`` [R, q] (right-padded to ``q``), ``position_ids`` [3, R, q] effective MM-RoPE
        positions, ``segments`` [R, q] frame segment ids of the new tokens (as in the full
        sequence), ``query_lengths`` the real new tokens of each row, ``keep`` how many leading
        new tokens of each row enter the cache (the finished frame, not the block being decoded),
        ``logits_index`` [R, N] the new-token offsets whose logits are returned: fp32 ``[R, N, V]``
        (the output layer runs on those N positions only).
        """
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        past = max(self.lengths[r] for r in rows)
        for r, k, n in zip(rows, keep, query_lengths):
            if self.lengths[r] + n > self.capacity or k > n:
                raise ValueError(f"KV cache row {r}: {self.lengths[r]} + {n} tokens exceed its capacity {self.capacity}")
        key = (tuple(rows), tuple(self.lengths[r] for r in rows), tuple(query_lengths))
        if self._step is None or self._step[0] != key or self._step[1] is not segments:
            # Built once per frame: the steps of a frame share rows, lengths and segments, and a
            # host-to-device copy (of the row list, of the lengths) waits for the device each time.
            self._step = (key, segments, torch.tensor(rows, device=tokens.device),
                          self._mask(rows, segments, query_lengths, past, tokens.device))
        _, _, self.row_index, allowed = self._step
        with self._attending(rows, past, keep):
            logits = self.model(input_ids=tokens, position_ids=position_ids, attention_mask=~allowed,
                                logit_positions=logits_index)
        for i, r in enumerate(rows):
            self.lengths[r] += keep[i]
        return gather_from_tensor_model_parallel_region(logits).float().contiguous()

    @contextlib.contextmanager
    def _attending(self, rows: List[int], past: int, keep: List[int]) -> Iterator[None]:
        """Every layer's core attention swapped for a :class:`CachedCoreAttention`, then restored."""
        originals = []
        try:
            for index, layer in enumerate(self.model.decoder.layers):
                attn = layer.self_attention
                scale = getattr(attn.core_attention, "softmax_scale", None) or self.head_dim ** -0.5
                originals.append(attn.core_attention)
                attn.core_attention = CachedCoreAttention(self, index, rows, past, keep, scale)
            yield
        finally:
            for layer, original in zip(self.model.decoder.layers, originals):
                layer.self_attention.core_attention = original

    def _mask(self, rows, segments, query_lengths, past, device) -> torch.Tensor:
        """Allowed (query, key) pairs [R, 1, q, past + q]."""
        n_rows, q = segments.shape
        cached = torch.zeros(n_rows, past, dtype=torch.bool, device=device)
        for i, r in enumerate(rows):
            cached[i, : self.lengths[r]] = True
        lengths = torch.tensor(query_lengths, device=device)
        valid = torch.arange(q, device=device).unsqueeze(0) < lengths.unsqueeze(1)  # [R, q]
        causal = torch.ones(q, q, dtype=torch.bool, device=device).tril()
        same_frame = (segments.unsqueeze(2) == segments.unsqueeze(1)) & (segments.unsqueeze(2) > 0)
        new = (causal.unsqueeze(0) | same_frame) & valid.unsqueeze(1) & valid.unsqueeze(2)
        new |= torch.eye(q, dtype=torch.bool, device=device).unsqueeze(0)  # padding rows attend to themselves
        cache_part = cached.unsqueeze(1).expand(n_rows, q, past) & valid.unsqueeze(2)
        return torch.cat([cache_part, new], dim=2).unsqueeze(1)
