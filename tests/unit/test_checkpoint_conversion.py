"""import-hf / export-hf / inspect on tiny official-format checkpoints (single process).

* import → export is bit-exact in fp32 (single-file and sharded sources), and importing the
  export gives back the same torch_dist tensors;
* the head-shared QK-norm: equal ``[model_parallel_size, d]`` rows convert, distinct rows are refused;
* growing a 65,536-id vocabulary: old rows identical, new rows N(0, 1) (embedding) and
  U(±1/sqrt(hidden)) (head), seeded, zeroed head rows zero;
* every bad input exits 2 with one stderr line naming the key or file, and ``--out`` stays empty;
* inspect reports the counts, layout and provenance.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from conftest import REPO
from official_format import random_official_state_dict, tiny_official_config, write_official_checkpoint
from lumos_megatron.conversion.cli import convert_main, inspect_main
from lumos_megatron.conversion.torch_dist_io import TorchDistReader

CONVERT = REPO / "tools" / "checkpoint" / "convert.py"
INSPECT = REPO / "tools" / "checkpoint" / "inspect.py"


def _official(tmp_path, name="hf", shards=1, seed=0, **overrides):
    config = tiny_official_config(**overrides)
    state = random_official_state_dict(config, seed=seed)
    directory = write_official_checkpoint(tmp_path / name, config, state, num_shards=shards)
    return directory, config, state


def _read_safetensors(directory):
    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    out = {}
    for name in files:
        with safe_open(str(directory / name), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def _convert(*argv):
    return convert_main([*argv, "--no-progress"] if argv[0] in ("import-hf", "export-hf") else list(argv))


def _decoder_tensors(state):
    return {k: v for k, v in state.items() if not k.startswith("model.vqmodel.")}


@pytest.mark.parametrize("shards", [1, 3])
def test_import_export_round_trip_is_bit_exact(tmp_path, shards):
    hf, config, state = _official(tmp_path, shards=shards)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "ckpt")) == 0
    assert _convert("export-hf", "--load", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back"),
                    "--shard-size", "3MB") == 0
    back = _read_safetensors(tmp_path / "back")
    expected = _decoder_tensors(state)
    assert set(back) == set(expected)
    for key, tensor in expected.items():
        assert back[key].dtype == torch.float32 and torch.equal(back[key], tensor), key
    exported = json.loads((tmp_path / "back" / "config.json").read_text())
    for field in ("model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "vocab_size", "rope_theta", "rms_norm_eps",
                  "mm_rope", "model_parallel_size", "eos_token_id"):
        assert exported[field] == config[field], field
    assert len(list((tmp_path / "back").glob("*.safetensors"))) > 1  # 3MB shards

    # Importing the export gives the same torch_dist tensors.
    assert _convert("import-hf", "--hf-dir", str(tmp_path / "back"), "--out", str(tmp_path / "again")) == 0
    first = TorchDistReader(tmp_path / "ckpt" / "iter_0000000")
    second = TorchDistReader(tmp_path / "again" / "iter_0000000")
    assert set(first.tensors()) == set(second.tensors())
    for key in first.tensors():
        assert torch.equal(first.read(key), second.read(key)), key


def test_megatron_layout_of_imported_tensors(tmp_path):
    """QKV is fused per query group (GQA) and fc1 is [gate; up], as megatron's TP split expects."""
    hf, config, state = _official(tmp_path)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "ckpt")) == 0
    reader = TorchDistReader(tmp_path / "ckpt" / "iter_0000000")
    d = config["hidden_size"] // config["num_attention_heads"]
    qkv = reader.read("decoder.layers.self_attention.linear_qkv.weight")[1]
    q = state["model.layers.1.self_attn.q_proj.weight"]
    k = state["model.layers.1.self_attn.k_proj.weight"]
    v = state["model.layers.1.self_attn.v_proj.weight"]
    # group 1 = query heads 2, 3, then key head 1, then value head 1
    group1 = qkv[4 * d: 8 * d]
    assert torch.equal(group1[: 2 * d], q[2 * d: 4 * d])
    assert torch.equal(group1[2 * d: 3 * d], k[d: 2 * d])
    assert torch.equal(group1[3 * d:], v[d: 2 * d])
    fc1 = reader.read("decoder.layers.mlp.linear_fc1.weight")[0]
    assert torch.equal(fc1, torch.cat([state["model.layers.0.mlp.gate_proj.weight"],
                                       state["model.layers.0.mlp.up_proj.weight"]]))
    assert torch.equal(reader.read("decoder.layers.self_attention.q_layernorm.bias")[0],
                       state["model.layers.0.self_attn.q_norm.bias"][0])


