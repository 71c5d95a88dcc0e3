"""Independent plain-PyTorch fp32 forward of an official-format Lumos-1 checkpoint.

Derived only from docs/method.md: ids and layout (§1), MM-RoPE (§2), frame-causal attention (§3)
and the architecture (§6.1). It reads the HF (Chameleon-style) state dict of
``official_format.random_official_state_dict`` and never imports ``lumos_megatron``, so it can
serve as an independent check of the Megatron model.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

# docs/method.md §1.1
BOS, SEPARATOR, MASK = 0, 8710, 9003
FRAME_START, FRAME_END, NEW_LINE = 8197, 8196, 8803
SIZE_BASE, SIZE_MAX = 8804, 9002
VIDEO_START, VIDEO_END = 9004, 9005
VISUAL_OFFSET = 65536
LATENT_PER_GRID = 32 // 8  # size value n = n·32 px = n·4 latent rows/cols
T_STRIDE, H_STRIDE, W_STRIDE = 4, 8, 8  # §2.3 Cosmos compression ratios
QK_NORM_EPS = 1e-5


def official_video_tokens(text: Sequence[int], codes: torch.Tensor, duration: int = 2,
                          fps: int = 12) -> torch.LongTensor:
    """One sample in the §1.2 layout: BOS, text, 8710, video prefix, frame blocks, 9005, 8710.

    ``codes`` is ``[T_l, H_l, W_l]`` visual codes (H_l, W_l multiples of 4); ``text`` is used as is.
    """
    t_l, h_l, w_l = codes.shape
    if h_l % LATENT_PER_GRID or w_l % LATENT_PER_GRID:
        raise ValueError(f"latent grid {h_l}x{w_l} is not a multiple of {LATENT_PER_GRID}")
    ids = [BOS, *map(int, text), SEPARATOR, VIDEO_START, SIZE_BASE + duration, SIZE_BASE + fps]
    for f in range(t_l):
        ids += [FRAME_START, SIZE_BASE + h_l // LATENT_PER_GRID, SIZE_BASE + w_l // LATENT_PER_GRID]
        for r in range(h_l):
            ids += [VISUAL_OFFSET + int(c) for c in codes[f, r]] + [NEW_LINE]
        ids.append(FRAME_END)
    ids += [VIDEO_END, SEPARATOR]
    return torch.tensor(ids, dtype=torch.long)


def official_tiny_tokens() -> torch.LongTensor:
    """The 58-token tiny layout of docs/method.md §1.3 (text 101..103, two 4x4-latent frames)."""
    return official_video_tokens([101, 102, 103], torch.arange(32).view(2, 4, 4), 2, 12)


def parse_frame_blocks(tokens_1d: torch.Tensor) -> List[Tuple[int, int, int, int]]:
    """Frame blocks of one sample as ``(start, end, H_l, W_l)``; start = the 8197, end = its 8196.

    The geometry comes from the two size tokens after 8197 (height first, ``rows = n·32/8``), never
    from the new-lines, so mask tokens (9003) in the content do not change it. Raises ValueError on
    a malformed block (bad size token, truncated block, wrong token at a new-line or the end).
    """
    ids = [int(x) for x in tokens_1d.tolist()]
    blocks, i = [], 0
    while i < len(ids):
        if ids[i] != FRAME_START:
            i += 1
            continue
        if i + 2 >= len(ids) or not all(SIZE_BASE < ids[i + k] <= SIZE_MAX for k in (1, 2)):
            raise ValueError(f"frame start at {i} is not followed by two size tokens")
        h_l = (ids[i + 1] - SIZE_BASE) * LATENT_PER_GRID
        w_l = (ids[i + 2] - SIZE_BASE) * LATENT_PER_GRID
        end = i + 3 + h_l * (w_l + 1)
        if end >= len(ids) or ids[end] != FRAME_END:
            raise ValueError(f"frame block at {i} ({h_l}x{w_l} latents) has no 8196 at {end}")
        for r in range(h_l):
            row = i + 3 + r * (w_l + 1)
            if ids[row + w_l] not in (NEW_LINE, MASK):
                raise ValueError(f"frame block at {i}: no new-line at {row + w_l}")
            if any(x < VISUAL_OFFSET and x != MASK for x in ids[row:row + w_l]):
                raise ValueError(f"frame block at {i}: non-visual token in row {r}")
        blocks.append((i, end, h_l, w_l))
        i = end + 1
    return blocks


def mm_rope_positions(tokens_1d: torch.Tensor):
    """Effective MM-RoPE positions of one sample (§2.3): ``(t, h, w, is_content)``, each ``[L]``.

    Content tokens (the ``H_l·(W_l+1)`` tokens after ``8197, Hgrid, Wgrid``, new-lines included)
    get ``t = P0 + 4·f``, ``h = P0 + 8·r``, ``w = P0 + 8·c`` (new-line: ``c = W_l``), with ``P0`` the
    index of the sample's first content token and ``f`` the 0-based frame index. Every other token
    gets its sequence index on all three axes.
    """
    length = tokens_1d.numel()
    p = torch.arange(length, dtype=torch.long)
    t, h, w = p.clone(), p.clone(), p.clone()
    is_content = torch.zeros(length, dtype=torch.bool)
    blocks = parse_frame_blocks(tokens_1d)
    if blocks:
        p0 = blocks[0][0] + 3
        for f, (start, _end, h_l, w_l) in enumerate(blocks):
            for r in range(h_l):
                for c in range(w_l + 1):
                    i = start + 3 + r * (w_l + 1) + c
                    t[i], h[i], w[i] = p0 + T_STRIDE * f, p0 + H_STRIDE * r, p0 + W_STRIDE * c
                    is_content[i] = True
    return t, h, w, is_content


def channel_axes(head_dim: int) -> torch.LongTensor:
    """Axis (0 = t, 1 = h, 2 = w) of each of the ``head_dim`` channels (§2.2, groups of 16)."""
    if head_dim % 32:
        raise ValueError(f"MM-RoPE needs head_dim to be a multiple of 32, got {head_dim}")
    group = [0, 0, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2]
    return torch.tensor([group[c % 16] for c in range(head_dim)], dtype=torch.long)


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """``inv_freq[k] = theta^(-2k/d)``, k = 0..d/2-1, fp32 (§2.1)."""
    k = torch.arange(0, head_dim, 2, dtype=torch.int64).float()
    return 1.0 / (float(theta) ** (k / head_dim))


def rope_cos_sin(tokens_1d: torch.Tensor, head_dim: int, theta: float = 10000.0,
                 mm_rope: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``(cos, sin)`` tables ``[L, head_dim]`` of one sample (channel c uses inv_freq[c mod d/2]).

    With ``mm_rope`` each channel takes the position of its axis (§2.2); otherwise (plain RoPE)
    every token uses its sequence index on all channels.
    """
    inv = rope_inv_freq(head_dim, theta)
    freqs = torch.cat([inv, inv])  # [d]
    length = tokens_1d.numel()
    if mm_rope:
        thw = torch.stack(mm_rope_positions(tokens_1d)[:3], dim=1).float()  # [L, 3]
        pos = thw[:, channel_axes(head_dim)]  # [L, d]
    else:
        pos = torch.arange(length, dtype=torch.float32)[:, None].expand(length, head_dim)
    angles = pos * freqs
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF rotate-half: ``cat(-x[d/2:], x[:d/2])`` on the last dim."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def frame_causal_allowed(tokens_1d: torch.Tensor) -> torch.BoolTensor:
    """``[L, L]`` mask of §3: ``allowed(i→j) = j ≤ i OR (i, j in the same frame block 8197..8196)``."""
    length = tokens_1d.numel()
    seg = torch.zeros(length, dtype=torch.long)
    for k, (start, end, _h, _w) in enumerate(parse_frame_blocks(tokens_1d), start=1):
        seg[start:end + 1] = k
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return causal | ((seg[:, None] == seg[None, :]) & (seg[:, None] > 0))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``w · x / sqrt(mean(x²) + eps)`` over the last dim (§6.1)."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def qk_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """QK LayerNorm over head_dim (eps 1e-5) of ``x [B, L, n_heads, d]``.

    ``weight``/``bias`` are ``[model_parallel_size, d]``; the heads are split contiguously into
    ``model_parallel_size`` groups and row r applies to the heads of group r.
    """
    n_heads, mp = x.shape[2], weight.shape[0]
    if n_heads % mp:
        raise ValueError(f"{n_heads} heads cannot be split into {mp} model-parallel shards")
    rows = torch.arange(n_heads) // (n_heads // mp)
    normed = F.layer_norm(x, (x.shape[-1],), eps=QK_NORM_EPS)
    return normed * weight[rows] + bias[rows]


def _attention(x, sd, p, config, cos, sin, allowed):
    """One self-attention block on ``x [B, L, h]`` (already normed); returns ``[B, L, h]``."""
    b, length, hidden = x.shape
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    d = hidden // heads
    q = (x @ sd[p + "q_proj.weight"].float().T).view(b, length, heads, d)
    k = (x @ sd[p + "k_proj.weight"].float().T).view(b, length, kv_heads, d)
    v = (x @ sd[p + "v_proj.weight"].float().T).view(b, length, kv_heads, d)
    q = qk_layer_norm(q, sd[p + "q_norm.weight"].float(), sd[p + "q_norm.bias"].float())
    k = qk_layer_norm(k, sd[p + "k_norm.weight"].float(), sd[p + "k_norm.bias"].float())
    q, k, v = (y.transpose(1, 2) for y in (q, k, v))  # [B, n, L, d]
    cos, sin = cos[:, None], sin[:, None]  # [B, 1, L, d]
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = heads // kv_heads  # GQA: q head i uses kv head i // rep
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = scores.softmax(-1) @ v  # [B, n, L, d]
    out = out.transpose(1, 2).reshape(b, length, heads * d)
    return out @ sd[p + "o_proj.weight"].float().T


def reference_logits(state_dict: Dict[str, torch.Tensor], config: dict,
                     tokens: torch.Tensor) -> torch.Tensor:
    """fp32 logits ``[B, L, V]`` of ``tokens [B, L]`` (right padding with 0 allowed).

    Embedding → per layer ``x += Attn(RMSNorm(x))``, ``x += MLP(RMSNorm(x))`` → RMSNorm → untied
    ``lm_head``. Attention: q/k/v projections, QK LayerNorm (``qk_layer_norm``), MM-RoPE with
    per-sample positions, GQA, scale 1/sqrt(d), per-sample frame-causal mask, ``o_proj``. MLP:
    ``down(silu(gate(x)) * up(x))``. ``model.vqmodel.*`` tensors are ignored.
    """
    if config.get("swin_norm", False):
        raise NotImplementedError("swin_norm=True is not part of the reference (docs/method.md §8)")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [B, L], got {tuple(tokens.shape)}")
    sd, tokens = state_dict, tokens.long().cpu()
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    d, eps = hidden // heads, float(config.get("rms_norm_eps", 1e-5))
    theta, mm = float(config.get("rope_theta", 10000.0)), bool(config.get("mm_rope", True))
    if config.get("tie_word_embeddings", False):
        raise NotImplementedError("the official Lumos-1 head is untied (docs/method.md §6.1)")
    tables = [rope_cos_sin(row, d, theta, mm) for row in tokens]
    cos = torch.stack([c for c, _ in tables])
    sin = torch.stack([s for _, s in tables])
    allowed = torch.stack([frame_causal_allowed(row) for row in tokens])  # [B, L, L]
    with torch.no_grad():
        x = F.embedding(tokens, sd["model.embed_tokens.weight"].float())
        for n in range(int(config["num_hidden_layers"])):
            p = f"model.layers.{n}."
            y = rms_norm(x, sd[p + "input_layernorm.weight"].float(), eps)
            x = x + _attention(y, sd, p + "self_attn.", config, cos, sin, allowed)
            y = rms_norm(x, sd[p + "post_attention_layernorm.weight"].float(), eps)
            gate = y @ sd[p + "mlp.gate_proj.weight"].float().T
            up = y @ sd[p + "mlp.up_proj.weight"].float().T
            x = x + (F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].float().T
        x = rms_norm(x, sd["model.norm.weight"].float(), eps)
        return (x @ sd["lm_head.weight"].float().T).float()
