"""Data: mock Lumos samples (now); decoding, pre-tokenization and indexed datasets (W1.5)."""
