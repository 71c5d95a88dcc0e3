#!/usr/bin/env python
"""Checkpoint conversion benchmark: streaming import-hf / export-hf against load-everything baselines.

Usage::

    python tools/bench/convert.py [--small] [--hidden 2048] [--layers 24] [--heads 16] [--kv-heads 16]
                                  [--ffn 5632] [--vocab 129536] [--dtype bf16|fp32] [--shard-size 2e9]
                                  [--workdir DIR] [--keep]

A child writes a synthetic official-format (Chameleon-style) checkpoint, 1B-like by default, one
shard at a time. Four conversions follow, each in its own child so that its peak RSS is its own:

* ``import streaming``: ``conversion.import_hf`` (lazy safetensors reads, chunks written on demand);
* ``import load-all``: ``safetensors.torch.load_file`` of every shard into one dict, every layer
  converted with ``hf_layer_to_megatron`` and stacked, one ``torch.distributed.checkpoint.save``;
* ``export streaming``: ``conversion.export_hf`` of the streaming import;
* ``export load-all``: every global tensor read whole (``TorchDistReader.read``), all converted with
  ``megatron_layer_to_hf``, ``safetensors.torch.save_file`` per shard (then fsync, as ours does).

Seconds cover the conversion call only; GB/s is checkpoint bytes / seconds. Peak RSS is the child's
``ru_maxrss``, which counts the file pages safetensors' mmap touches, so the peak anonymous (heap)
RSS, sampled from /proc/self/status every 10 ms, is reported too. A 1 GB write + fsync gives the
disk's speed. A few output tensors are compared (streaming vs load-all vs the original). The work
directory, a fresh temp dir (inside ``--workdir`` if given), is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

GB = 1e9
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
PRESETS = {"1b": {"hidden": 2048, "layers": 24, "heads": 16, "kv_heads": 16, "ffn": 5632},
           "small": {"hidden": 512, "layers": 4, "heads": 8, "kv_heads": 8, "ffn": 1408}}
RUNS = (("import", "streaming"), ("import", "load-all"), ("export", "streaming"), ("export", "load-all"))


# ---------------------------------------------------------------- synthetic official checkpoint
def official_config(args) -> dict:
    return {"model_type": "chameleon", "architectures": ["ChameleonXLLMXForConditionalGeneration"],
            "hidden_size": args.hidden, "intermediate_size": args.ffn, "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads, "vocab_size": args.vocab,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "mm_rope": True,
            "swin_norm": False, "model_parallel_size": 1, "attention_bias": False, "mlp_bias": False,
            "tie_word_embeddings": False, "max_position_embeddings": 4096, "hidden_act": "silu",
            "torch_dtype": "bfloat16" if args.dtype == "bf16" else "float32"}


def official_tensor_specs(args):
    """(key, shape, is_norm) of every official tensor, in file order."""
    h, d, ffn = args.hidden, args.hidden // args.heads, args.ffn
    specs = [("model.embed_tokens.weight", (args.vocab, h), False)]
    layer = {"self_attn.q_proj.weight": (args.heads * d, h), "self_attn.k_proj.weight": (args.kv_heads * d, h),
             "self_attn.v_proj.weight": (args.kv_heads * d, h), "self_attn.o_proj.weight": (h, args.heads * d),
             **{f"self_attn.{m}.{w}": (1, d) for m in ("q_norm", "k_norm") for w in ("weight", "bias")},
             "mlp.gate_proj.weight": (ffn, h), "mlp.up_proj.weight": (ffn, h), "mlp.down_proj.weight": (h, ffn),
             "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,)}
    for n in range(args.layers):
        specs += [(f"model.layers.{n}.{name}", shape, "norm" in name) for name, shape in layer.items()]
    return specs + [("model.norm.weight", (h,), True), ("lm_head.weight", (args.vocab, h), False)]


def group_into_shards(sized_keys, max_bytes):
    """Consecutive keys in shards of at most ``max_bytes`` (a tensor is never split)."""
    shards, size = [[]], 0
    for key, nbytes in sized_keys:
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards


def write_sharded(directory: Path, shards, make_tensor) -> None:
    """``save_file`` + fsync per shard (tensors from ``make_tensor(key)``, freed after each shard), index."""
    from safetensors.torch import save_file

    names = ([f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
             if len(shards) > 1 else ["model.safetensors"])
    weight_map, total = {}, 0
    for name, keys in zip(names, shards):
        tensors = {key: make_tensor(key) for key in keys}
        save_file(tensors, str(directory / name), metadata={"format": "pt"})
        with open(directory / name, "rb+") as f:
            os.fsync(f.fileno())
        weight_map.update({key: name for key in keys})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_official_checkpoint(args, directory: Path) -> int:
    """The synthetic checkpoint; returns its size in bytes (shards + config + index)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(official_config(args), indent=2) + "\n")
    specs = {key: (shape, is_norm) for key, shape, is_norm in official_tensor_specs(args)}
    dtype = DTYPES[args.dtype]
    sized = [(key, dtype.itemsize * torch.Size(shape).numel()) for key, (shape, _) in specs.items()]
    gen = torch.Generator().manual_seed(0)

    def make_tensor(key):
        shape, is_norm = specs[key]
        values = torch.randn(shape, generator=gen).mul_(0.1 if is_norm else 0.02)
        return (values.add_(1.0) if is_norm and not key.endswith("bias") else values).to(dtype)

    write_sharded(directory, group_into_shards(sized, args.shard_bytes), make_tensor)
    return sum(f.stat().st_size for f in directory.iterdir())