def test_bf16_import_and_export(tmp_path):
    hf, _, state = _official(tmp_path)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "ckpt"), "--dtype", "bf16") == 0
    reader = TorchDistReader(tmp_path / "ckpt" / "iter_0000000")
    assert reader.dtype("embedding.word_embeddings.weight") == torch.bfloat16
    assert "precision: bf16" in (tmp_path / "ckpt" / "iter_0000000" / "run_config.yaml").read_text()
    assert _convert("export-hf", "--load", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back")) == 0
    back = _read_safetensors(tmp_path / "back")
    assert back["lm_head.weight"].dtype == torch.bfloat16
    assert torch.equal(back["lm_head.weight"], state["lm_head.weight"].to(torch.bfloat16))
    assert json.loads((tmp_path / "back" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_qk_norm_rows_of_model_parallel_checkpoints(tmp_path, capsys):
    hf, _, state = _official(tmp_path, model_parallel_size=2)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "equal")) == 0
    reader = TorchDistReader(tmp_path / "equal" / "iter_0000000")
    assert torch.equal(reader.read("decoder.layers.self_attention.k_layernorm.weight")[1],
                       state["model.layers.1.self_attn.k_norm.weight"][0])
    config = tiny_official_config(model_parallel_size=2)
    distinct = random_official_state_dict(config, distinct_qk_norm_rows=True)
    write_official_checkpoint(tmp_path / "distinct", config, distinct)
    capsys.readouterr()
    assert _convert("import-hf", "--hf-dir", str(tmp_path / "distinct"), "--out", str(tmp_path / "no")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.layers.0.self_attn.q_norm.weight" in err[0] and "differ" in err[0]
    assert not (tmp_path / "no").exists()


def _ks_statistic(samples, cdf):
    x, _ = torch.sort(samples.double())
    n = x.numel()
    f = cdf(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - f
    lower = f - torch.arange(0, n, dtype=torch.float64) / n
    return max(upper.max().item(), lower.max().item())


def test_growing_a_chameleon_vocabulary(tmp_path):
    hf, config, state = _official(tmp_path, vocab_size=65536)
    out = tmp_path / "grown"
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(out), "--target-vocab-size", "129536",
                    "--seed", "7", "--zero-head-rows", "4:8196") == 0
    reader = TorchDistReader(out / "iter_0000000")
    emb = reader.read("embedding.word_embeddings.weight")
    head = reader.read("output_layer.weight")
    assert emb.shape == head.shape == (129536, config["hidden_size"])
    assert torch.equal(emb[:65536], state["model.embed_tokens.weight"])
    assert torch.equal(head[8196:65536], state["lm_head.weight"][8196:])
    assert torch.equal(head[:4], state["lm_head.weight"][:4])
    assert torch.count_nonzero(head[4:8196]) == 0

    # Kolmogorov-Smirnov against N(0, 1) and U(-b, b) on 200k draws: D << 1.95/sqrt(n) (alpha 0.001).
    gen = torch.Generator().manual_seed(0)
    new_emb = emb[65536:].flatten()
    new_head = head[65536:].flatten()
    pick = torch.randperm(new_emb.numel(), generator=gen)[:200_000]
    bound = 1.0 / math.sqrt(config["hidden_size"])
    critical = 1.95 / math.sqrt(pick.numel())
    assert _ks_statistic(new_emb[pick], torch.special.ndtr) < critical
    assert _ks_statistic(new_head[pick], lambda x: ((x + bound) / (2 * bound)).clamp(0, 1)) < critical
    assert new_head.abs().max() <= bound
    assert abs(new_emb.std().item() - 1.0) < 0.01

    # Seeded: the same seed gives the same rows, another seed other rows.
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "same"),
                    "--target-vocab-size", "129536", "--seed", "7") == 0
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "other"),
                    "--target-vocab-size", "129536", "--seed", "8") == 0
    same = TorchDistReader(tmp_path / "same" / "iter_0000000").read("embedding.word_embeddings.weight")
    other = TorchDistReader(tmp_path / "other" / "iter_0000000").read("embedding.word_embeddings.weight")
    assert torch.equal(same, emb) and not torch.equal(other[65536:], emb[65536:])


