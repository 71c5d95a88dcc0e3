"""Video tokenizers: causal 4x8x8 RGB clip <-> code grid.

* ``CosmosVideoTokenizer``: Cosmos-Tokenizer DV4x8x8 TorchScript files (the Lumos-1 tokenizer);
* ``FSQVideoTokenizer``: our own small causal 3D-conv FSQ tokenizer (``tools/train_video_tokenizer.py``);
* ``load_video_tokenizer("cosmos:DIR" | "fsq:CKPT.pt" | PATH)`` picks one from a spec string.
"""

from .base import VideoTokenizer, latent_frames_for, rgb_frames_for
from .cosmos import COSMOS_DV_CODEBOOK_SIZE, CosmosVideoTokenizer
from .fsq import COSMOS_LEVELS, DEFAULT_LEVELS, FSQuantizer, fsq_basis
from .fsq_model import FSQVideoAutoencoder, FSQVideoConfig
from .fsq_tokenizer import FSQVideoTokenizer, load_fsq_checkpoint, save_fsq_checkpoint
from .spec import load_video_tokenizer, parse_video_tokenizer_spec

__all__ = [
    "COSMOS_DV_CODEBOOK_SIZE",
    "COSMOS_LEVELS",
    "DEFAULT_LEVELS",
    "CosmosVideoTokenizer",
    "FSQVideoAutoencoder",
    "FSQVideoConfig",
    "FSQVideoTokenizer",
    "FSQuantizer",
    "VideoTokenizer",
    "fsq_basis",
    "latent_frames_for",
    "load_fsq_checkpoint",
    "load_video_tokenizer",
    "parse_video_tokenizer_spec",
    "rgb_frames_for",
    "save_fsq_checkpoint",
]
