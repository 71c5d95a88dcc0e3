"""Generation at scale without a model: the data-parallel plan (balanced, deterministic), the
index of a run, prompt sets of prompts × seeds, the tokenizers a checkpoint records, the latent
geometry taken from the video tokenizer, and arguments refused before anything loads."""

import json
from types import SimpleNamespace

import pytest

from lumos_megatron.config import LumosConfig
from lumos_megatron.data.tokenizer_record import absolute_spec, dataset_tokenizers, with_recorded_tokenizers
from lumos_megatron.inference.prompt_file import read_prompt_file, write_seeded_prompt_set
from lumos_megatron.inference.prompt_sharding import balance_samples, write_index
from lumos_megatron.inference.run import GenerationSetupError, tokenizer_specs
from lumos_megatron.inference.tasks import latent_frame_count, latent_grid


def test_balance_samples_deals_same_sizes_in_turn_and_balances_work():
    assert balance_samples([6] * 5, 2) == [0, 1, 0, 1, 0]
    assert balance_samples([], 3) == []
    # Largest first, each to the least-loaded group: loads 10, 7, 3 + 1 + 1 + 1.
    costs = [1, 10, 1, 7, 3, 1]
    owners = balance_samples(costs, 3)
    assert owners == [2, 0, 2, 1, 2, 2]
    loads = [sum(c for c, o in zip(costs, owners) if o == g) for g in range(3)]
    assert max(loads) - min(loads) <= max(costs)
    # Equal costs of two frame sizes: one size is dealt out before the other (both groups get
    # both sizes, so each group batches them by size), and the plan does not depend on the order
    # in which the equal-cost sizes were first met.
    sizes = [(64, 32), (32, 64), (64, 32), (32, 64)]
    assert balance_samples([4] * 4, 2, sizes) == [0, 0, 1, 1]
    assert balance_samples([4] * 4, 2, sizes) == balance_samples([4] * 4, 2, sizes)
    assert balance_samples([5, 5], 4) == [0, 1]  # more groups than samples: some idle
    with pytest.raises(ValueError, match="groups"):
        balance_samples([1], 0)


def test_index_lists_finished_samples_and_reads_earlier_runs(tmp_path):
    (tmp_path / "sample_00000.json").write_text(json.dumps({"seed": 9, "data_parallel_rank": 1}))
    (tmp_path / "sample_00002.json").write_text(json.dumps({"seed": 2}))
    entries = [{"name": "sample_00002", "index": 2, "prompt": "c", "image": None, "seed": 2, "data_parallel_rank": 0},
               {"name": "sample_00000", "index": 0, "prompt": "a", "image": None, "seed": None,
                "data_parallel_rank": None},  # finished by an earlier run
               {"name": "sample_00001", "index": 1, "prompt": "b", "image": None, "seed": 1,
                "data_parallel_rank": 1}]  # skipped: no JSON
    lines = [json.loads(line) for line in write_index(tmp_path, entries).read_text().splitlines()]
    assert [(x["name"], x["seed"], x["data_parallel_rank"]) for x in lines] == [("sample_00000", 9, 1),
                                                                               ("sample_00002", 2, 0)]
    assert lines[0]["json"] == "sample_00000.json" and lines[0]["video"] == "sample_00000.mp4"


def test_prompts_times_seeds(tmp_path):
    (tmp_path / "set.jsonl").write_text('{"prompt": "a cat", "image": "cat.png"}\n\n{"prompt": "a dog"}\n')
    assert write_seeded_prompt_set(tmp_path / "set.jsonl", [0, 1, 2], tmp_path / "out" / "eval.jsonl") == 6
    records, skipped = read_prompt_file(tmp_path / "out" / "eval.jsonl")
    assert not skipped
    assert [(r.index, r.caption, r.seed) for r in records[:4]] == [(0, "a cat", 0), (1, "a cat", 1), (2, "a cat", 2),
                                                                   (3, "a dog", 0)]
    assert records[0].image == str((tmp_path / "cat.png").resolve()) and records[3].image is None
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="1 unusable"):
        write_seeded_prompt_set(tmp_path / "bad.jsonl", [0], tmp_path / "x.jsonl")


def _dataset(root, **settings):
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"settings": settings, "number_tokens": [], "version": 1}))
    return str(root)


