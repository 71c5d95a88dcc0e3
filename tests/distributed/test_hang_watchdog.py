"""A rank that hangs for good ends the run within seconds, not at the job's wall time: every
rank's watchdog fires (the hung rank and the one blocked in the gradient all-reduce waiting for
it), dumps its threads' stacks and exits with status 6 (``exit_codes.HUNG``).

The two ranks are started directly (``RANK``/``WORLD_SIZE``/``MASTER_*``, as srun starts tasks)
rather than under torchrun, so that each rank's own exit status can be checked: torchrun exits 1
whenever a worker fails and names the first worker's status only in its report.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_RECIPE, _free_port, train_command
from lumos_megatron.training import exit_codes

pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).resolve().parent / "_hang_one_rank.py"
HANG_RANK, HANG_STEP = 0, 8  # after the 5 steps the median needs
MIN_LIMIT_S = 3.0


def test_one_hung_rank_ends_every_rank_with_status_6():
    args = ["--config", str(TINY_RECIPE), "--train-iters", "200",
            # Tiny CPU steps take ~0.1 s: the limit is the minimum, 3 s after the median applies.
            "train.hang_timeout_factor=3", f"train.hang_timeout_min_s={MIN_LIMIT_S}",
            "train.hang_timeout_s=120"]
    _, env = train_command(args)
    port = str(_free_port())
    procs = []
    start = time.monotonic()
    for rank in range(2):
        rank_env = dict(env, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                        MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                        # The script runs from tests/distributed: find this checkout's package.
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
        procs.append(subprocess.Popen([sys.executable, str(SCRIPT), str(HANG_RANK), str(HANG_STEP), "--", *args],
                                      cwd=REPO, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    elapsed = time.monotonic() - start
    report = "\n".join(f"--- rank {r}: status {p.returncode}\n{out[-2000:]}\n{err[-4000:]}"
                       for r, (p, (out, err)) in enumerate(zip(procs, outputs)))
    assert [p.returncode for p in procs] == [exit_codes.HUNG] * 2, report
    for rank, (out, err) in enumerate(outputs):
        header = [line for line in err.splitlines() if line.startswith("lumos_megatron: hang watchdog")]
        assert len(header) == 1, report
        assert f"on rank {rank}: iteration {HANG_STEP} has run for" in header[0], report
        assert f"over its limit of {MIN_LIMIT_S:.2f} s" in header[0], report
        assert f"exiting with status {exit_codes.HUNG}" in header[0], report
        assert err.count("(most recent call first)") >= 2, report  # the main thread and the watchdog's
    hung_err, waiting_err = outputs[HANG_RANK][1], outputs[1 - HANG_RANK][1]
    assert "_injected_hang" in hung_err, report
    # The other rank sits in the loop's step (megatron's schedule, the gradient all-reduce).
    assert "_injected_hang" not in waiting_err and "lumos_megatron/training/loop.py" in waiting_err, report
    # The last rank's log lines name the slowest rank of each logging window.
    log = [line for line in outputs[1][0].splitlines() if " iteration " in line and "lm loss" in line]
    assert len(log) == HANG_STEP - 1 and all("slowest rank " in line for line in log), report
    assert elapsed < 120, report
