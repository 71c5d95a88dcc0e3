#!/usr/bin/env python
"""AR-DF generation benchmark: KV cache vs recompute, batched vs sequential CFG, batch 1/4/8, in one run.

Usage::

    python tools/bench/generate.py [--small] [--grid 32 56] [--frames 2] [--steps 4] [--layers 2]
                                   [--hidden 128] [--heads 4] [--kv-heads 2] [--ffn 352] [--vocab 69632]
                                   [--batches 1 4 8] [--max-logits-gb 14] [--repeats 1] [--seed 0]
                                   [--workdir DIR]

A random official-format (Chameleon-style) checkpoint with MM-RoPE and GQA is written to a fresh
temp dir, converted with ``conversion.import_hf`` and loaded with ``inference.load_model`` (fp32,
seeded: every run has the same weights). Text-to-video requests: ``[0] + 60..100 random text ids +
[8710]``, ``fps`` 12, ``duration`` 2, ``--frames`` latent frames of ``--grid`` latents (32x56 is
the official 256p frame, a block of 3 + 32·57 + 1 = 1,828 tokens), ``--steps`` decoding steps per
frame, CFG 15, ρ_inf 0.7, prompt i sampled from seed ``--seed`` + i. Runs, all on the same model:

* ``kv-cache``: ``kv_cache=True`` vs ``kv_cache=False`` (every step forwards the whole sequence),
  prompt 0, batch 1; the tokens must be identical;
* ``cfg``: ``batch_cfg=True`` (cond + uncond rows in one forward) vs ``False`` (two forwards),
  prompt 0, batch 1, KV cache; identical tokens;
* ``batch``: prompts 0..3 one at a time, then batches of 4 and 8 (KV cache, batched CFG); each
  prompt's tokens must equal its batch-of-1 tokens (prompts 0..3; 4..7 only run batched);
* ``sampling``: the generator on the CPU (``--sample-device cpu``: the [N, V] logits go to the host
  every step) vs on the model's device (the default), prompt 0. On a CPU-only host both are the
  CPU, so the host copy is emulated by one copy of the cond and uncond logits per step.

``--device cuda --dtype bf16`` (the defaults on a GPU host) run the model on the GPU.

Token-forwards count the real tokens that go through the decoder (padding excluded). With prompt
length P (BOS … 8710), video prefix 3, block length B, F frames, T steps, per video:
  cache:     (P + 3) + 3 + 2·(F − 1)·B + 2·F·T·B   (each row's context once, each finished frame
             once more, one block per step per row);
  recompute: T · Σ_{k<F} [(P + 3 + (k + 1)·B) + (3 + (k + 1)·B)] = T · (F·(P + 6) + F·(F + 1)·B).
``token-fwd/s`` divides them by the wall time (sampling included); ``sampling share`` is the part
of it spent in the per-sample CFG + softmax + multinomial + re-masking update (``generation._decode``,
timed by wrapping it), the rest is the forward; ``speed-up`` is the baseline's seconds per video over
the row's; ``same tokens`` compares with the baseline's tokens; ``peak RSS`` is sampled every 10 ms.
``--repeats R`` runs every run once per round, R rounds, and reports the fastest of each (the host's
slow spells then hit all of them). The sampler works on full-vocabulary fp32 logits (as the official
one): a step holds about 3 · rows · H·W · V · 4 bytes of them (measured: LM-head output, its
transposed copy, the concatenated row groups; rows = 2 · batch); a batch whose estimate exceeds
``--max-logits-gb`` is skipped (batch 8 at 32x56 would need ~22 GiB). The defaults (2 frames x 4
steps, 4,096 visual codes) keep the run near 15 min on 2 cores: one sampling update of a 32x56 frame
(a 1,792 x V multinomial) takes 4-7 s there, and it does not batch.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

GB = 2**30
PRESETS = {"default": {"grid": (32, 56), "frames": 2, "steps": 4, "vocab": 65536 + 4096},
           "small": {"grid": (8, 8), "frames": 3, "steps": 4, "vocab": 65536 + 1024}}


# ---------------------------------------------------------------- a random official checkpoint
def write_random_official(directory: Path, args) -> Path:
    """``config.json`` + ``model.safetensors`` with the official key names, N(0, 0.05) matrices."""
    from safetensors.torch import save_file

    h, d = args.hidden, args.hidden // args.heads
    config = {"model_type": "chameleon", "architectures": ["ChameleonXLLMXForConditionalGeneration"],
              "hidden_size": h, "intermediate_size": args.ffn, "num_hidden_layers": args.layers,
              "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads, "vocab_size": args.vocab,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "mm_rope": True,
              "swin_norm": False, "model_parallel_size": 1, "attention_bias": False, "mlp_bias": False,
              "tie_word_embeddings": False, "max_position_embeddings": 32768, "hidden_act": "silu",
              "torch_dtype": "float32"}
    gen = torch.Generator().manual_seed(args.seed)

    def rand(*shape, mean=0.0, std=0.05):
        return torch.randn(*shape, generator=gen) * std + mean

    tensors = {"model.embed_tokens.weight": rand(args.vocab, h)}
    for n in range(args.layers):
        p = f"model.layers.{n}."
        tensors.update({p + "self_attn.q_proj.weight": rand(h, h),
                        p + "self_attn.k_proj.weight": rand(args.kv_heads * d, h),
                        p + "self_attn.v_proj.weight": rand(args.kv_heads * d, h),
                        p + "self_attn.o_proj.weight": rand(h, h),
                        p + "mlp.gate_proj.weight": rand(args.ffn, h), p + "mlp.up_proj.weight": rand(args.ffn, h),
                        p + "mlp.down_proj.weight": rand(h, args.ffn),
                        p + "input_layernorm.weight": rand(h, mean=1.0, std=0.1),
                        p + "post_attention_layernorm.weight": rand(h, mean=1.0, std=0.1)})
        for norm in ("q_norm", "k_norm"):
            tensors[p + f"self_attn.{norm}.weight"] = rand(1, d, mean=1.0, std=0.1)
            tensors[p + f"self_attn.{norm}.bias"] = rand(1, d, std=0.1)
    tensors["model.norm.weight"] = rand(h, mean=1.0, std=0.1)
    tensors["lm_head.weight"] = rand(args.vocab, h)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def make_model(work: Path, args):
    from lumos_megatron.conversion.import_hf import import_hf
    from lumos_megatron.inference import load_model

    import_hf(write_random_official(work / "hf", args), work / "ckpt", progress=False)
    torch.manual_seed(args.seed)
    return load_model(work / "ckpt", dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32,
                      device=args.device)


def make_prompts(count: int, seed: int):
    """``[0] + text ids + [8710]``, 60..100 ordinary text ids (clear of the special-token range)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    lengths = torch.randint(60, 101, (count,), generator=gen).tolist()
    return [[0] + torch.randint(10000, 60000, (n,), generator=gen).tolist() + [8710] for n in lengths]