# ---------------------------------------------------------------- the load-everything baselines
def import_load_all(hf_dir: Path, out: Path, dtype: torch.dtype) -> None:
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    from lumos_megatron.conversion import weight_layout as wl
    from lumos_megatron.conversion.hf_config import model_config_from_hf

    s = wl.DecoderShapes.of(model_config_from_hf(json.loads((hf_dir / "config.json").read_text())))
    hf = {}
    for shard in sorted(hf_dir.glob("*.safetensors")):
        hf.update(load_file(str(shard)))
    layers = [wl.hf_layer_to_megatron(hf.__getitem__, n, s) for n in range(s.num_layers)]
    state = {wl.LAYERS + name: torch.stack([layer[name] for layer in layers]).to(dtype) for name in layers[0]}
    del layers
    state.update({wl.EMBEDDING: hf[wl.HF_EMBEDDING].to(dtype), wl.FINAL_NORM: hf[wl.HF_FINAL_NORM].to(dtype),
                  wl.OUTPUT_LAYER: hf[wl.HF_OUTPUT_LAYER].to(dtype)})
    out.mkdir(parents=True)
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(out), thread_count=1, sync_files=True), no_dist=True)


def export_load_all(load: Path, out: Path, shard_bytes: int) -> None:
    from lumos_megatron.checkpoint import run_config
    from lumos_megatron.conversion import weight_layout as wl
    from lumos_megatron.conversion.torch_dist_io import TorchDistReader

    path = run_config.resolve_checkpoint_dir(load, None)
    s, reader = wl.DecoderShapes.of(run_config.read_run_config(path).model), TorchDistReader(path)
    keys = [wl.EMBEDDING, wl.FINAL_NORM, wl.OUTPUT_LAYER] + [wl.LAYERS + name for name in s.megatron_layer_shapes()]
    megatron = {key: reader.read(key) for key in keys}
    hf = {wl.HF_EMBEDDING: megatron[wl.EMBEDDING]}
    for n in range(s.num_layers):
        layer = wl.megatron_layer_to_hf(lambda name, n=n: megatron[wl.LAYERS + name][n], n, s)
        hf.update({key: t.clone() for key, t in layer.items()})  # save_file refuses shared storage
    hf.update({wl.HF_FINAL_NORM: megatron[wl.FINAL_NORM], wl.HF_OUTPUT_LAYER: megatron[wl.OUTPUT_LAYER]})
    out.mkdir(parents=True)
    sized = [(key, t.numel() * t.element_size()) for key, t in hf.items()]
    write_sharded(out, group_into_shards(sized, shard_bytes), hf.__getitem__)


