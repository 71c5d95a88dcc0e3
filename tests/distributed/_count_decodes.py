"""Count the video decodes each rank of a training run does, per manifest path.

Run by ``test_streaming_reads_once.py``, as one process or under torchrun::

    python -m torch.distributed.run --nproc-per-node 2 --master-port P \
        tests/distributed/_count_decodes.py OUT_DIR -- <lumos_megatron.train args ...>

Wraps ``lumos_megatron.data.pretokenize.encode_entry`` (the decode + tokenize of one manifest
row, which streaming imports at call time) with a counter, runs ``lumos_megatron.train.main`` in
this process, and writes ``OUT_DIR/rank{RANK}.json``: ``{"rank", "status" (main's return),
"decodes": {manifest path: calls}}``. A call that raises (a bad input streaming substitutes)
counts too: it is a read all the same.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import List


def main(argv: List[str]) -> int:
    """``OUT_DIR [--] TRAIN_ARGS ...`` → ``OUT_DIR/rank{RANK}.json`` (see module docstring)."""
    out_dir, train_args = Path(argv[0]), argv[1:]
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    import lumos_megatron.data.pretokenize as pretokenize
    from lumos_megatron.train import main as train_main

    decodes: Counter = Counter()
    original = pretokenize.encode_entry

    def counting_encode_entry(entry, *args, **kwargs):
        decodes[str(entry.path)] += 1
        return original(entry, *args, **kwargs)

    pretokenize.encode_entry = counting_encode_entry
    try:
        status = train_main(train_args)
    finally:
        pretokenize.encode_entry = original
    rank = int(os.environ.get("RANK", "0"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "status": status, "decodes": dict(decodes)}, indent=1))
    return status


if __name__ == "__main__":  # guard: dist_checkpointing-style spawns re-import __main__
    sys.exit(main(sys.argv[1:]))
