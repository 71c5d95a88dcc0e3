"""Fit scaling laws to a table of training runs (Hoffmann et al. 2022, Approaches 3 and 2).

The same as the console script ``lumos-fit`` (``lumos_megatron.cli.fit``); see
``python tools/scaling/fit.py --help``.
"""

import os
import sys

# This folder holds scripts (collect.py, fit.py, ...) that must not shadow modules of those names.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from lumos_megatron.cli.base import run  # noqa: E402
from lumos_megatron.cli.fit import main  # noqa: E402

if __name__ == "__main__":
    run(main)
