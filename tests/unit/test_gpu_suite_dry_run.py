"""``tools/bench/gpu_suite.sh --dry-run``: the one prepared GPU call, run on the CPU at tiny sizes so
that the script (its steps, the benchmarks' options, the results file) does not rot."""

import subprocess

import pytest

from conftest import REPO

STEPS = ("extension kernels", "GPU tests (tests/gpu)", "attention benchmark", "loss benchmark",
         "decode benchmark", "generation benchmark", "training throughput")


@pytest.mark.slow  # runs the whole device script end to end (about a minute)
def test_gpu_suite_dry_run(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "tools" / "bench" / "gpu_suite.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    results = (tmp_path / "gpu_suite_results.md").read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + results[-3000:]
    assert "dry run on CPU" in results and "- device: no CUDA device" in results and "torch 2." in results
    for name in STEPS:
        assert f"## {name}\n" in results and f"gpu_suite: {name}: status 0" in proc.stdout, name
    assert "|" in results  # the benchmarks' tables are collected
    assert (tmp_path / "gpu_suite.log").stat().st_size > 0