def _mutated(tmp_path, mutate, **overrides):
    config = tiny_official_config(**overrides)
    state = random_official_state_dict(config)
    mutate(config, state)
    return write_official_checkpoint(tmp_path / "bad", config, state)


BAD_IMPORTS = {
    "missing key": (lambda c, s: s.pop("model.layers.1.mlp.up_proj.weight"), {}, "model.layers.1.mlp.up_proj.weight"),
    "unexpected key": (lambda c, s: s.__setitem__("model.layers.0.self_attn.rotary.inv_freq", torch.ones(4)), {},
                       "model.layers.0.self_attn.rotary.inv_freq"),
    "shape mismatch": (lambda c, s: s.__setitem__("model.layers.0.mlp.down_proj.weight", torch.zeros(128, 200)),
                       {}, "model.layers.0.mlp.down_proj.weight: shape [128, 200] in the checkpoint, [128, 256]"),
    "swin norm": (lambda c, s: None, {"swin_norm": True}, "swin_norm"),
    "model type": (lambda c, s: None, {"model_type": "llama"}, "model_type 'llama'"),
    "tied embeddings": (lambda c, s: None, {"tie_word_embeddings": True}, "tie_word_embeddings"),
    "vocabulary": (lambda c, s: None, {"vocab_size": 65536}, "--target-vocab-size"),
    "null rope_theta": (lambda c, s: None, {"rope_theta": None}, "'rope_theta' must be a number > 0, found null"),
    "string rms_norm_eps": (lambda c, s: None, {"rms_norm_eps": "1e-5"},
                            "'rms_norm_eps' must be a number > 0, found \"1e-5\""),
}


@pytest.mark.parametrize("case", sorted(BAD_IMPORTS))
def test_bad_imports_exit_2_with_one_line(tmp_path, capsys, case):
    mutate, overrides, expected = BAD_IMPORTS[case]
    hf = _mutated(tmp_path, mutate, **overrides)
    out = tmp_path / "out"
    capsys.readouterr()
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(out)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("lumos-convert import-hf: error:") and expected in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


BAD_CONFIG_FIELDS = [  # (field, value in config.json, what the one line says)
    *[(key, value, f"field {key!r} must be a number > 0, found {shown}")
      for key in ("rope_theta", "rms_norm_eps", "initializer_range")
      for value, shown in ((None, "null"), ("0.02", '"0.02"'), (True, "true"), (-1.0, "-1.0"), (0, "0"))],
    ("hidden_size", None, "field 'hidden_size' must be a positive integer, found null"),
    ("hidden_size", "128", 'field \'hidden_size\' must be a positive integer, found "128"'),
    ("num_hidden_layers", True, "field 'num_hidden_layers' must be a positive integer, found true"),
    ("intermediate_size", -256, "field 'intermediate_size' must be a positive integer, found -256"),
    ("vocab_size", 65600.0, "field 'vocab_size' must be a positive integer, found 65600.0"),
    ("num_key_value_heads", -2, "field 'num_key_value_heads' must be a positive integer, found -2"),
    ("num_key_value_heads", 0, "field 'num_key_value_heads' must be a positive integer, found 0"),
    ("max_position_embeddings", None, "field 'max_position_embeddings' must be a positive integer, found null"),
    ("max_position_embeddings", "4096", "field 'max_position_embeddings' must be a positive integer"),
    ("head_dim", "32", "field 'head_dim' must be a positive integer, found \"32\""),
    ("model_parallel_size", None, "field 'model_parallel_size' must be a positive integer, found null"),
    ("attention_dropout", None, "field 'attention_dropout' must be a number >= 0 and < 1, found null"),
    ("attention_dropout", 1.5, "field 'attention_dropout' must be a number >= 0 and < 1, found 1.5"),
    ("mm_rope", "true", "field 'mm_rope' must be true or false, found \"true\""),
    ("mm_rope", None, "field 'mm_rope' must be true or false, found null"),
    ("swin_norm", 0, "field 'swin_norm' must be true or false, found 0"),
    ("hidden_act", None, 'hidden_act=null (an MLP activation other than SiLU (SwiGLU)) is not supported'),
]


