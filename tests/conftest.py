"""Shared test helpers: single-process megatron state, torchrun launches, TensorBoard reading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "examples" / "recipes" / "tiny_cpu.yaml"


@pytest.fixture(scope="session")
def megatron_single_process():
    """torch.distributed (gloo, world 1) + megatron parallel_state at TP=PP=CP=1, once per session."""
    from lumos_megatron.config import LumosConfig
    from lumos_megatron.platform.distributed import DistributedEnv, init_distributed
    from lumos_megatron.platform.parallel import initialize_parallel_state, resolve_layout

    cfg = LumosConfig()
    env = init_distributed(DistributedEnv(0, 1, 0, "127.0.0.1", 0, "single"))
    initialize_parallel_state(cfg, resolve_layout(cfg, env.world_size))
    yield env


def lumos_batch(text_lens=(20, 40), frames=3, grid=(8, 8), seed=0):
    """Right-padded [B, L] token batch of real Lumos samples with different prompt lengths."""
    import torch

    from lumos_megatron.vocab import LumosVocab, build_video_sample

    vocab = LumosVocab()
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for n in text_lens:
        text = torch.randint(100, 8000, (n,), generator=gen)
        codes = torch.randint(0, vocab.num_visual_codes, (frames, *grid), generator=gen)
        samples.append(build_video_sample(text, codes, 2, 12, vocab)[0])
    length = max(s.numel() for s in samples)
    batch = torch.full((len(samples), length), vocab.pad, dtype=torch.long)
    for b, s in enumerate(samples):
        batch[b, : s.numel()] = s
    return batch


def train_command(args: Sequence[str], nproc: int = 1,
                  extra_env: Dict[str, str] | None = None) -> Tuple[List[str], Dict[str, str]]:
    """(argv, environment) of a ``lumos_megatron.train`` run (under torchrun when nproc > 1)."""
    env = dict(os.environ)
    env.update({"LUMOS_STRICT_CPU": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra_env or {})
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", str(_free_port()), "-m", "lumos_megatron.train", *args]
    else:
        cmd = [sys.executable, "-m", "lumos_megatron.train", *args]
    return cmd, env


def run_train(args: Sequence[str], nproc: int = 1, timeout: int = 600,
              extra_env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``lumos_megatron.train`` (under torchrun when nproc > 1) in a fresh process."""
    cmd, env = train_command(args, nproc, extra_env)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_scalars(tb_dir: Path, tag: str) -> List[Tuple[int, float]]:
    """(step, value) pairs of one TensorBoard scalar, sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        raise AssertionError(f"no scalar {tag!r} in {tb_dir}; have {acc.Tags()['scalars']}")
    return sorted((e.step, e.value) for e in acc.Scalars(tag))


def pytest_collection_modifyitems(config, items):
    """Every multi-process and end-to-end test is ``slow``: ``pytest -m "not slow"`` is the quick loop."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "distributed" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.slow)
