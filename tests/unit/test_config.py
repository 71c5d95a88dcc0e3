"""Config system: recipes, dotted overrides, Megatron flag aliases, strict validation."""

import pytest

from lumos_megatron.config import ConfigError, LumosConfig, dump_config, load_recipe, parse_cli
from conftest import TINY_RECIPE


def test_tiny_recipe_loads_and_overrides_apply_in_order(tmp_path):
    cfg = parse_cli(["--config", str(TINY_RECIPE), "train.lr=1e-3", "--global-batch-size", "16",
                     "--tensor-model-parallel-size=2", "--sequence-parallel", "train.lr=2e-3",
                     "--min-lr", "1e-4"])
    assert cfg.model.num_layers == 2 and cfg.model.vocab_size == 65600
    assert cfg.train.lr == 2e-3  # the later override wins
    assert cfg.train.global_batch_size == 16
    assert cfg.parallel.tensor_model_parallel_size == 2 and cfg.parallel.sequence_parallel is True


def test_dumped_config_round_trips(tmp_path):
    cfg = parse_cli(["--config", str(TINY_RECIPE), "model.num_query_groups=4"])
    path = tmp_path / "run_config.yaml"
    path.write_text(dump_config(cfg))
    assert load_recipe(path) == cfg


@pytest.mark.parametrize("argv, fragment", [
    (["train.lrr=1"], "unknown config key 'train.lrr'"),
    (["trian.lr=1"], "unknown config section 'trian'"),
    (["--tensor-parallel", "2"], "unknown flag '--tensor-parallel'"),
    (["train.train_iters=abc"], "train.train_iters: expected an integer"),
    (["train.micro_batch_size=2.5"], "expected an integer"),
    (["parallel.sequence_parallel=maybe"], "expected true/false"),
    (["--train-iters"], "--train-iters needs a value"),
    (["stray"], "cannot parse argument 'stray'"),
])
def test_bad_keys_and_values_are_named(argv, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        parse_cli(argv)
    assert fragment in str(err.value)


@pytest.mark.parametrize("argv, fragment", [
    (["--sequence-parallel"], "sequence_parallel needs tensor_model_parallel_size >= 2"),
    (["model.hidden_size=65"], "not divisible by model.num_attention_heads"),
    (["model.num_attention_heads=4", "model.num_query_groups=3"], "not a multiple of"),
    (["--tensor-model-parallel-size", "3"], "is not divisible by TP=3"),
    (["model.vocab_size=1000"], "leaves no visual codes"),
    (["model.rope_variant=mm_rope", "model.hidden_size=64", "model.num_attention_heads=4"],
     "multiple of 32"),
    (["train.global_batch_size=3", "train.micro_batch_size=2"], "not a multiple of"),
    (["--pipeline-model-parallel-size", "3", "model.num_layers=2"], "not divisible by PP x VPP"),
    (["--virtual-pipeline-model-parallel-size", "2"], "needs PP >= 2"),
    (["data.seq_length=4096", "model.max_position_embeddings=2048"], "exceeds"),
])
def test_inconsistent_values_are_rejected(argv, fragment):
    with pytest.raises(ConfigError) as err:
        parse_cli(argv)
    assert fragment in str(err.value)


def test_missing_or_malformed_recipe(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        parse_cli(["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  num_layerz: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown config key 'model.num_layerz'"):
        parse_cli(["--config", str(bad)])


def test_every_field_has_a_docstring():
    import ast
    import inspect

    import lumos_megatron.config.schema as schema

    tree = ast.parse(inspect.getsource(schema))
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                nxt = body[i + 1] if i + 1 < len(body) else None
                assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), \
                    f"{cls.name}.{node.target.id} has no docstring"


def test_defaults_validate():
    from lumos_megatron.config import validate_config

    validate_config(LumosConfig())