# ---------------------------------------------------------------- measuring
class PeakRss(threading.Thread):
    """Samples the process RSS every 10 ms until stopped; ``peak`` in bytes."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self._done = 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def run(self):
        while not self._done.is_set():
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * self._page)
            self._done.wait(0.01)

    def stop(self):
        self._done.set()
        self.join()


@contextlib.contextmanager
def timed_sampling(emulate_host_copy: bool = False):
    """Accumulates the seconds spent in ``generation._decode`` (the per-sample sampling update).

    ``emulate_host_copy``: on a CPU-only run the model and a CPU generator share the device, so
    ``--sample-device cpu`` copies nothing; this copies the cond and uncond ``[N, V]`` logits once
    per step (what the device-to-host transfer moves on a GPU host), to measure that path's cost."""
    from lumos_megatron.inference import generation

    original, spent = generation._decode, [0.0]

    def timed(state, cond, uncond, *a, **k):
        start = time.perf_counter()
        if emulate_host_copy:
            cond, uncond = cond.clone(), uncond.clone()
        out = original(state, cond, uncond, *a, **k)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the time of the update, not of queueing it
        spent[0] += time.perf_counter() - start
        return out

    generation._decode = timed
    try:
        yield spent
    finally:
        generation._decode = original


def token_forwards(prompts, block, frames, steps, kv_cache):
    """Real (unpadded) tokens forwarded to generate ``prompts`` (formulas in the module docstring)."""
    if kv_cache:
        return sum(len(p) + 6 + 2 * (frames - 1) * block + 2 * frames * steps * block for p in prompts)
    return sum(steps * (frames * (len(p) + 6) + frames * (frames + 1) * block) for p in prompts)


