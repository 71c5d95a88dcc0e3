"""Streaming mode: samples decoded and tokenized in the loader equal pre-tokenized ones, bad
inputs are substituted deterministically, and a training run reads them."""


import pytest
import torch

import video_clips
from conftest import TINY_RECIPE, run_train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return video_clips.streaming_manifest(tmp_path_factory.mktemp("streaming"))


def _cfg(setup, *extra):
    from lumos_megatron.config import parse_cli

    return parse_cli(["--config", str(TINY_RECIPE), "data.mock=false", "model.vocab_size=66536",
                      f"data.streaming_manifest={setup['manifest']}", f"data.video_tokenizer=fsq:{setup['fsq']}",
                      f"data.text_tokenizer=sp:{setup['sp']}", "data.media_resolution=64",
                      "data.split=100,0,0", "data.seq_length=1024", "model.max_position_embeddings=1024", *extra])


def test_streamed_samples_equal_pretokenized_ones_and_skip_bad_inputs(setup, capsys):
    from lumos_megatron.data.pretokenize import PretokenizeSettings, pretokenize
    from lumos_megatron.data.indexed import PretokenizedDataset
    from lumos_megatron.data.streaming import StreamingVideoSource
    from lumos_megatron.vocab import LumosVocab

    cfg = _cfg(setup)
    vocab = LumosVocab(vocab_size=66536)
    source = StreamingVideoSource(cfg, vocab, "train", device="cpu")
    settings = PretokenizeSettings(manifest=str(setup["manifest"]), output=str(setup["out"] / "ds"),
                                   video_tokenizer=f"fsq:{setup['fsq']}", text_tokenizer=f"sp:{setup['sp']}",
                                   resolution=64, vocab_size=66536)
    pretokenize(settings, progress=False)
    stored = PretokenizedDataset(settings.output, vocab)
    by_source = {stored.metadata(i)["source"]: stored[i][0] for i in range(len(stored))}
    seen = []
    for k in range(6):
        row = source.order.source_index(k)
        tokens, labels = source[k]
        entry = source.rows.entries[row]
        expected = by_source.get(entry.path)
        offset = 1
        while expected is None:  # the missing file: replaced by the next usable row of the order
            expected = by_source.get(source.rows.entries[source.order.source_index(k + offset)].path)
            offset += 1
        assert torch.equal(tokens, expected)
        assert (labels[: int((tokens == vocab.video_start).nonzero()[0])] == -100).all()
        seen.append(entry.path)
    assert any(p.endswith("missing.mp4") for p in seen)
    assert capsys.readouterr().err.count("streaming skips") == 1  # reported once per process


def test_training_reads_a_streaming_manifest(setup):
    args = ["--config", str(TINY_RECIPE), "data.mock=false", "model.vocab_size=66536",
            f"data.streaming_manifest={setup['manifest']}", f"data.video_tokenizer=fsq:{setup['fsq']}",
            f"data.text_tokenizer=sp:{setup['sp']}", "data.media_resolution=64", "data.split=100,0,0",
            "data.seq_length=1024", "model.max_position_embeddings=1024", "--train-iters", "2",
            "--global-batch-size", "2"]
    proc = run_train(args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("lm loss:") == 2
