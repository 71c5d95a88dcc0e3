"""Lay out a scaling ladder: model sizes x token budgets, one derived recipe and sbatch command per run.

The same as the console script ``lumos-ladder`` (``lumos_megatron.cli.ladder``); see
``python tools/scaling/make_ladder.py --help``.
"""

import os
import sys

# This folder holds scripts (collect.py, fit.py, ...) that must not shadow modules of those names.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from lumos_megatron.cli.base import run  # noqa: E402
from lumos_megatron.cli.ladder import main  # noqa: E402

if __name__ == "__main__":
    run(main)
