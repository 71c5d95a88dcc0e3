"""A KV cache for AR-DF decoding, run through the megatron-core layers of a loaded model.

megatron-core 0.16's inference contexts do not fit this decoder: the static one keeps only the
last token's logits and grows one position at a time, the dynamic engine is causal with 1-D
RoPE. AR-DF needs, per decoding step, the logits of every code of one frame block, attention
that is frame-causal (bidirectional inside the block), and a cache that keeps the prompt and the
finished frames (ρ_inf-masked) but not the frame being decoded. So the layer forward is written
out here over the model's own modules (megatron's TP linears, our norms and rotary angles): the
weights, TP sharding and arithmetic are the training model's; only the attention reads keys
and values from the cache (GQA: only the KV heads are stored).

Rows are independent sequences (a sample's conditional and unconditional prompts, several
samples): each has its own cached length, and its new tokens may be of different lengths
(right-padded). A new token sees every cached entry of its row (all earlier in the sequence)
and the new tokens of its row under the frame-causal rule.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

from lumos_megatron.checkpoint.sharded import unwrap



def _biased(output_and_bias):
    """The output of a megatron linear or MLP with its bias added: with ``skip_bias_add`` (the
    attention projection and fc2) megatron returns the bias separately and adds it in its
    bias-dropout-add, which this forward replaces. ``(out, None)`` without linear biases."""
    out, bias = output_and_bias
    return out if bias is None else out + bias

class LayerKVCache:
    """Keys and values of every layer for ``rows`` sequences of up to ``capacity`` tokens."""

    def __init__(self, model: torch.nn.Module, rows: int, capacity: int, device: torch.device):
        self.model = unwrap(model)
        if not (self.model.pre_process and self.model.post_process):
            raise ValueError("the KV-cache decoder runs the whole model in one process: pipeline "
                             "parallelism is not supported (use tensor parallelism, or kv_cache=False)")
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

    @torch.no_grad()
    def forward(self, rows: List[int], tokens: torch.Tensor, position_ids: torch.Tensor, segments: torch.Tensor,
                query_lengths: List[int], keep: List[int], logits_index: torch.Tensor) -> torch.Tensor:
        """Run new tokens of ``rows`` through the model against the cache.

        ``tokens`` [R, q] (right-padded to ``q``), ``position_ids`` [3, R, q] effective MM-RoPE
        positions, ``segments`` [R, q] frame segment ids of the new tokens (as in the full
        sequence), ``query_lengths`` the real new tokens of each row, ``keep`` how many leading
        new tokens of each row enter the cache (the finished frame, not the block being decoded),
        ``logits_index`` [R, N] the new-token offsets whose logits are returned: fp32 ``[R, N, V]``.
        """
        from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        model = self.model
        n_rows, q = tokens.shape
        past = max(self.lengths[r] for r in rows)
        for r, k, n in zip(rows, keep, query_lengths):
            if self.lengths[r] + n > self.capacity or k > n:
                raise ValueError(f"KV cache row {r}: {self.lengths[r]} + {n} tokens exceed its capacity {self.capacity}")
        allowed = self._mask(rows, segments, query_lengths, past, tokens.device)
        rotary = model.rotary_pos_emb(position_ids)  # [q, R, 1, d] fp32 angles
        hidden = model.embedding(input_ids=tokens, position_ids=None)  # [q, R, h]
        row_index = torch.tensor(rows, device=tokens.device)
        for index, layer in enumerate(model.decoder.layers):
            attn = layer.self_attention
            residual = hidden
            mixed = _biased(attn.linear_qkv(layer.input_layernorm(hidden)))
            mixed = mixed.view(q, n_rows, self.groups, (self.heads // self.groups + 2) * self.head_dim)
            query, key, value = torch.split(
                mixed, [self.heads // self.groups * self.head_dim, self.head_dim, self.head_dim], dim=3)
            query = query.reshape(q, n_rows, self.heads, self.head_dim)
            if attn.q_layernorm is not None:
                query, key = attn.q_layernorm(query), attn.k_layernorm(key)
            query = apply_rotary_pos_emb(query, rotary, config=attn.config)
            key = apply_rotary_pos_emb(key, rotary, config=attn.config)
            # [R, groups, past + q, d]: this layer's cache of the rows, then the new tokens
            new_k, new_v = key.permute(1, 2, 0, 3), value.permute(1, 2, 0, 3)
            all_k = torch.cat([self.keys[index, row_index, :, :past], new_k], dim=2)
            all_v = torch.cat([self.values[index, row_index, :, :past], new_v], dim=2)
            out = F.scaled_dot_product_attention(query.permute(1, 2, 0, 3), all_k, all_v, attn_mask=allowed,
                                                 scale=1.0 / self.head_dim ** 0.5, enable_gqa=self.groups != self.heads)
            out = _biased(attn.linear_proj(out.permute(2, 0, 1, 3).reshape(q, n_rows, -1)))
            hidden = residual + out
            mlp_out = _biased(layer.mlp(layer.pre_mlp_layernorm(hidden)))
            hidden = hidden + mlp_out
            for i, r in enumerate(rows):  # keep the finished frame (and the prompt) of each row
                if keep[i]:
                    start = self.lengths[r]
                    self.keys[index, r, :, start: start + keep[i]] = new_k[i, :, : keep[i]]
                    self.values[index, r, :, start: start + keep[i]] = new_v[i, :, : keep[i]]
        for i, r in enumerate(rows):
            self.lengths[r] += keep[i]
        picked = hidden.gather(0, logits_index.t().unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # [N, R, h]
        # Tied embeddings: megatron's output layer holds no weight of its own and is handed the
        # embedding's (as GPTModel._postprocess does).
        weight = model.shared_embedding_or_output_weight() if model.share_embeddings_and_output_weights else None
        logits, _ = model.output_layer(model.decoder.final_layernorm(picked), weight=weight)
        return gather_from_tensor_model_parallel_region(logits).float().transpose(0, 1).contiguous()

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
