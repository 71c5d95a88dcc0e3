"""FlexAttention backend for the Lumos-1 frame-causal mask (docs/method.md §3), aimed at GPU training.

The frame-causal mask is ``allowed(q, kv) = kv <= q  or  seg[q] == seg[kv] > 0`` where ``seg`` are
the per-token frame segment ids of :func:`lumos_megatron.models.frame_mask.frame_segment_ids`.
At block granularity (128 x 128 by default) most tiles are either entirely allowed (below the
diagonal) or entirely forbidden (above the diagonal and outside the current frame), so a
:class:`~torch.nn.attention.flex_attention.BlockMask` lets the fused kernel skip empty tiles and
skip mask evaluation on full ones; only tiles crossing the diagonal or a frame edge are "partial".
The dense SDPA route (:class:`~lumos_megatron.models.attention.sdpa.SDPACoreAttention`) has to
read an L x L mask and computes every tile.

Selected with ``model.attention_backend=flex``: the model-inputs builder
(``models.inputs.build_model_inputs``, through the backend registry) builds one
:class:`FrameCausalBlockMask` per micro-batch and ships it as the batch's ``attention_mask``;
megatron hands it untouched through GPTModel → TransformerBlock → TransformerLayer →
SelfAttention to :class:`FlexCoreAttention` in every layer. Activation recompute works with it:
ours is non-reentrant (``models.recompute``) and carries the mask as a Python object, whereas
megatron's reentrant ``CheckpointFunction`` would pass it to ``save_for_backward``, which rejects
a BlockMask. CUDA graphs (which want a tensor mask as a static input) are not supported.

Device support (torch 2.13):

* CUDA: ``torch.compile(flex_attention)`` (a fused Triton kernel), forward and backward.
* CPU: eager ``flex_attention``, **forward only**. PyTorch raises ``NotImplementedError`` for any
  CPU input with ``requires_grad``; :func:`frame_causal_flex_attention` turns that into a clearer
  error up front. The eager path materialises the full score matrix, so on CPU it is only a
  correctness reference; CPU training must use the SDPA backend with a dense mask.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Optional

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from lumos_megatron.models.attention.sdpa import SDPACoreAttention

__all__ = [
    "BlockMask",
    "FlexCoreAttention",
    "FrameCausalBlockMask",
    "block_mask_stats",
    "build_frame_causal_block_mask",
    "frame_causal_flex_attention",
    "frame_causal_mask_mod",
]

# Compiled callables are cached per process: torch.compile is expensive (tens of seconds for the
# first forward+backward) and recompiling per call would defeat the purpose. Dynamo still
# specialises on shapes underneath, so a new sequence length costs one recompile.
_COMPILED_FLEX: Optional[Callable] = None
_COMPILED_CREATE_BLOCK_MASK: Optional[Callable] = None

_EAGER_WARNING = "flex_attention called without torch.compile"


def _compiled_flex() -> Callable:
    """``torch.compile(flex_attention)``, built once per process."""
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


def _compiled_create_block_mask() -> Callable:
    """``torch.compile(create_block_mask)``, built once per process.

    Compiling the builder avoids materialising the [B, L, L] mask (0.8 GB of bools per sample at
    28k tokens, plus temporaries) that the eager builder creates before reducing it to blocks.
    """
    global _COMPILED_CREATE_BLOCK_MASK
    if _COMPILED_CREATE_BLOCK_MASK is None:
        _COMPILED_CREATE_BLOCK_MASK = torch.compile(create_block_mask)
    return _COMPILED_CREATE_BLOCK_MASK


def frame_causal_mask_mod(segment_ids: torch.Tensor, document_ids: Optional[torch.Tensor] = None) -> Callable:
    """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` for segment ids [B, L] (True = allowed);
    with ``document_ids`` [B, L] (packed rows) only pairs inside one sample (torchtitan's
    ``and_masks(document, ...)`` pattern, written as one function)."""

    def mask_mod(b, h, q_idx, kv_idx):
        seg_q = segment_ids[b, q_idx]
        seg_kv = segment_ids[b, kv_idx]
        return (kv_idx <= q_idx) | ((seg_q == seg_kv) & (seg_q > 0))

    if document_ids is None:
        return mask_mod

    def packed_mask_mod(b, h, q_idx, kv_idx):
        return mask_mod(b, h, q_idx, kv_idx) & (document_ids[b, q_idx] == document_ids[b, kv_idx])

    return packed_mask_mod


class FrameCausalBlockMask(BlockMask):
    """A frame-causal :class:`BlockMask` that also carries the segment ids its ``mask_mod`` reads.

    Why a subclass: ``BlockMask.to`` moves the block tables but not the tensors captured by the
    ``mask_mod`` closure, so a mask built on the data side (CPU) and moved to the GPU would
    evaluate its partial tiles against CPU segment ids. Here :meth:`to` moves the segment ids
    too and rebuilds the ``mask_mod`` over the moved copy. It also accepts ``non_blocking`` like
    ``Tensor.to``, so a batch dict of tensors and this mask can be moved with one expression.
    Everything else is a plain ``BlockMask`` (``isinstance`` checks, ``to_dense``, ...).
    """

    def __init__(self, *args, segment_ids: Optional[torch.Tensor] = None,
                 document_ids: Optional[torch.Tensor] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.segment_ids = segment_ids
        self.document_ids = document_ids

    @classmethod
    def wrap(cls, block_mask: BlockMask, segment_ids: torch.Tensor,
             document_ids: Optional[torch.Tensor] = None) -> "FrameCausalBlockMask":
        """Re-type ``block_mask`` (built from ``segment_ids``, and ``document_ids`` for packed
        rows) without copying its tensors."""
        return cls(segment_ids=segment_ids, document_ids=document_ids, **_block_mask_fields(block_mask))

    def to(self, device, non_blocking: bool = False) -> "FrameCausalBlockMask":
        """Block tables, segment ids and the ``mask_mod`` closure, all on ``device``."""
        fields = _block_mask_fields(self)
        for name in self._TENSOR_ATTRS:
            if isinstance(fields[name], torch.Tensor):
                fields[name] = fields[name].to(device, non_blocking=non_blocking)
        segment_ids, document_ids = self.segment_ids, self.document_ids
        if document_ids is not None:
            document_ids = document_ids.to(device, non_blocking=non_blocking)
        if segment_ids is not None:
            segment_ids = segment_ids.to(device, non_blocking=non_blocking)
            fields["mask_mod"] = frame_causal_mask_mod(segment_ids, document_ids)
        return FrameCausalBlockMask(segment_ids=segment_ids, document_ids=document_ids, **fields)

    def as_block_mask(self) -> BlockMask:
        """The same mask as a plain ``BlockMask`` (what ``torch.compile`` is tested against)."""
        return BlockMask(**_block_mask_fields(self))


def _block_mask_fields(block_mask: BlockMask) -> dict:
    """Constructor keyword arguments that rebuild ``block_mask`` (tensors are shared)."""
    names = list(BlockMask._TENSOR_ATTRS) + list(BlockMask._CONTEXT_ATTRS)
    return {name: getattr(block_mask, name) for name in names}


def build_frame_causal_block_mask(
    segment_ids: torch.Tensor, block_size: int = 128, compile: Optional[bool] = None,
    document_ids: Optional[torch.Tensor] = None,
) -> FrameCausalBlockMask:
    """Frame-causal :class:`BlockMask` from segment ids [B, L] (or [L] → B = 1), on their device.

    The mask is per batch element (``B`` = batch size) and shared by all heads (``H=None``), so
    one block mask serves any number of (tensor-parallel) heads. Empty tiles are absent from the
    block lists by construction, full tiles are listed separately (no mask evaluation inside).
    ``L`` need not be a multiple of ``block_size``; the last tiles are then partial. The result
    is a :class:`FrameCausalBlockMask`, whose ``.to(device)`` also moves the segment ids.

    By default the tile tables come from the segment ids per tile
    (``frame_block_tables``: no ``L x L`` work, milliseconds at 32k tokens), the same tables
    torch's builder produces. ``compile`` True / False builds them with torch's
    ``create_block_mask`` instead, compiled / eager (the eager one materialises the dense mask:
    1 GB and ~30 s of one CPU core per 32k-token sample); tests compare the three.
    ``document_ids`` [B, L] (packed rows, non-decreasing along each row) also confines every
    pair to one sample.
    """
    if segment_ids.dim() == 1:
        segment_ids = segment_ids.unsqueeze(0)
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids must be [B, L] or [L], got {tuple(segment_ids.shape)}")
    if segment_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"segment_ids must be an integer tensor, got {segment_ids.dtype}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    batch, length = segment_ids.shape
    if compile is None:
        from lumos_megatron.models.attention.frame_block_tables import frame_causal_tile_classes, ordered_blocks

        partial, full = frame_causal_tile_classes(segment_ids, block_size, document_ids)
        block_mask = BlockMask.from_kv_blocks(
            *ordered_blocks(partial), *ordered_blocks(full), BLOCK_SIZE=(block_size, block_size),
            mask_mod=frame_causal_mask_mod(segment_ids, document_ids), seq_lengths=(length, length))
        return FrameCausalBlockMask.wrap(block_mask, segment_ids, document_ids)
    builder = _compiled_create_block_mask() if compile else create_block_mask
    block_mask = builder(
        frame_causal_mask_mod(segment_ids, document_ids), batch, None, length, length,
        device=segment_ids.device, BLOCK_SIZE=block_size,
    )
    return FrameCausalBlockMask.wrap(block_mask, segment_ids, document_ids)


def block_mask_stats(block_mask: BlockMask) -> Dict[str, float]:
    """Fractions of tiles that are ``empty`` / ``full`` / ``partial`` (they sum to 1).

    Counted over the [B, H, q_blocks, kv_blocks] grid of the block mask; with
    ``separate_full_blocks`` (the default of ``create_block_mask``) ``kv_num_blocks`` counts only
    partial tiles and ``full_kv_num_blocks`` the full ones.
    """
    kv_blocks = -(-block_mask.seq_lengths[1] // block_mask.BLOCK_SIZE[1])
    total = block_mask.kv_num_blocks.numel() * kv_blocks
    partial = int(block_mask.kv_num_blocks.sum())
    full = 0 if block_mask.full_kv_num_blocks is None else int(block_mask.full_kv_num_blocks.sum())
    return {
        "empty": (total - partial - full) / total,
        "full": full / total,
        "partial": partial / total,
    }


def frame_causal_flex_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: BlockMask,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """FlexAttention with a (frame-causal) block mask; q [b, hq, s, d], k/v [b, hkv, s, d].

    Returns [b, hq, s, d]. GQA is enabled when ``hkv < hq`` (``hq`` must be a multiple of
    ``hkv``). ``scale`` defaults to ``1/sqrt(d)``. On CUDA the compiled kernel is used (forward
    and backward); on CPU the eager implementation runs, forward only: CPU inputs that require
    grad while autograd is enabled raise ``NotImplementedError`` (PyTorch has no CPU backward for
    FlexAttention). Under ``torch.no_grad()`` CPU inputs that require grad are detached, since no
    backward can follow.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k, v must be [b, heads, s, d], got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    if k.shape[1] != v.shape[1] or q.shape[1] % k.shape[1]:
        raise ValueError(
            f"query heads ({q.shape[1]}) must be a multiple of key/value heads "
            f"({k.shape[1]}/{v.shape[1]})"
        )
    if tuple(block_mask.seq_lengths) != (q.shape[2], k.shape[2]):
        raise ValueError(
            f"block mask was built for (q, kv) lengths {tuple(block_mask.seq_lengths)}, "
            f"got q length {q.shape[2]} and kv length {k.shape[2]}"
        )
    if isinstance(block_mask, FrameCausalBlockMask):
        # Hand the kernel the exact type torch compiles and tests against; no tensor is copied.
        block_mask = block_mask.as_block_mask()
    kwargs = dict(block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    if q.device.type == "cuda":
        return _compiled_flex()(q, k, v, **kwargs)
    if q.device.type == "cpu":
        if any(t.requires_grad for t in (q, k, v)):
            if torch.is_grad_enabled():
                raise NotImplementedError(
                    "FlexAttention has no backward on CPU (torch "
                    f"{torch.__version__}): frame_causal_flex_attention got inputs with "
                    "requires_grad=True. Use SDPACoreAttention with a dense frame-causal mask "
                    "for CPU training, or wrap CPU inference in torch.no_grad()."
                )
            q, k, v = q.detach(), k.detach(), v.detach()
        # Eager on CPU is deliberate (compiling costs tens of seconds on small CPU hosts and the
        # CPU path is a reference only), so PyTorch's "use torch.compile" advice is noise here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_EAGER_WARNING)
            return flex_attention(q, k, v, **kwargs)
    # Other devices: let PyTorch decide (it raises a clear error for unsupported ones).
    return flex_attention(q, k, v, **kwargs)


class FlexCoreAttention(SDPACoreAttention):
    """Megatron ``core_attention`` that runs FlexAttention when given a :class:`BlockMask`.

    Same constructor and forward signature as :class:`SDPACoreAttention`. The ``attention_mask``
    argument (megatron passes it through untouched) selects the kernel:

    * a :class:`BlockMask` (from :func:`build_frame_causal_block_mask`; True in its mask_mod means
      *allowed*, unlike megatron's dense convention) → FlexAttention;
    * a dense bool tensor (True = masked out), ``None`` (causal) or an ``attention_bias`` → the
      SDPA fallback of the parent class, unchanged.

    The flex path supports neither attention dropout in training, nor ``attention_bias``, nor
    packed (THD) sequences; each raises instead of being silently ignored. CPU use is forward
    only (see :func:`frame_causal_flex_attention`).
    """

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        """[sq, b, np, hn] x [sk, b, ng, hn] → [sq, b, np*hn]."""
        if not isinstance(attention_mask, BlockMask):
            return super().forward(query, key, value, attention_mask, attn_mask_type=attn_mask_type,
                                   attention_bias=attention_bias,
                                   packed_seq_params=packed_seq_params)
        if packed_seq_params is not None:
            raise NotImplementedError("packed (THD) sequences are not supported by the flex "
                                      "backend")
        if attention_bias is not None:
            raise NotImplementedError("attention_bias cannot be combined with a BlockMask")
        if self.training and self.dropout_p > 0.0:
            raise NotImplementedError(
                f"attention dropout ({self.dropout_p}) is not supported by the flex backend"
            )
        q = query.permute(1, 2, 0, 3)  # [b, np, sq, hn]
        k = key.permute(1, 2, 0, 3)
        v = value.permute(1, 2, 0, 3)
        mask_batch = attention_mask.kv_num_blocks.shape[0]
        if mask_batch not in (1, q.shape[0]):
            raise ValueError(f"block mask has batch {mask_batch}, attention input has {q.shape[0]}")
        out = frame_causal_flex_attention(q, k, v, attention_mask, scale=self.softmax_scale)
        sq, b = out.shape[2], out.shape[0]
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)
