"""Checkpoint conversion between the official Lumos-1 (Hugging Face) layout and torch_dist.

    python tools/checkpoint/convert.py import-hf --hf-dir D --out C [--dtype fp32|bf16]
        [--target-vocab-size V] [--seed S] [--zero-head-rows A:B] [--force] [--no-progress]
    python tools/checkpoint/convert.py export-hf --load C --out D [--iteration N]
        [--shard-size 5GB] [--dtype fp32|bf16|fp16] [--force] [--no-progress]

Exit status: 0 done, 2 bad input (one line on stderr naming the key or file; nothing is left
at --out).
"""

import os
import sys

# This directory also holds inspect.py, which would shadow the standard library's inspect
# module (imported by torch) if the directory stayed first on the module search path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from lumos_megatron.conversion.cli import convert_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(convert_main())
