#!/usr/bin/env python
"""LM-head + loss benchmark: peak memory and time of the loss path, three ways, in one run.

Usage::

    python tools/bench/loss.py [--device cpu|cuda] [--tokens 2048 4096 8192] [--hidden 512]
                               [--vocab 129536] [--chunk-rows 256] [--quick]

For N tokens (one sequence, ``--loss-fraction`` of them carrying visual loss, as after AR-DF
masking) and an output weight ``[V, hidden]``, each method runs forward + backward:

* ``megatron``: full logits ``[N, V]`` + megatron-core ``vocab_parallel_cross_entropy`` over the
  whole vocabulary (the stock GPTModel path; a different objective, the memory baseline);
* ``official``: full logits in fp32 + the visual slice + 200-row chunked CE (what Lumos-1 does);
* ``ours``: ``losses.fused_visual_cross_entropy`` (loss rows only, visual columns only,
  ``--chunk-rows`` at a time, recomputed in backward).

Memory is the peak of tensors allocated by the loss path *beyond the output-weight gradient*,
which every method produces in the parameter's shape and which training keeps in its persistent
gradient buffer anyway. CPU: exact, from a dispatch-mode tensor tracker; CUDA: the allocator's
peak minus the weight-gradient size. Time is the median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory_tracker import TensorMemoryTracker  # noqa: E402

from lumos_megatron.losses import fused_visual_cross_entropy  # noqa: E402
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab  # noqa: E402

METHODS = ("megatron", "official", "ours")


def make_problem(n, hidden, vocab, loss_fraction, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 1, hidden, generator=gen).to(device, dtype).requires_grad_()
    w = (0.02 * torch.randn(vocab.vocab_size, hidden, generator=gen)).to(device, dtype).requires_grad_()
    labels = torch.full((1, n), IGNORE_INDEX, dtype=torch.long)
    rows = torch.rand(n, generator=gen) < loss_fraction
    labels[0, rows] = vocab.visual_offset + torch.randint(0, vocab.num_visual_codes, (int(rows.sum()),),
                                                          generator=gen)
    return h, w, labels.to(device)


def run_megatron(h, w, labels, vocab, chunk_rows):
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    logits = h @ w.t()                                   # [N, 1, V]
    mask = labels.t() >= vocab.visual_offset             # [N, 1]
    target = torch.where(mask, labels.t(), torch.zeros_like(labels.t()))
    per_token = vocab_parallel_cross_entropy(logits, target)
    loss = (per_token * mask).sum() / mask.sum()
    loss.backward()
    return loss.detach()


def run_official(h, w, labels, vocab, chunk_rows):
    logits = (h @ w.t()).float().transpose(0, 1).reshape(-1, vocab.vocab_size)
    flat = labels.reshape(-1)
    rows = flat >= vocab.visual_offset
    vis = logits[rows][:, vocab.visual_offset:]
    target = flat[rows] - vocab.visual_offset
    per_row = torch.cat([F.cross_entropy(a.float(), b, reduction="none")
                         for a, b in zip(vis.split(200), target.split(200))])
    loss = per_row[per_row != 0].mean()
    loss.backward()
    return loss.detach()


def run_ours(h, w, labels, vocab, chunk_rows):
    per_token = fused_visual_cross_entropy(h, w, labels, vocab, chunk_rows=chunk_rows)
    mask = labels >= vocab.visual_offset
    loss = (per_token * mask).sum() / mask.sum()
    loss.backward()
    return loss.detach()


RUNNERS = {"megatron": run_megatron, "official": run_official, "ours": run_ours}


def measure(method, n, args, vocab, device, dtype):
    """(peak MB beyond the weight gradient, median ms, loss) of one method at N tokens."""
    runner = RUNNERS[method]
    h, w, labels = make_problem(n, args.hidden, vocab, args.loss_fraction, device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = runner(h, w, labels, vocab, args.chunk_rows)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base - w.grad.untyped_storage().nbytes()
    else:
        with TensorMemoryTracker() as tracker:
            loss = runner(h, w, labels, vocab, args.chunk_rows)
        peak = tracker.peak_bytes(exclude={w.grad.untyped_storage().data_ptr()})
    times = []
    for _ in range(args.repeats):
        h.grad = w.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        runner(h, w, labels, vocab, args.chunk_rows)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    del h, w, labels
    return peak / 2**20, statistics.median(times), float(loss)


def init_megatron_tp1():
    """megatron's vocab-parallel CE needs a (size-1) tensor-parallel group."""
    from lumos_megatron.config import LumosConfig
    from lumos_megatron.platform.distributed import DistributedEnv, init_distributed
    from lumos_megatron.platform.parallel import initialize_parallel_state, resolve_layout

    cfg = LumosConfig()
    env = init_distributed(DistributedEnv(0, 1, 0, "127.0.0.1", 0, "single"))
    initialize_parallel_state(cfg, resolve_layout(cfg, env.world_size))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, nargs="+")
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--vocab", type=int, default=129536)
    parser.add_argument("--loss-fraction", type=float, default=0.75)
    parser.add_argument("--chunk-rows", type=int, help="rows per fused CE chunk (256 CPU, 1024 CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--official-max-tokens", type=int,
                        help="skip 'official' above this N (it needs ~4.5x megatron's memory; "
                             "default 4096 on CPU, 16384 on CUDA)")
    parser.add_argument("--quick", action="store_true", help="one small case (smoke test)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.hidden = args.hidden or (2048 if cuda else 512)
    args.tokens = args.tokens or ([4096, 8192, 16384, 28672] if cuda else [2048, 4096, 8192])
    args.chunk_rows = args.chunk_rows or (1024 if cuda else 256)
    args.official_max_tokens = args.official_max_tokens or (16384 if cuda else 4096)
    if args.quick:
        args.tokens, args.hidden, args.vocab, args.repeats = [256], 64, 65536 + 4096, 1
    dtype = torch.bfloat16 if cuda else torch.float32
    vocab = LumosVocab(vocab_size=args.vocab)
    init_megatron_tp1()

    name = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()} CPU"
    print(f"# {name}, torch {torch.__version__}, {datetime.date.today()}, {dtype}, hidden "
          f"{args.hidden}, vocab {args.vocab}, loss fraction {args.loss_fraction}, chunk rows "
          f"{args.chunk_rows}, threads {torch.get_num_threads()}")
    print("|      N |   method | peak MB (excl. dW) | vs megatron |   f+b ms | vs megatron |     loss |")
    print("|--------|----------|--------------------|-------------|----------|-------------|----------|")
    for n in args.tokens:
        base = None
        for method in METHODS:
            if method == "official" and n > args.official_max_tokens:
                print(f"| {n:6d} | {method:>8} | skipped (N > --official-max-tokens) |", flush=True)
                continue
            peak, ms, loss = measure(method, n, args, vocab, device, dtype)
            base = base or (peak, ms)
            print(f"| {n:6d} | {method:>8} | {peak:18.1f} | {peak / base[0]:10.1%} | {ms:8.1f} |"
                  f" {ms / base[1]:10.2f}x | {loss:8.4f} |", flush=True)


if __name__ == "__main__":
    main()
