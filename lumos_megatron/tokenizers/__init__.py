"""Tokenizers: text (``tokenizers.text``: HF tokenizer.json, sentencepiece) and video
(``tokenizers.video``: Cosmos DV4x8x8 TorchScript files, the built-in FSQ causal tokenizer)."""
