"""Summarise a torch_dist checkpoint: configuration, parameter counts, saved parallel layout,
iteration, consumed samples, dtype, size on disk, optimizer state.

    python tools/checkpoint/inspect.py C [--iteration N] [--json]
"""

import os
import sys

# Named like the standard library's inspect module: drop this directory from the search path so
# that ``import inspect`` (torch does it) finds the real one.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from lumos_megatron.conversion.cli import inspect_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(inspect_main())
