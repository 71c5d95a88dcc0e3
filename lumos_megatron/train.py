"""Entry point: ``python -m lumos_megatron.train --config RECIPE [overrides]`` (also ``lumos-train``).

Runs under torchrun, SLURM srun or as a single process. Bad configurations and impossible
parallel layouts exit with status 2 and one line naming the problem, before any process group is
created (so no rank hangs waiting for the others); so do unusable checkpoints (``--load``).
SIGTERM/SIGUSR1 or ``--exit-duration-in-mins`` end the run after a save with status 0; a NaN/Inf
loss ends it with status 3. A full checkpoint disk ends it with status 4 (the partial save
removed, the previous checkpoint intact), saves that keep failing with status 5, and a step far
slower than usual (``train.hang_timeout_*``: a rank hung, the others blocked waiting for it) makes
every rank dump its threads' stacks to stderr and exit with status 6. ``training/exit_codes.py``
and docs/failure_modes.md list them all.
"""

from __future__ import annotations

import sys
import time
from typing import List, Optional

_USAGE = """usage: lumos-train (or python -m lumos_megatron.train) --config RECIPE [section.field=value ...] [Megatron flags]

Megatron flags: --tensor-model-parallel-size N --pipeline-model-parallel-size N
  --virtual-pipeline-model-parallel-size N --context-parallel-size N --sequence-parallel
  --use-distributed-optimizer --micro-batch-size N --global-batch-size N --train-iters N
  --train-samples N --lr X --min-lr X --seq-length N --seed N --tensorboard-dir DIR
  --log-interval N --bf16 --exit-duration-in-mins M
Checkpoints: --save DIR --save-interval N --load DIR --ckpt-step N --finetune (checkpoint.keep_last=K);
  without --config, --load takes the model shape from the checkpoint's run_config.yaml
Dotted overrides: e.g. train.lr=1e-4 model.num_layers=4 parallel.sequence_parallel=true
Examples:
  lumos-train --config examples/recipes/tiny_cpu.yaml --tensorboard-dir runs/tiny/tensorboard
  torchrun --nproc-per-node 2 -m lumos_megatron.train --config examples/recipes/tiny_cpu.yaml \
      --tensor-model-parallel-size 2 --save ckpt/tiny --save-interval 5
  lumos-train --load ckpt/tiny --train-iters 20      (continue: the shape comes from the checkpoint)
--version prints the package version.
Exit status: 0 done (also after SIGTERM/SIGUSR1 or the exit duration: saved first), 2 bad input
  (also: another live run owns --save), 3 NaN/Inf loss, 4 no space left for a checkpoint, 5 checkpoint
  saves kept failing, 6 hung (the hang watchdog fired; every rank's stacks are on stderr).
"""


def main(argv: Optional[List[str]] = None) -> int:
    """Parse, validate, train. Returns the process exit status."""
    start_time = time.time()  # the --exit-duration-in-mins clock starts with the process
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(_USAGE)
        return 0
    if "--version" in argv:
        from lumos_megatron.cli.base import package_version

        print(f"lumos-train {package_version()}")
        return 0
    from lumos_megatron.checkpoint import CheckpointError
    from lumos_megatron.checkpoint.directory import NoSpaceError, with_step_hint
    from lumos_megatron.checkpoint.integrity import preflight
    from lumos_megatron.config import ConfigError, check_runtime_support, parse_cli, validate_config
    from lumos_megatron.platform.distributed import detect_distributed_env
    from lumos_megatron.platform.parallel import LayoutError, resolve_layout

    launch = detect_distributed_env()
    rank = launch.rank
    try:
        cfg = parse_cli(argv, validate=False)
        # The world-size check first: an impossible layout is the root cause of the rest.
        resolve_layout(cfg, launch.world_size)
        validate_config(cfg)
        # Before any process group exists: e.g. flex without CUDA would otherwise fail deep in
        # autograd on the first backward, after every rank has built its model.
        check_runtime_support(cfg, training=True)
        c = cfg.checkpoint
        preflight(c.save, c.load, c.load_step, fallback=c.fallback)
    except (ConfigError, LayoutError, ValueError, CheckpointError) as err:
        if rank == 0:
            print(f"lumos_megatron.train: error: {with_step_hint(err, '--ckpt-step')}", file=sys.stderr)
        else:
            # Every rank finds the same error; torchrun kills the others as soon as one exits, so
            # the other ranks give rank 0 time to print the one line (a race under load).
            time.sleep(5)
        return 2
    from lumos_megatron.platform.distributed import shutdown_distributed
    from lumos_megatron.training.loop import train
    from lumos_megatron.training import exit_codes
    from lumos_megatron.training.checkpointing import SaveFailed
    from lumos_megatron.training.signals import TrainingDiverged

    try:
        train(cfg, start_time=start_time)
    except (ConfigError, CheckpointError) as err:
        # Every rank raises the same error (checkpoint checks and save failures are agreed collectively).
        if rank == 0:
            print(f"lumos_megatron.train: error: {with_step_hint(err, '--ckpt-step')}", file=sys.stderr)
        if isinstance(err, NoSpaceError):
            return exit_codes.NO_SPACE
        return exit_codes.SAVE_FAILED if isinstance(err, SaveFailed) else exit_codes.BAD_INPUT
    except TrainingDiverged as err:
        if rank == 0:
            print(f"lumos_megatron.train: error: {err}", file=sys.stderr)
        return exit_codes.NONFINITE_LOSS
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":  # required: dist_checkpointing's writer spawns and re-imports __main__
    sys.exit(main())
