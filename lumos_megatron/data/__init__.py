"""Data: decoding (``video``), manifests and pre-tokenization, indexed-dataset shards, blends and
splits, the sample streams a run reads (pre-tokenized, streaming or mock), and collation."""