def test_training_records_the_datasets_tokenizers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "video.pt").write_bytes(b"")
    a = _dataset(tmp_path / "a", video_tokenizer="fsq:tok/video.pt", text_tokenizer="sp:/abs/text.model")
    b = _dataset(tmp_path / "b", video_tokenizer="fsq:tok/video.pt", text_tokenizer="sp:/abs/text.model")
    cfg = LumosConfig()
    cfg.data.mock, cfg.data.data_path = False, ["0.5", a, "0.5", b]
    recorded = with_recorded_tokenizers(cfg)
    # A relative path that resolves here becomes absolute; the recipe's config is left alone.
    assert recorded.data.video_tokenizer == f"fsq:{tmp_path / 'tok' / 'video.pt'}"
    assert recorded.data.text_tokenizer == "sp:/abs/text.model"
    assert cfg.data.video_tokenizer is None
    # The recipe wins over the datasets.
    cfg.data.text_tokenizer = "hf:/recipe/tokenizer.json"
    assert with_recorded_tokenizers(cfg).data.text_tokenizer == "hf:/recipe/tokenizer.json"
    # Datasets that disagree (or a dataset without dataset.json) record nothing.
    c = _dataset(tmp_path / "c", video_tokenizer="cosmos:/other", text_tokenizer="sp:/abs/text.model")
    with pytest.warns(UserWarning, match="different video tokenizers"):
        assert dataset_tokenizers([a], ["1", c])["video_tokenizer"] is None
    (tmp_path / "plain").mkdir()
    assert dataset_tokenizers([str(tmp_path / "plain")]) == {"video_tokenizer": None, "text_tokenizer": None}
    assert absolute_spec("cosmos:missing/dir") == "cosmos:missing/dir"
    mock = LumosConfig()  # mock data: no tokenizers
    assert with_recorded_tokenizers(mock).data.video_tokenizer is None


def test_generate_takes_tokenizers_from_flags_or_checkpoint():
    recorded = SimpleNamespace(video_tokenizer="fsq:/ckpt/video.pt", text_tokenizer=None)
    args = SimpleNamespace(load="C", video_tokenizer=None, text_tokenizer="sp:/flag.model")
    specs = tokenizer_specs(args, recorded)
    assert specs["video_tokenizer"][0] == "fsq:/ckpt/video.pt" and "run_config" in specs["video_tokenizer"][1]
    assert specs["text_tokenizer"] == ("sp:/flag.model", "--text-tokenizer")
    args.text_tokenizer = None
    with pytest.raises(GenerationSetupError, match="no --text-tokenizer given and the checkpoint C records none"):
        tokenizer_specs(args, recorded)


class _Tokenizer:  # a tokenizer with other compressions than Cosmos' 4x8x8
    temporal_compression, spatial_compression = 2, 16


def test_latent_geometry_comes_from_the_video_tokenizer():
    assert latent_frame_count("t2v", 12, 2, 4) == 7  # the official 7 latent frames
    assert latent_frame_count("t2v", 5, 1, 4) == 2
    assert latent_frame_count("t2v", 12, 2, _Tokenizer.temporal_compression) == 13
    assert latent_frame_count("t2i", 12, 2, 4) == 1
    assert latent_grid(448, 256, 8) == (32, 56)
    assert latent_grid(448, 256, _Tokenizer.spatial_compression) == (16, 28)


@pytest.mark.parametrize("extra", [["--fps", "12"], ["--duration", "2"]])
def test_t2i_with_fps_or_duration_is_refused(extra, capsys, tmp_path):
    from lumos_megatron.generate import main

    assert main(["--load", str(tmp_path), "--task", "t2i", "--prompt", "a cat", "--out", str(tmp_path), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lumos_megatron.generate: error: --fps and --duration")


def test_tensor_parallel_size_must_divide_the_ranks(capsys, tmp_path, monkeypatch):
    from lumos_megatron.generate import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert main(["--load", str(tmp_path), "--prompt", "x", "--out", str(tmp_path),
                 "--tensor-model-parallel-size", "3"]) == 2
    assert "--tensor-model-parallel-size 3 must be >= 1 and divide the number of processes (4)" in capsys.readouterr().err
