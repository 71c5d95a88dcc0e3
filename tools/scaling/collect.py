"""Collect training runs into the CSV a scaling-law fit reads.

The same as the console script ``lumos-collect`` (``lumos_megatron.cli.collect``); see
``python tools/scaling/collect.py --help``.
"""

import os
import sys

# This folder holds scripts (collect.py, fit.py, ...) that must not shadow modules of those names.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from lumos_megatron.cli.base import run  # noqa: E402
from lumos_megatron.cli.collect import main  # noqa: E402

if __name__ == "__main__":
    run(main)
