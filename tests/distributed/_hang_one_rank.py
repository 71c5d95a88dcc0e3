"""Make one rank of a training run hang for good, to test the hang watchdog.

Run by ``test_hang_watchdog.py``, one process per rank (``RANK``/``WORLD_SIZE`` set)::

    python tests/distributed/_hang_one_rank.py HANG_RANK HANG_STEP -- <lumos_megatron.train args ...>

Wraps the training loop's ``run_forward_backward`` so that on rank ``HANG_RANK`` the
``HANG_STEP``-th call (1-based) blocks forever in ``_injected_hang`` (as a rank stuck in a driver
call or a dead file system would), then runs ``lumos_megatron.train.main`` in this process. The
other ranks go on into the step's gradient all-reduce and block there.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import List


def _injected_hang() -> None:
    """Never returns (the watchdog's os._exit ends the process); named so the dump shows it."""
    threading.Event().wait()


def main(argv: List[str]) -> int:
    """``HANG_RANK HANG_STEP [--] TRAIN_ARGS ...`` (see module docstring)."""
    hang_rank, hang_step, train_args = int(argv[0]), int(argv[1]), argv[2:]
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    import lumos_megatron.training.loop as loop
    from lumos_megatron.train import main as train_main

    original = loop.run_forward_backward
    calls = [0]

    def hanging_run_forward_backward(*args, **kwargs):
        calls[0] += 1
        if calls[0] == hang_step and int(os.environ.get("RANK", "0")) == hang_rank:
            _injected_hang()
        return original(*args, **kwargs)

    loop.run_forward_backward = hanging_run_forward_backward
    return train_main(train_args)


if __name__ == "__main__":  # guard: dist_checkpointing-style spawns re-import __main__
    sys.exit(main(sys.argv[1:]))
