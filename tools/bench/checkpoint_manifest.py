"""What the checkpoint manifest costs: writing shard files (the save's own I/O, the baseline) against
hashing them back (SHA-256, ``checkpoint/manifest.py``), in the same run, and the resulting
estimate for a 1B-parameter checkpoint.

    python tools/bench/checkpoint_manifest.py [--gb 2] [--shard-mb 512] [--dir /tmp] [--recipe RECIPE]

The files are random bytes written with fsync, as a save writes its shards; hashing reads them
back (from the page cache right after a save, as in training). The 1B estimate takes the recipe's
parameter count at 14 bytes per parameter (bf16 weights + fp32 master weights and two Adam moments,
the distributed optimizer's checkpoint) and splits the hashing over the ranks as the save does.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lumos_megatron.checkpoint.manifest import checkpoint_files, hash_share  # noqa: E402

BYTES_PER_PARAM = 2 + 4 + 4 + 4


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=2.0, help="bytes to write and hash, in GB")
    p.add_argument("--shard-mb", type=int, default=512, help="size of each shard file")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where to write (the checkpoint filesystem)")
    p.add_argument("--recipe", default="examples/recipes/lumos_1b_stage1-image-256p_8gpu_h100_bf16.yaml")
    p.add_argument("--ranks", type=int, default=8, help="ranks the 1B estimate splits the hashing over")
    args = p.parse_args(argv)
    shard = args.shard_mb << 20
    count = max(1, int(args.gb * 1e9 // shard))
    block = os.urandom(shard)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start = time.perf_counter()
        for i in range(count):
            with open(Path(tmp) / f"__{i}_0.distcp", "wb") as f:
                f.write(block)
                f.flush()
                os.fsync(f.fileno())
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        hash_share(tmp, checkpoint_files(tmp))
        hash_s = time.perf_counter() - start
    total = count * shard
    rate = total / hash_s
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}, files under {args.dir}")
    print("| step | bytes | seconds | GB/s |\n|---|---|---|---|")
    print(f"| write + fsync (the save's own I/O) | {total / 1e9:.2f} GB | {write_s:.2f} | {total / write_s / 1e9:.2f} |")
    print(f"| SHA-256 read-back (manifest) | {total / 1e9:.2f} GB | {hash_s:.2f} | {rate / 1e9:.2f} |")
    print(f"manifest / save I/O time: {hash_s / write_s:.2f}")
    try:
        from lumos_megatron.config import load_recipe
        from lumos_megatron.models.parameter_counts import parameter_counts

        params = parameter_counts(load_recipe(args.recipe).model).total
        size = params * BYTES_PER_PARAM
        print(f"1B recipe: {params / 1e9:.2f} B parameters, checkpoint about {size / 1e9:.1f} GB; hashing split "
              f"over {args.ranks} ranks at this rate: {size / args.ranks / rate:.1f} s per save "
              f"({size / rate:.1f} s on one rank)")
    except Exception as err:  # the estimate is optional
        print(f"(no 1B estimate: {err})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