# ---------------------------------------------------------------- one measured step, in a child
def rss_anon_bytes() -> int:
    """Anonymous resident memory of this process (heap, not file pages)."""
    return int(re.search(r"RssAnon:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def sample_anonymous_peak(peak: list, done: threading.Event, interval: float = 0.01) -> None:
    """Keeps ``peak[0]`` at the largest RssAnon seen, sampling every ``interval`` s until ``done``."""
    while not done.wait(interval):
        peak[0] = max(peak[0], rss_anon_bytes())


def run_child(kind: str, src: str, dst: str, args) -> None:
    if kind == "generate":  # a child too: Linux carries the parent's ru_maxrss over fork + exec
        return print("RESULT " + json.dumps({"bytes": write_official_checkpoint(args, Path(dst))}))
    from lumos_megatron.conversion.export_hf import export_hf
    from lumos_megatron.conversion.import_hf import import_hf

    warnings.filterwarnings("ignore", message=".*single process.*")
    convert = {"import streaming": lambda: import_hf(src, dst, dtype=args.dtype, progress=False),
               "import load-all": lambda: import_load_all(Path(src), Path(dst), DTYPES[args.dtype]),
               "export streaming": lambda: export_hf(src, dst, shard_size=str(args.shard_bytes), progress=False),
               "export load-all": lambda: export_load_all(Path(src), Path(dst), args.shard_bytes)}[kind]
    start_rss, start_anon = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss_anon_bytes()
    peak_anon, done = [0], threading.Event()
    sampler = threading.Thread(target=sample_anonymous_peak, args=(peak_anon, done), daemon=True)
    sampler.start()
    start = time.perf_counter()
    convert()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"seconds": seconds, "start_rss": start_rss, "start_anon": start_anon,
                                  "peak_rss": peak_rss, "peak_anon": peak_anon[0]}))


