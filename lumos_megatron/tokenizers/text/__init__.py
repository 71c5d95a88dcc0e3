"""Text tokenizers producing Lumos text ids, the Lumos prompt, and placeholder filling.

``load_text_tokenizer("hf:PATH/tokenizer.json" | "sp:PATH.model", vocab)`` gives a
:class:`TextTokenizer`; Chameleon's tokenizer.json (the official one) is detected automatically.
"""

from .base import (
    FPS_PLACEHOLDER,
    FRAMES_PLACEHOLDER,
    RESOLUTION_PLACEHOLDER,
    TRANSIENT_TOKENS,
    TextTokenizer,
    transient_ids,
)
from .hf import HFTextTokenizer
from .placeholders import fill_placeholders
from .prompt import (
    BAD_CAPTION,
    PROMPT_TEMPLATE,
    CaptionError,
    build_prompt_ids,
    prompt_text,
    validate_caption,
)
from .sentencepiece_tokenizer import SentencePieceTextTokenizer, train_sentencepiece
from .spec import load_text_tokenizer

__all__ = [
    "BAD_CAPTION",
    "FPS_PLACEHOLDER",
    "FRAMES_PLACEHOLDER",
    "PROMPT_TEMPLATE",
    "RESOLUTION_PLACEHOLDER",
    "TRANSIENT_TOKENS",
    "CaptionError",
    "HFTextTokenizer",
    "SentencePieceTextTokenizer",
    "TextTokenizer",
    "build_prompt_ids",
    "fill_placeholders",
    "load_text_tokenizer",
    "prompt_text",
    "train_sentencepiece",
    "transient_ids",
    "validate_caption",
]