@pytest.mark.parametrize("key, value, expected", BAD_CONFIG_FIELDS,
                         ids=[f"{k}={v!r}" for k, v, _ in BAD_CONFIG_FIELDS])
def test_null_or_wrongly_typed_config_fields_are_named(key, value, expected):
    from lumos_megatron.conversion.errors import ConversionError
    from lumos_megatron.conversion.hf_config import model_config_from_hf

    with pytest.raises(ConversionError) as err:
        model_config_from_hf(tiny_official_config(**{key: value}), source="hf/config.json")
    message = str(err.value)
    assert message.startswith("hf/config.json: ") and expected in message and "\n" not in message


def test_config_fields_hugging_face_allows_as_null_or_absent():
    from lumos_megatron.conversion.hf_config import model_config_from_hf

    config = tiny_official_config(num_key_value_heads=None, head_dim=None, swin_norm=None, rope_scaling=None)
    for key in ("rope_theta", "rms_norm_eps", "initializer_range", "max_position_embeddings", "attention_dropout",
                "model_parallel_size", "mm_rope"):
        config.pop(key)  # absent: the documented default
    model = model_config_from_hf(config)
    assert model.num_query_groups == 4 and model.rope_variant == "1d"
    assert (model.rotary_base, model.norm_epsilon, model.init_method_std) == (10000.0, 1e-5, 0.02)
    assert model_config_from_hf(tiny_official_config(rope_theta=500000)).rotary_base == 500000.0  # an int is a number


def test_null_config_field_through_the_command_line(tmp_path):
    hf = _mutated(tmp_path, lambda c, s: None, initializer_range=None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(CONVERT), "import-hf", "--hf-dir", str(hf), "--out",
                           str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=300,
                          env=env)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0] == (f"lumos-convert import-hf: error: {hf / 'config.json'}: field 'initializer_range' must be a "
                        "number > 0, found null")
    assert not (tmp_path / "out").exists()


def test_missing_shard_and_non_empty_out(tmp_path, capsys):
    hf, _, _ = _official(tmp_path, shards=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(out)) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(out), "--force") == 0
    assert not (out / "keep.txt").exists() and (out / "iter_0000000").is_dir()
    (hf / "model-00002-of-00002.safetensors").unlink()
    capsys.readouterr()
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model-00002-of-00002.safetensors" in err[0]


