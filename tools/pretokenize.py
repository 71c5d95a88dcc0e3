"""Pre-tokenize videos/images + captions into Lumos indexed-dataset shards.

The same as the console script ``lumos-pretokenize`` (``lumos_megatron.cli.pretokenize``); see
``python tools/pretokenize.py --help``.
"""

from lumos_megatron.cli.base import run
from lumos_megatron.cli.pretokenize import main

if __name__ == "__main__":
    run(main)
