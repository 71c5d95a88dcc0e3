#!/usr/bin/env python
"""Checkpoint conversion benchmark: streaming import-hf / export-hf against load-everything baselines.

Usage::

    python tools/bench/convert.py [--small] [--hidden 2048] [--layers 24] [--heads 16] [--kv-heads 16]
                                  [--ffn 5632] [--vocab 129536] [--dtype bf16|fp32] [--shard-size 2GB]
                                  [--workdir DIR] [--keep]

Writes a synthetic official-format (Chameleon-style) checkpoint, by default of the 1B-like shape
(one shard at a time, so the generator never holds the model), then runs four conversions, each in
its own subprocess so that its peak RSS is its own:

* ``import streaming``: ``conversion.import_hf`` (lazy safetensors reads, chunks written on demand);
* ``import load-all``: ``safetensors.torch.load_file`` of every shard, every layer converted with
  ``hf_layer_to_megatron`` and stacked, one ``torch.distributed.checkpoint.save`` of the whole dict;
* ``export streaming``: ``conversion.export_hf`` of the streaming import;
* ``export load-all``: every global tensor read whole (``TorchDistReader.read``), all converted with
  ``megatron_layer_to_hf``, ``safetensors.torch.save_file`` per shard (then fsync, as ours does).

Seconds are the conversion call alone (imports excluded); GB/s is checkpoint bytes / seconds. Peak
RSS is the child's ``ru_maxrss``: it includes file pages mapped by safetensors' mmap, so the
anonymous (heap) peak, sampled from /proc/self/status every 10 ms, is reported too. Afterwards a
few tensors are compared between the streaming and baseline outputs and the original. The work
directory (a temp dir outside the repository by default) is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
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
PRESETS = {"1b": dict(hidden=2048, layers=24, heads=16, kv_heads=16, ffn=5632),
           "small": dict(hidden=512, layers=4, heads=8, kv_heads=8, ffn=1408)}
RUNS = (("import", "streaming"), ("import", "load-all"), ("export", "streaming"), ("export", "load-all"))


# ---------------------------------------------------------------- synthetic official checkpoint
def official_config(args) -> dict:
    return dict(model_type="chameleon", architectures=["ChameleonXLLMXForConditionalGeneration"],
                hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=args.layers,
                num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, mm_rope=True, swin_norm=False,
                model_parallel_size=1, attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                max_position_embeddings=4096, hidden_act="silu",
                torch_dtype="bfloat16" if args.dtype == "bf16" else "float32")


def official_tensor_specs(args):
    """(key, shape, is_norm) of every official tensor, in file order."""
    h, d = args.hidden, args.hidden // args.heads
    specs = [("model.embed_tokens.weight", (args.vocab, h), False)]
    for n in range(args.layers):
        p = f"model.layers.{n}."
        specs += [(p + "self_attn.q_proj.weight", (args.heads * d, h), False),
                  (p + "self_attn.k_proj.weight", (args.kv_heads * d, h), False),
                  (p + "self_attn.v_proj.weight", (args.kv_heads * d, h), False),
                  (p + "self_attn.o_proj.weight", (h, args.heads * d), False)]
        specs += [(p + f"self_attn.{m}.{w}", (1, d), True) for m in ("q_norm", "k_norm") for w in ("weight", "bias")]
        specs += [(p + "mlp.gate_proj.weight", (args.ffn, h), False), (p + "mlp.up_proj.weight", (args.ffn, h), False),
                  (p + "mlp.down_proj.weight", (h, args.ffn), False), (p + "input_layernorm.weight", (h,), True),
                  (p + "post_attention_layernorm.weight", (h,), True)]
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
    """``save_file`` per shard (tensors made by ``make_tensor(key)``, freed after each shard) + index."""
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
    dtype, element = DTYPES[args.dtype], torch.empty((), dtype=DTYPES[args.dtype]).element_size()
    sized = [(k, element * torch.Size(shape).numel()) for k, (shape, _) in specs.items()]
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

    from lumos_megatron.conversion.hf_config import model_config_from_hf
    from lumos_megatron.conversion.weight_layout import (EMBEDDING, FINAL_NORM, HF_EMBEDDING, HF_FINAL_NORM,
                                                         HF_OUTPUT_LAYER, LAYERS, OUTPUT_LAYER, DecoderShapes,
                                                         hf_layer_to_megatron)

    s = DecoderShapes.of(model_config_from_hf(json.loads((hf_dir / "config.json").read_text())))
    hf = {}
    for shard in sorted(hf_dir.glob("*.safetensors")):
        hf.update(load_file(str(shard)))
    layers = [hf_layer_to_megatron(hf.__getitem__, n, s) for n in range(s.num_layers)]
    state = {LAYERS + name: torch.stack([layer[name] for layer in layers]).to(dtype) for name in layers[0]}
    del layers
    state.update({EMBEDDING: hf[HF_EMBEDDING].to(dtype), FINAL_NORM: hf[HF_FINAL_NORM].to(dtype),
                  OUTPUT_LAYER: hf[HF_OUTPUT_LAYER].to(dtype)})
    out.mkdir(parents=True)
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(out), thread_count=1, sync_files=True), no_dist=True)


def export_load_all(load: Path, out: Path, shard_bytes: int) -> None:
    from lumos_megatron.checkpoint.run_config import read_run_config, resolve_checkpoint_dir
    from lumos_megatron.conversion.torch_dist_io import TorchDistReader
    from lumos_megatron.conversion.weight_layout import (EMBEDDING, FINAL_NORM, HF_EMBEDDING, HF_FINAL_NORM,
                                                         HF_OUTPUT_LAYER, LAYERS, OUTPUT_LAYER, DecoderShapes,
                                                         megatron_layer_to_hf)

    path = resolve_checkpoint_dir(load, None)
    s = DecoderShapes.of(read_run_config(path).model)
    reader = TorchDistReader(path)
    keys = [EMBEDDING, FINAL_NORM, OUTPUT_LAYER] + [LAYERS + name for name in s.megatron_layer_shapes()]
    megatron = {key: reader.read(key) for key in keys}
    hf = {HF_EMBEDDING: megatron[EMBEDDING]}
    for n in range(s.num_layers):
        layer = megatron_layer_to_hf(lambda name: megatron[LAYERS + name][n], n, s)
        hf.update({key: t.clone() for key, t in layer.items()})  # save_file refuses shared storage
    hf.update({HF_FINAL_NORM: megatron[FINAL_NORM], HF_OUTPUT_LAYER: megatron[OUTPUT_LAYER]})
    out.mkdir(parents=True)
    sized = [(key, t.numel() * t.element_size()) for key, t in hf.items()]
    write_sharded(out, group_into_shards(sized, shard_bytes), hf.__getitem__)


# ---------------------------------------------------------------- one measured conversion (child)
def rss_anon_bytes() -> int:
    """Anonymous resident memory of this process (heap, not file pages)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def sample_anonymous_peak(peak: list, done: threading.Event, interval: float = 0.01) -> None:
    """Keeps ``peak[0]`` at the largest RssAnon seen, sampling every ``interval`` s until ``done``."""
    while not done.is_set():
        peak[0] = max(peak[0], rss_anon_bytes())
        done.wait(interval)


