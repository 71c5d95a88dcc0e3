"""Tiny random checkpoints in the official Lumos-1 Hugging Face (Chameleon-style) layout.

Independent of ``lumos_megatron``: the field names, tensor names and shapes follow the official
``ChameleonXLLMXForConditionalGeneration`` checkpoints described in docs/method.md §6.1
(bias-free q/k/v/o with GQA, QK LayerNorm weights of shape ``[model_parallel_size, head_dim]``
with bias, SwiGLU MLP, untied ``lm_head``). Used by ``reference_forward`` and by the tests that
check our Megatron model against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import torch
from safetensors.torch import save_file

__all__ = ["tiny_official_config", "random_official_state_dict", "write_official_checkpoint"]


def tiny_official_config(**overrides) -> dict:
    """A ``config.json`` dict of a tiny official-format model (2 layers, hidden 128, GQA 4/2).

    ``vocab_size`` 65,600 = 65,536 text ids + 64 visual codes (the tiny test vocabulary of
    docs/method.md §1.1). Keyword ``overrides`` update (or add) fields.
    """
    config = {
        "model_type": "chameleon",
        "architectures": ["ChameleonXLLMXForConditionalGeneration"],
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 65600,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "mm_rope": True,
        "swin_norm": False,
        "model_parallel_size": 1,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "max_position_embeddings": 4096,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "pad_token_id": None,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    config.update(overrides)
    return config


def _shapes(config: dict) -> tuple:
    """(hidden, heads, kv_heads, head_dim, intermediate, vocab, layers, model_parallel_size)."""
    h = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    if h % heads:
        raise ValueError(f"hidden_size {h} is not a multiple of num_attention_heads {heads}")
    return (h, heads, kv_heads, h // heads, int(config["intermediate_size"]),
            int(config["vocab_size"]), int(config["num_hidden_layers"]),
            int(config.get("model_parallel_size", 1) or 1))


def random_official_state_dict(config: dict, seed: int = 0, include_vqmodel: bool = True,
                               distinct_qk_norm_rows: bool = False) -> Dict[str, torch.Tensor]:
    """A deterministic random fp32 state dict with the official key names and shapes.

    Matrices and the embedding are N(0, 0.05); RMSNorm and QK-norm weights 1 + N(0, 0.1); QK-norm
    biases N(0, 0.1) (non-zero on purpose, so that a dropped or misplaced bias shows). The QK-norm
    tensors are ``[model_parallel_size, head_dim]``; with ``model_parallel_size > 1`` their rows are
    equal unless ``distinct_qk_norm_rows`` is true. ``include_vqmodel`` adds two dummy
    ``model.vqmodel.*`` tensors, which a loader of the language model must ignore.
    """
    h, heads, kv_heads, d, inter, vocab, layers, mp = _shapes(config)
    gen = torch.Generator().manual_seed(int(seed))

    def normal(*shape, std=0.05, mean=0.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean

    def qk_norm_rows(mean, std):
        if distinct_qk_norm_rows:
            return normal(mp, d, std=std, mean=mean)
        return normal(1, d, std=std, mean=mean).repeat(mp, 1)

    sd: Dict[str, torch.Tensor] = {"model.embed_tokens.weight": normal(vocab, h)}
    for n in range(layers):
        p = f"model.layers.{n}."
        sd[p + "self_attn.q_proj.weight"] = normal(heads * d, h)
        sd[p + "self_attn.k_proj.weight"] = normal(kv_heads * d, h)
        sd[p + "self_attn.v_proj.weight"] = normal(kv_heads * d, h)
        sd[p + "self_attn.o_proj.weight"] = normal(h, heads * d)
        for name in ("q_norm", "k_norm"):
            sd[p + f"self_attn.{name}.weight"] = qk_norm_rows(1.0, 0.1)
            sd[p + f"self_attn.{name}.bias"] = qk_norm_rows(0.0, 0.1)
        sd[p + "mlp.gate_proj.weight"] = normal(inter, h)
        sd[p + "mlp.up_proj.weight"] = normal(inter, h)
        sd[p + "mlp.down_proj.weight"] = normal(h, inter)
        sd[p + "input_layernorm.weight"] = normal(h, std=0.1, mean=1.0)
        sd[p + "post_attention_layernorm.weight"] = normal(h, std=0.1, mean=1.0)
    sd["model.norm.weight"] = normal(h, std=0.1, mean=1.0)
    sd["lm_head.weight"] = normal(vocab, h)
    if include_vqmodel:
        sd["model.vqmodel.quantize.embedding.weight"] = normal(16, 8)
        sd["model.vqmodel.encoder.conv_in.weight"] = normal(4, 3, 3, 3)
    return sd


def _split_keys(keys: List[str], num_shards: int) -> List[List[str]]:
    """Contiguous groups of ``keys`` with counts differing by at most one (none empty)."""
    if not 1 <= num_shards <= len(keys):
        raise ValueError(f"num_shards must be in [1, {len(keys)}], got {num_shards}")
    base, extra = divmod(len(keys), num_shards)
    groups, start = [], 0
    for i in range(num_shards):
        end = start + base + (1 if i < extra else 0)
        groups.append(keys[start:end])
        start = end
    return groups


def write_official_checkpoint(directory, config: dict, state_dict: Dict[str, torch.Tensor],
                              num_shards: int = 1) -> Path:
    """Write ``config.json`` and the weights as an HF checkpoint directory; returns the directory.

    ``num_shards == 1`` writes ``model.safetensors``; otherwise ``model-0000i-of-0000N.safetensors``
    files (each tensor whole in one shard, keys split in order) and ``model.safetensors.index.json``
    with ``{"metadata": {"total_size": bytes}, "weight_map": {key: file}}``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    meta = {"format": "pt"}
    if num_shards == 1:
        save_file(tensors, str(out / "model.safetensors"), metadata=meta)
        return out
    weight_map: Dict[str, str] = {}
    total = 0
    for i, keys in enumerate(_split_keys(list(tensors), num_shards), start=1):
        name = f"model-{i:05d}-of-{num_shards:05d}.safetensors"
        save_file({k: tensors[k] for k in keys}, str(out / name), metadata=meta)
        for k in keys:
            weight_map[k] = name
            total += tensors[k].numel() * tensors[k].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def imported_tiny_checkpoint(directory: Path, seed: int) -> Path:
    """A random tiny official checkpoint under ``directory/hf``, imported to torch_dist at
    ``directory/ckpt`` (what generation tests load); returns the torch_dist root."""
    from lumos_megatron.conversion.import_hf import import_hf

    config = tiny_official_config()
    hf = write_official_checkpoint(Path(directory) / "hf", config, random_official_state_dict(config, seed=seed))
    import_hf(hf, Path(directory) / "ckpt", progress=False)
    return Path(directory) / "ckpt"
