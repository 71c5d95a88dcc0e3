"""Official ``config.json`` (Chameleon-style, as released with Lumos-1) ⇄ our ``ModelConfig``.

The official model is ``ChameleonXLLMXForConditionalGeneration`` (docs/method.md §6.1): pre-norm
RMSNorm blocks, a head-shared LayerNorm(+bias) QK-norm, SwiGLU, GQA, untied embeddings, MM-RoPE
when ``mm_rope`` is true. Variants of the Chameleon class that our decoder does not implement
(post-norm ``swin_norm``, tied embeddings, biases, another activation, RoPE scaling) are refused
with one line rather than converted into a model that computes something else.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Optional

from lumos_megatron.config.schema import ModelConfig
from lumos_megatron.conversion.errors import ConversionError
from lumos_megatron.models.rope_variants import head_dim_problem

OFFICIAL_MODEL_TYPE = "chameleon"
OFFICIAL_ARCHITECTURE = "ChameleonXLLMXForConditionalGeneration"
OFFICIAL_QK_NORM_EPSILON = 1e-5
"""The official QK LayerNorm epsilon is hard-coded, not read from the config."""

_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")

# (field, value that our decoder supports, what the field means when it differs)
_REFUSED_UNLESS = (
    ("swin_norm", False, "post-norm (Swin) decoder layers"),
    ("tie_word_embeddings", False, "tied input embedding and LM head"),
    ("attention_bias", False, "biases on the q/k/v/o projections"),
    ("mlp_bias", False, "biases on the MLP projections"),
    ("hidden_act", "silu", "an MLP activation other than SiLU (SwiGLU)"),
    ("rope_scaling", None, "RoPE scaling"),
)


def _shown(value: Any) -> str:
    """A config value as it reads in ``config.json`` (``null``, ``"8"``, ``true``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _int_field(hf: Dict[str, Any], name: str, source: str, default: Optional[int] = None) -> int:
    """``hf[name]`` as a positive integer; ``default`` when the key is absent (required when
    ``default`` is None). A present ``null``, a bool, a string or a float is refused: guessing
    would build a model of another shape than the checkpoint's."""
    if name not in hf and default is not None:
        return default
    value = hf.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConversionError(f"{source}: field {name!r} must be a positive integer, found {_shown(value)}")
    return value


def _float_field(hf: Dict[str, Any], name: str, source: str, default: float, low: float = 0.0,
                 low_inclusive: bool = False, high: Optional[float] = None) -> float:
    """``hf[name]`` as a finite number above ``low`` (or at it, with ``low_inclusive``) and below
    ``high``; ``default`` when the key is absent. ``null``, strings and bools are refused rather
    than replaced by the default, which may not be what the weights were trained with."""
    if name not in hf:
        return default
    value = hf[name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (high is None or value < high)
    if not ok:
        bounds = f">= {low:g}" if low_inclusive else f"> {low:g}"
        if high is not None:
            bounds += f" and < {high:g}"
        raise ConversionError(f"{source}: field {name!r} must be a number {bounds}, found {_shown(value)}")
    return float(value)


def _bool_field(hf: Dict[str, Any], name: str, source: str, default: bool) -> bool:
    """``hf[name]`` as true/false; ``default`` when absent (``null`` says neither)."""
    if name not in hf:
        return default
    value = hf[name]
    if not isinstance(value, bool):
        raise ConversionError(f"{source}: field {name!r} must be true or false, found {_shown(value)}")
    return value


def model_config_from_hf(hf: Dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Our ``ModelConfig`` for an official config (``source`` names the file in messages).

    Raises :class:`ConversionError` (one line naming the key and the value) on an unknown
    ``model_type``, a missing field, a ``null`` or wrongly typed field (a string or a bool
    where a number is needed, a size that is not positive), or an architecture variant listed
    above. ``null`` is accepted only where Hugging Face configs give it a meaning:
    ``num_key_value_heads`` (one KV head per query head), ``head_dim`` (hidden / heads) and the
    refused variants' "off" values.
    """
    if not isinstance(hf, dict):
        raise ConversionError(f"{source}: expected a JSON object, found {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type != OFFICIAL_MODEL_TYPE:
        raise ConversionError(f"{source}: unsupported model_type {model_type!r}; expected "
                              f"{OFFICIAL_MODEL_TYPE!r} (the Lumos-1 / Chameleon layout)")
    for name in _REQUIRED:
        if name not in hf:
            raise ConversionError(f"{source}: missing required field {name!r}")
    for name, supported, meaning in _REFUSED_UNLESS:
        value = hf.get(name, supported)
        # 0 == False in Python: a number (or a string) where a flag belongs is refused, not compared.
        if isinstance(supported, bool) and value is not None and not isinstance(value, bool):
            raise ConversionError(f"{source}: field {name!r} must be true or false, found {_shown(value)}")
        if value != supported and not (supported is False and value is None):
            raise ConversionError(f"{source}: {name}={_shown(value)} ({meaning}) is not supported by the "
                                  f"Lumos decoder; expected {_shown(supported)}")
    hidden = _int_field(hf, "hidden_size", source)
    heads = _int_field(hf, "num_attention_heads", source)
    kv_heads = heads if hf.get("num_key_value_heads") is None else _int_field(hf, "num_key_value_heads", source)
    if heads % kv_heads:
        raise ConversionError(f"{source}: num_key_value_heads={kv_heads} must divide "
                              f"num_attention_heads={heads}")
    if hidden % heads:
        raise ConversionError(f"{source}: hidden_size={hidden} is not a multiple of "
                              f"num_attention_heads={heads}")
    head_dim = hidden // heads
    if hf.get("head_dim") is not None and _int_field(hf, "head_dim", source) != head_dim:
        raise ConversionError(f"{source}: head_dim={hf['head_dim']} differs from hidden_size / "
                              f"num_attention_heads = {head_dim}, which the official model uses")
    variant = "mm_rope" if _bool_field(hf, "mm_rope", source, False) else "1d"
    problem = head_dim_problem(head_dim, variant)
    if problem:
        raise ConversionError(f"{source}: {problem}")
    model_parallel_rows(hf, source)  # checked here too, so every config problem shows before any tensor
    return ModelConfig(
        num_layers=_int_field(hf, "num_hidden_layers", source),
        hidden_size=hidden,
        ffn_hidden_size=_int_field(hf, "intermediate_size", source),
        num_attention_heads=heads,
        num_query_groups=kv_heads,
        kv_channels=None,
        vocab_size=_int_field(hf, "vocab_size", source),
        max_position_embeddings=_int_field(hf, "max_position_embeddings", source,
                                           ModelConfig.max_position_embeddings),
        rotary_base=_float_field(hf, "rope_theta", source, 10000.0),
        rope_variant=variant,
        norm_epsilon=_float_field(hf, "rms_norm_eps", source, 1e-5),
        qk_layernorm=True,
        qk_layernorm_epsilon=OFFICIAL_QK_NORM_EPSILON,
        init_method_std=_float_field(hf, "initializer_range", source, 0.02),
        attention_dropout=_float_field(hf, "attention_dropout", source, 0.0, low_inclusive=True, high=1.0),
        add_bias_linear=False,
        tie_embeddings=False,
    )


def model_parallel_rows(hf: Dict[str, Any], source: str = "config.json") -> int:
    """Rows of the official QK-norm parameters (``model_parallel_size``; 1 when absent)."""
    return _int_field(hf, "model_parallel_size", source, 1)


def hf_config_from_model(model: ModelConfig, torch_dtype: str,
                         template: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The official ``config.json`` of a model with our ``ModelConfig``.

    ``template`` (the ``config.json`` an imported checkpoint came from) keeps the fields we do
    not model (token ids, the VQ-GAN config, the vocabulary map); the architecture fields are
    always ours. Raises :class:`ConversionError` for a model the official class cannot express.
    """
    heads = model.num_attention_heads
    head_dim = model.kv_channels if model.kv_channels is not None else model.hidden_size // heads
    problems = []
    if model.rope_variant not in ("mm_rope", "1d"):
        problems.append(f"rope_variant {model.rope_variant!r} (the official model has MM-RoPE or 1D RoPE)")
    if head_dim * heads != model.hidden_size:
        problems.append(f"kv_channels={model.kv_channels} with hidden_size / heads = "
                        f"{model.hidden_size // heads} (the official head dim is hidden_size / heads)")
    if model.tie_embeddings:
        problems.append("tied embeddings")
    if model.add_bias_linear:
        problems.append("linear biases")
    if not model.qk_layernorm:
        problems.append("no QK-norm (the official attention always has one)")
    if model.qk_layernorm_epsilon != OFFICIAL_QK_NORM_EPSILON:
        problems.append(f"qk_layernorm_epsilon={model.qk_layernorm_epsilon} (official: 1e-5, fixed)")
    if problems:
        raise ConversionError("the model cannot be written in the official format: " + "; ".join(problems))
    config = dict(template or {})
    config.update({
        "architectures": [OFFICIAL_ARCHITECTURE],
        "model_type": OFFICIAL_MODEL_TYPE,
        "hidden_size": model.hidden_size,
        "intermediate_size": model.ffn_hidden_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": model.num_query_groups or heads,
        "vocab_size": model.vocab_size,
        "max_position_embeddings": model.max_position_embeddings,
        "rope_theta": model.rotary_base,
        "rope_scaling": None,
        "rms_norm_eps": model.norm_epsilon,
        "mm_rope": model.rope_variant == "mm_rope",
        "swin_norm": False,
        "model_parallel_size": 1,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": model.attention_dropout,
        "hidden_act": "silu",
        "initializer_range": model.init_method_std,
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
    })
    config.setdefault("bos_token_id", 0)
    config.setdefault("use_cache", True)
    return config