def in_child(kind: str, src: Path, dst: Path, args) -> dict:
    """Runs ``run_child`` in a fresh interpreter; returns what it reports."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, str(src), str(dst), "--dtype", args.dtype,
           "--shard-size", str(args.shard_bytes), "--vocab", str(args.vocab)]
    cmd += [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in PRESETS["1b"]]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


# ---------------------------------------------------------------- checks and report
def compare_outputs(work: Path, last: int) -> list:
    """(name, max |difference|): streaming vs load-all outputs, and the export vs the original."""
    from safetensors import safe_open

    from lumos_megatron.conversion.torch_dist_io import TorchDistReader

    def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b.float()).abs().max()) if a.shape == b.shape else float("inf")

    def official(name: str, key: str) -> torch.Tensor:
        index = work / name / "model.safetensors.index.json"
        file = json.loads(index.read_text())["weight_map"][key] if index.is_file() else "model.safetensors"
        with safe_open(str(work / name / file), framework="pt") as f:
            return f.get_tensor(key)

    ours, base = TorchDistReader(work / "import-streaming" / "iter_0000000"), TorchDistReader(work / "import-load-all")
    checks = []
    for key in ("decoder.layers.self_attention.linear_qkv.weight", "decoder.layers.mlp.linear_fc1.weight"):
        box = ((last, 0, 0), (1,) + ours.shape(key)[1:])
        checks.append((f"import {key}[{last}]", max_abs_diff(ours.read(key, *box), base.read(key, *box))))
    checks.append(("import output_layer.weight", max_abs_diff(*(r.read("output_layer.weight") for r in (ours, base)))))
    for key in (f"model.layers.{last}.self_attn.k_proj.weight", f"model.layers.{last}.mlp.up_proj.weight",
                "lm_head.weight"):
        for other in ("export-load-all", "hf"):
            checks.append((f"export {key}, streaming vs {'load-all' if other != 'hf' else 'original'}",
                           max_abs_diff(official("export-streaming", key), official(other, key))))
    return checks


def disk_write_gbps(directory: Path, nbytes: int = 2**30) -> float:
    """GB/s of a sequential write of ``nbytes`` + fsync (what both conversions end with)."""
    block, path = bytes(64 * 2**20), directory / "disk-probe.bin"
    start = time.perf_counter()
    with open(path, "wb") as f:
        f.writelines(block for _ in range(nbytes // len(block)))
        os.fsync(f.fileno())
    path.unlink()
    return nbytes / (time.perf_counter() - start) / GB


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in PRESETS["1b"]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            help=f"default {PRESETS['1b'][name]} (--small: {PRESETS['small'][name]})")
    parser.add_argument("--vocab", type=int, default=129536)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16",
                        help="dtype of the synthetic weights and of the imported checkpoint")
    parser.add_argument("--shard-size", dest="shard_bytes", type=float, default=2e9,
                        help="bytes per safetensors shard, written and exported")
    parser.add_argument("--small", action="store_true", help="the small preset, for a quick run")
    parser.add_argument("--workdir", help="parent of the fresh work directory (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.shard_bytes = int(args.shard_bytes)
    for name, value in PRESETS["small" if args.small else "1b"].items():
        if getattr(args, name) is None:  # explicit options win over the preset
            setattr(args, name, value)
    if args.child:
        return run_child(*args.child, args)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lumos-convert-bench-", dir=args.workdir))
    try:
        start = time.perf_counter()
        ckpt_bytes = in_child("generate", work, work / "hf", args)["bytes"]
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        print(f"# {cpu.group(1) if cpu else platform.machine()}, {os.cpu_count()} cores, {mem_gib:.1f} GiB RAM, "
              f"torch {torch.__version__}, {datetime.date.today()}; disk write + fsync "
              f"{disk_write_gbps(work):.2f} GB/s")
        print(f"# hidden {args.hidden}, {args.layers} layers, {args.heads}/{args.kv_heads} heads, ffn {args.ffn}, "
              f"vocab {args.vocab}, {args.dtype}: official checkpoint {ckpt_bytes / GB:.2f} GB in "
              f"{len(list((work / 'hf').glob('*.safetensors')))} shard(s), written in "
              f"{time.perf_counter() - start:.0f} s to {work}")
        sources = {"import": work / "hf", "export": work / "import-streaming"}
        results = {(step, method): in_child(f"{step} {method}", sources[step], work / f"{step}-{method}", args)
                   for step, method in RUNS}
        print("| step   | method    | seconds |  GB/s | peak RSS GB | x ckpt | peak anon GB | x ckpt "
              "| time vs load-all | RSS vs load-all | anon vs load-all |")
        print("|--------|-----------|---------|-------|-------------|--------|--------------|--------"
              "|------------------|-----------------|------------------|")
        for (step, method), r in results.items():
            base = results[step, "load-all"]
            print(f"| {step:6} | {method:9} | {r['seconds']:7.1f} | {ckpt_bytes / r['seconds'] / GB:5.2f} | "
                  f"{r['peak_rss'] / GB:11.2f} | {r['peak_rss'] / ckpt_bytes:6.2f} | {r['peak_anon'] / GB:12.2f} | "
                  f"{r['peak_anon'] / ckpt_bytes:6.2f} | {r['seconds'] / base['seconds']:15.2f}x | "
                  f"{r['peak_rss'] / base['peak_rss']:14.2f}x | {r['peak_anon'] / base['peak_anon']:15.2f}x |")
        first = results[RUNS[0]]
        print(f"# before converting, each child's peak RSS is {first['start_rss'] / GB:.2f} GB, its anonymous "
              f"RSS {first['start_anon'] / GB:.2f} GB (interpreter and imports)")
        for name, diff in compare_outputs(work, args.layers - 1):
            print(f"# check {name}: max |diff| {diff:g}")
        print(f"# whole run: {time.perf_counter() - start:.0f} s")
    finally:
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
