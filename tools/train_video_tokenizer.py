#!/usr/bin/env python
"""Train the built-in causal FSQ video tokenizer on a few clips.

The same as the console script ``lumos-train-video-tokenizer``
(``lumos_megatron.cli.train_video_tokenizer``); see ``python tools/train_video_tokenizer.py --help``.
"""

from lumos_megatron.cli.base import run
from lumos_megatron.cli.train_video_tokenizer import main

if __name__ == "__main__":
    run(main)