def generate(model, prompts, seeds, args, sample_device="model", **settings):
    """(token lists, seconds, sampling seconds, peak RSS bytes) of one ``generate_batch`` call.
    ``sample_device``: where the generators draw, ``model`` (the model's device) or ``cpu``."""
    from lumos_megatron.inference import SamplerSettings, VideoRequest, generate_batch

    device = model.device if sample_device == "model" else torch.device("cpu")
    requests = [VideoRequest(p, tuple(args.grid), 12, 2, torch.Generator(device=device).manual_seed(s),
                             num_latent_frames=args.frames) for p, s in zip(prompts, seeds)]
    sampler = SamplerSettings(steps=args.steps, cfg_scale=15.0, history_mask_ratio=0.7, **settings)
    gc.collect()
    rss = PeakRss()
    rss.start()
    emulate = sample_device == "cpu" and model.device.type == "cpu"
    try:
        with timed_sampling(emulate) as sampling:
            start = time.perf_counter()
            tokens = generate_batch(model, requests, sampler)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
    finally:
        rss.stop()
    return tokens, seconds, sampling[0], rss.peak


def fastest(runs):
    """The fastest of ``runs`` (host noise only adds time), with the largest peak RSS of them all."""
    best = min(runs, key=lambda r: r[1])
    return best[:3] + (max(r[3] for r in runs),)


def differences(a, b):
    """'' when equal, else where the token lists first differ and how many tokens differ."""
    if a == b or len(a) != len(b):
        return "" if a == b else f"lengths {len(a)} vs {len(b)}"
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return f"{len(diff)} of {len(a)} tokens differ, first at index {diff[0]}"


def machine() -> str:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024 / GB
    return (f"{cpu.group(1) if cpu else 'unknown CPU'}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads, {datetime.date.today()}")