def run_child(kind: str, src: str, dst: str, args) -> None:
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
    print("RESULT " + json.dumps(dict(seconds=seconds, start_rss=start_rss, start_anon=start_anon,
                                      peak_rss=peak_rss, peak_anon=peak_anon[0])))


def measure(kind: str, src: Path, dst: Path, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, str(src), str(dst),
           "--dtype", args.dtype, "--shard-size", str(args.shard_bytes)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


# ---------------------------------------------------------------- checks and report
def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.shape == b.shape else float("inf")


def compare_outputs(work: Path, args) -> list:
    """Max |difference| of a few tensors: streaming vs load-all, and export vs the original."""
    from safetensors import safe_open

    from lumos_megatron.conversion.torch_dist_io import TorchDistReader

    def hf_tensor(directory: Path, key: str) -> torch.Tensor:
        index = directory / "model.safetensors.index.json"
        name = json.loads(index.read_text())["weight_map"][key] if index.is_file() else "model.safetensors"
        with safe_open(str(directory / name), framework="pt") as f:
            return f.get_tensor(key)

    stream = TorchDistReader(work / "import-streaming" / "iter_0000000")
    base, last, checks = TorchDistReader(work / "import-load-all"), args.layers - 1, []
    for key in ("decoder.layers.self_attention.linear_qkv.weight", "decoder.layers.mlp.linear_fc1.weight",
                "output_layer.weight"):
        shape = stream.shape(key)
        box = ((last,) + (0,) * (len(shape) - 1), (1,) + shape[1:]) if key.startswith("decoder") else ()
        checks.append((f"import {key}" + (f"[{last}]" if box else ""),
                       max_abs_diff(stream.read(key, *box), base.read(key, *box))))
    for key in (f"model.layers.{last}.self_attn.k_proj.weight", "lm_head.weight"):
        exported = hf_tensor(work / "export-streaming", key)
        checks.append((f"export {key}, streaming vs load-all",
                       max_abs_diff(exported, hf_tensor(work / "export-load-all", key))))
        checks.append((f"export {key}, streaming vs original", max_abs_diff(exported, hf_tensor(work / "hf", key))))
    return checks


TABLE_HEADER = ("| step   | method    | seconds |  GB/s | peak RSS GB | x ckpt | peak anon GB | x ckpt "
                "| start RSS/anon GB | time vs load-all | RSS vs load-all | anon vs load-all |\n"
                "|--------|-----------|---------|-------|-------------|--------|--------------|--------"
                "|-------------------|------------------|-----------------|------------------|")


def table_row(step: str, method: str, r: dict, base: dict, ckpt_bytes: int) -> str:
    return (f"| {step:6} | {method:9} | {r['seconds']:7.1f} | {ckpt_bytes / r['seconds'] / GB:5.2f} | "
            f"{r['peak_rss'] / GB:11.2f} | {r['peak_rss'] / ckpt_bytes:6.2f} | {r['peak_anon'] / GB:12.2f} | "
            f"{r['peak_anon'] / ckpt_bytes:6.2f} | {r['start_rss'] / GB:12.2f}/{r['start_anon'] / GB:.2f} | "
            f"{r['seconds'] / base['seconds']:15.2f}x | {r['peak_rss'] / base['peak_rss']:14.2f}x | "
            f"{r['peak_anon'] / base['peak_anon']:15.2f}x |")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in PRESETS["1b"]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            help=f"default {PRESETS['1b'][name]} (--small: {PRESETS['small'][name]})")
    parser.add_argument("--vocab", type=int, default=129536)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16",
                        help="dtype of the synthetic weights and of the imported checkpoint")
    parser.add_argument("--shard-size", dest="shard_bytes", type=float, default=2e9,
                        help="bytes per safetensors shard (written and exported)")
    parser.add_argument("--small", action="store_true", help="the small preset, for a quick run")
    parser.add_argument("--workdir", help="parent of the fresh work directory (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.shard_bytes = int(args.shard_bytes)
    if args.child:
        return run_child(*args.child, args)
    for name, value in PRESETS["small" if args.small else "1b"].items():
        if getattr(args, name) is None:  # explicit options win over the preset
            setattr(args, name, value)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lumos-convert-bench-", dir=args.workdir))  # removed at the end
    try:
        start = time.perf_counter()
        ckpt_bytes = write_official_checkpoint(args, work / "hf")
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        print(f"# {cpu_name()}, {os.cpu_count()} cores, {mem_gb:.1f} GiB RAM, torch {torch.__version__}, "
              f"{datetime.date.today()}")
        print(f"# hidden {args.hidden}, {args.layers} layers, {args.heads}/{args.kv_heads} heads, ffn {args.ffn}, "
              f"vocab {args.vocab}, {args.dtype}; official checkpoint {ckpt_bytes / GB:.2f} GB in "
              f"{len(list((work / 'hf').glob('*.safetensors')))} shards (written in "
              f"{time.perf_counter() - start:.0f} s), workdir {work}")
        sources = {"import": work / "hf", "export": work / "import-streaming"}
        results = {}
        for step, method in RUNS:
            results[step, method] = measure(f"{step} {method}", sources[step], work / f"{step}-{method}", args)
        print(TABLE_HEADER)
        for step, method in RUNS:
            print(table_row(step, method, results[step, method], results[step, "load-all"], ckpt_bytes))
        for name, diff in compare_outputs(work, args):
            print(f"# check {name}: max |diff| {diff:g}")
        print(f"# whole run: {time.perf_counter() - start:.0f} s")
    finally:
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