def test_incomplete_torch_dist_checkpoint(tmp_path, capsys):
    hf, _, _ = _official(tmp_path)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "ckpt")) == 0
    shard = max((tmp_path / "ckpt" / "iter_0000000").glob("*.distcp"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[:100])
    capsys.readouterr()
    assert _convert("export-hf", "--load", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and shard.name in err[0]
    (tmp_path / "ckpt" / "iter_0000000" / ".metadata").unlink()
    assert _convert("export-hf", "--load", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back")) == 2
    assert ".metadata" in capsys.readouterr().err
    assert not (tmp_path / "back").exists()


def test_inspect_imported_checkpoint(tmp_path, capsys):
    hf, config, _ = _official(tmp_path)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "ckpt")) == 0
    capsys.readouterr()
    assert inspect_main([str(tmp_path / "ckpt"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    h, v, f, layers = config["hidden_size"], config["vocab_size"], config["intermediate_size"], 2
    d, kv = h // config["num_attention_heads"], config["num_key_value_heads"]
    attention = layers * (h * (h + 2 * kv * d) + h * h + 4 * d)
    mlp = layers * 3 * h * f
    norms = layers * 2 * h + h
    p = summary["parameters"]
    assert p["embedding"] == p["output_layer"] == v * h
    assert p["by_group"]["attention"] == attention and p["by_group"]["mlp"] == mlp
    assert p["non_embedding"] == attention + mlp + norms and p["total"] == 2 * v * h + attention + mlp + norms
    assert summary["iteration"] == 0 and summary["weights_only"] and summary["optimizer_state"] is None
    assert summary["saved_parallel_layout"]["tp"] == 1 and summary["dtypes"] == {"float32": p["total"]}
    assert summary["size_on_disk_bytes"] > 4 * p["total"]


def test_inspect_names_a_missing_common_pt_and_says_when_there_is_no_manifest(tmp_path, capsys):
    hf, _, _ = _official(tmp_path)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "ckpt")) == 0
    capsys.readouterr()
    assert inspect_main([str(tmp_path / "ckpt"), "--verify"]) == 0
    assert "no manifest" in capsys.readouterr().out  # imported: nothing to verify against
    common = tmp_path / "ckpt" / "iter_0000000" / "common.pt"
    common.unlink()
    assert inspect_main([str(tmp_path / "ckpt")]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert line == (f"lumos-inspect: error: {common} is missing: the checkpoint is incomplete; pick another "
                    "iteration with --iteration N")


def test_command_line_contract(tmp_path):
    """The documented commands, as separate processes (the tools directory must not shadow the
    standard library's ``inspect``)."""
    hf, _, _ = _official(tmp_path)
    run = lambda *a: subprocess.run([sys.executable, *map(str, a)], capture_output=True, text=True, timeout=300)
    imported = run(CONVERT, "import-hf", "--hf-dir", hf, "--out", tmp_path / "ckpt")
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert "import-hf" in imported.stderr  # tqdm progress
    exported = run(CONVERT, "export-hf", "--load", tmp_path / "ckpt", "--out", tmp_path / "back")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (tmp_path / "back" / "model.safetensors").is_file()
    shown = run(INSPECT, tmp_path / "ckpt")
    assert shown.returncode == 0 and "non-embedding" in shown.stdout, shown.stderr[-2000:]
    bad = run(CONVERT, "export-hf", "--load", tmp_path / "nowhere", "--out", tmp_path / "x")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "nowhere" in bad.stderr


def test_load_without_config_takes_the_checkpoint_model(tmp_path):
    from lumos_megatron.config import parse_cli

    hf, config, _ = _official(tmp_path, num_hidden_layers=3, mm_rope=False)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "ckpt")) == 0
    cfg = parse_cli(["--load", str(tmp_path / "ckpt"), "model.max_position_embeddings=2048"])
    assert (cfg.model.num_layers, cfg.model.num_query_groups, cfg.model.rope_variant) == (3, 2, "1d")
    assert cfg.model.max_position_embeddings == 2048  # overrides still apply on top
    assert parse_cli(["--load", str(tmp_path / "nothing")]).model.num_layers == 2  # nothing to read: defaults


def test_a_moved_imported_checkpoint_still_loads_through_its_run_config(tmp_path):
    import shutil

    from lumos_megatron.config import parse_cli
    from pathlib import Path

    from lumos_megatron.config.stored import read_run_config

    hf, _, _ = _official(tmp_path)
    assert _convert("import-hf", "--hf-dir", str(hf), "--out", str(tmp_path / "ckpt")) == 0
    assert "${recipe_dir}/.." in (tmp_path / "ckpt" / "iter_0000000" / "run_config.yaml").read_text()
    moved = tmp_path / "elsewhere" / "ckpt"
    shutil.move(str(tmp_path / "ckpt"), moved)
    assert read_run_config(moved / "iter_0000000").checkpoint.load == str(moved / "iter_0000000" / "..")
    cfg = parse_cli(["--config", str(moved / "iter_0000000" / "run_config.yaml")])
    assert Path(cfg.checkpoint.load).resolve() == moved.resolve() and cfg.checkpoint.finetune