# ---------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="8x8 grid, 3 frames, 65,536 + 1,024 ids (quick check)")
    parser.add_argument("--grid", type=int, nargs=2, metavar=("H", "W"), help="latents per frame (default 32 56)")
    parser.add_argument("--frames", type=int, help="latent frames to generate (default 2)")
    parser.add_argument("--steps", type=int, help="decoding steps per frame (default 4)")
    parser.add_argument("--vocab", type=int, help="vocabulary: 65,536 text ids + visual codes (default 69632; "
                                                  "official 129536)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=352)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8], help="batch sizes (1 is always run)")
    parser.add_argument("--max-logits-gb", type=float, default=14.0,
                        help="skip a run whose forward would hold more fp32 logits than this (estimate)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every run (the fastest is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="parent of the temp dir holding the checkpoints")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on cuda, else fp32")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    for name, value in PRESETS["small" if args.small else "default"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    rows_, cols = args.grid
    block, codes = 3 + rows_ * (cols + 1) + 1, rows_ * cols
    batches = sorted(set(args.batches) | {1})
    prompts = make_prompts(max(batches + [4]), args.seed)
    seeds = [args.seed + i for i in range(len(prompts))]
    work = Path(tempfile.mkdtemp(prefix="lumos-generate-bench-", dir=args.workdir))
    begin = time.perf_counter()
    try:
        model = make_model(work, args)
        print(f"# {machine()}")
        print(f"# {args.layers} layers, hidden {args.hidden}, {args.heads}/{args.kv_heads} heads (GQA), ffn "
              f"{args.ffn}, mm_rope, {args.dtype} on {args.device}, vocab {args.vocab} ({args.vocab - 65536} visual codes), grid "
              f"{rows_}x{cols} (block {block}), {args.frames} frames x {args.steps} steps, CFG 15, rho 0.7, "
              f"prompt lengths {[len(p) for p in prompts]}")
        small = argparse.Namespace(**{**vars(args), "grid": (4, 4), "frames": 2, "steps": 2})
        for kv in (True, False):  # warm-up: lazy imports, kernels, allocator
            generate(model, prompts[:2], seeds[:2], small, kv_cache=kv)
        results, checks = [], []
        checks_shown = lambda: [c for c in checks if "repeat" not in c[0] or c[1]]  # noqa: E731

        def record(group, label, n_prompts, tokens_per_video, out, base=None, same="ref"):
            _, seconds, sampling, peak = out
            results.append((group, label, n_prompts, seconds / n_prompts, sampling / seconds,
                            tokens_per_video * n_prompts / seconds, peak, base, same))

        def check(name, a, b):
            checks.append((name, differences(a, b)))
            return "yes" if not checks[-1][1] else "NO"

        per_video = lambda ps, kv: token_forwards(ps, block, args.frames, args.steps, kv) / len(ps)  # noqa: E731
        plan = [(f"batch 1, prompt {i}", [i], {}) for i in range(4)]
        plan += [("recompute", [0], {"kv_cache": False}), ("sequential CFG", [0], {"batch_cfg": False}),
                 ("CPU sampling", [0], {"sample_device": "cpu"})]
        skipped = {}
        for b in batches[1:]:
            estimate = 3 * (2 * b) * codes * args.vocab * 4 / GB
            if estimate > args.max_logits_gb:
                skipped[b] = f"batch {b}: skipped, ~{estimate:.0f} GiB of logits > --max-logits-gb " \
                             f"{args.max_logits_gb:g}"
            else:
                plan.append((f"batch {b}", list(range(b)), {}))
        runs = {name: [] for name, _, _ in plan}
        for r in range(args.repeats):  # every run once per round, so that a slow spell of the host is shared
            for name, index, kw in plan:
                runs[name].append(generate(model, [prompts[i] for i in index], [seeds[i] for i in index], args, **kw))
                print(f"# round {r}, {name}: {runs[name][-1][1]:.1f} s", flush=True)
                check(f"{name} repeat {r} = repeat 0", runs[name][-1][0], runs[name][0][0])
        m = {name: fastest(rs) for name, rs in runs.items()}
        cache, one = m["batch 1, prompt 0"], [m[f"batch 1, prompt {i}"] for i in range(4)]
        same = check("KV cache = recompute (prompt 0)", cache[0][0], m["recompute"][0][0])
        record("kv-cache", "recompute", 1, per_video(prompts[:1], False), m["recompute"])
        record("kv-cache", "KV cache", 1, per_video(prompts[:1], True), cache, m["recompute"][1], same)
        same = check("batched CFG = sequential CFG (prompt 0)", cache[0][0], m["sequential CFG"][0][0])
        record("cfg", "sequential", 1, per_video(prompts[:1], True), m["sequential CFG"])
        record("cfg", "batched", 1, per_video(prompts[:1], True), cache, m["sequential CFG"][1], same)
        # On a GPU host a CUDA generator draws other numbers than a CPU one: tokens differ by design.
        same = check("CPU sampling = model-device sampling (prompt 0)", cache[0][0], m["CPU sampling"][0][0]) \
            if model.device.type == "cpu" else "n/a"
        label = "CPU, copy emulated" if model.device.type == "cpu" else "CPU (logits to host)"
        record("sampling", label, 1, per_video(prompts[:1], True), m["CPU sampling"])
        record("sampling", f"on the model ({model.device.type})", 1, per_video(prompts[:1], True), cache,
               m["CPU sampling"][1], same)
        merged = ([o[0][0] for o in one], sum(o[1] for o in one), sum(o[2] for o in one), max(o[3] for o in one))
        record("batch", "batch 1 (prompts 0-3)", 4, per_video(prompts[:4], True), merged)
        for b in batches[1:]:
            if b in skipped:
                results.append(("batch", skipped[b]) + (None,) * 7)
                continue
            out = m[f"batch {b}"]
            equal = [check(f"batch {b} prompt {i} = batch 1", out[0][i], one[i][0][0]) for i in range(min(b, 4))]
            record("batch", f"batch {b}", b, per_video(prompts[:b], True), out, merged[1] / 4 * b,
                   f"{equal.count('yes')}/{len(equal)}")

        print("| compare  | run                    | videos | s/video | sampling share | token-fwd/s | peak RSS GiB "
              "| speed-up | same tokens |")
        print("|----------|------------------------|--------|---------|----------------|-------------|--------------"
              "|----------|-------------|")
        for group, label, videos, spv, share, tps, peak, base, same in results:
            if spv is None:
                print(f"| {group:8} | {label} |")
                continue
            speed = f"{base / (spv * videos):7.2f}x" if base else "  1.00x"
            print(f"| {group:8} | {label:22} | {videos:6d} | {spv:7.1f} | {share:14.0%} | {tps:11.0f} | "
                  f"{peak / GB:12.2f} | {speed:>8} | {same:>11} |")
        for name, diff in checks_shown():
            print(f"# tokens {name}: {'identical' if not diff else 'DIFFERENT: ' + diff}")
        print(f"# whole run: {time.perf_counter() - begin:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
