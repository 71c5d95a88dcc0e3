"""Training from pre-tokenized shards, joint image/video alternation and periodic evaluation,
through the real entry point."""

import re

from conftest import TINY_RECIPE, read_scalars, run_train


def _write_dataset(root, count):
    from lumos_megatron.config import parse_cli
    from lumos_megatron.data.indexed import ShardWriter
    from lumos_megatron.data.mock import MockVideoDataset
    from lumos_megatron.vocab import LumosVocab

    cfg = parse_cli(["--config", str(TINY_RECIPE)])
    mock = MockVideoDataset(cfg, LumosVocab(vocab_size=cfg.model.vocab_size))
    for shard in range(2):
        writer = ShardWriter(str(root), shard)
        for i in range(shard * count // 2, (shard + 1) * count // 2):
            writer.add(mock[i][0], {"latent_frames": mock.frames, "latent_grid": list(mock.grid)})
        writer.finalize()


def _lines(stdout):
    return [line for line in stdout.splitlines() if "iteration" in line and "lm loss:" in line]


def test_trains_and_evaluates_on_pretokenized_shards(tmp_path):
    data = tmp_path / "data"
    _write_dataset(data, 40)
    tb = tmp_path / "tb"
    proc = run_train(["--config", str(TINY_RECIPE), "data.mock=false", "--data-path", str(data),
                      "--split", "80,20,0", "--train-iters", "4", "--eval-interval", "2",
                      "--eval-iters", "1", "data.pad_to_multiple=32", "--tensorboard-dir", str(tb)])
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert len(_lines(proc.stdout)) == 4
    validation = re.findall(r"validation loss at iteration (\d+) \| lm loss value: ([0-9.E+-]+)", proc.stdout)
    assert [int(i) for i, _ in validation] == [2, 4]
    assert [s for s, _ in read_scalars(tb, "lm loss validation")] == [2, 4]
    # The objective's per-frame losses of the evaluation (TensorBoard only, not printed).
    frame0 = read_scalars(tb, "loss/frame_0 validation")
    assert [s for s, _ in frame0] == [2, 4] and all(v > 0 for _, v in frame0)
    assert "loss/frame_0" not in proc.stdout
    # 8 samples/step over 32 training samples: iteration 4 starts the second epoch.
    assert re.search(r"iteration\s+4/\s+4 \| consumed samples:\s+32 \|", _lines(proc.stdout)[-1])


def test_joint_training_alternates_image_and_video_steps(tmp_path):
    tb = tmp_path / "tb"
    proc = run_train(["--config", str(TINY_RECIPE), "data.mock_image=true",
                      "data.image_micro_batch_size=4", "data.image_seq_length=48", "--train-iters", "4",
                      "--eval-interval", "4", "--tensorboard-dir", str(tb)])
    assert proc.returncode == 0, proc.stderr[-5000:]
    batches = [int(re.search(r"global batch size:\s+(\d+)", line).group(1)) for line in _lines(proc.stdout)]
    assert batches == [16, 8, 16, 8]  # image (4 x 4 micro-batches), video (2 x 4), ...
    assert re.search(r"consumed samples:\s+48 \|", _lines(proc.stdout)[-1])
    assert "lm loss image value" in proc.stdout and "lm loss video value" in proc.stdout
    assert len(read_scalars(tb, "lm loss image validation")) == 1


def _losses(stdout):
    return {int(m.group(1)): m.group(2) for m in
            re.finditer(r"iteration\s+(\d+)/\s+\d+ \|.*? lm loss: ([0-9.E+-]+)", stdout)}


def test_joint_training_resumes_exactly_from_per_stream_sampler_state(tmp_path):
    # Image steps and video steps consume different streams; the checkpoint stores each stream's
    # position, so a resumed run reads the same samples as an uninterrupted one.
    joint = ["--config", str(TINY_RECIPE), "data.mock_image=true", "data.image_micro_batch_size=4",
             "data.image_seq_length=48", "--train-iters", "5"]
    whole = run_train(joint)
    assert whole.returncode == 0, whole.stderr[-4000:]
    first = run_train(joint + ["--train-iters", "3", "--save", str(tmp_path / "ckpt")])
    assert first.returncode == 0, first.stderr[-4000:]
    second = run_train(joint + ["--load", str(tmp_path / "ckpt")])
    assert second.returncode == 0, second.stderr[-4000:]
    expected = _losses(whole.stdout)
    assert sorted(_losses(second.stdout)) == [4, 5]
    for it, loss in _losses(second.stdout).items():
        assert loss == expected[it], (it, loss, expected[it])


def test_missing_dataset_and_empty_validation_split_exit_2_with_one_line(tmp_path):
    proc = run_train(["--config", str(TINY_RECIPE), "data.mock=false", "--data-path", str(tmp_path / "none")])
    assert proc.returncode == 2 and "no pre-tokenized dataset" in proc.stderr
    data = tmp_path / "data"
    _write_dataset(data, 10)
    proc = run_train(["--config", str(TINY_RECIPE), "data.mock=false", "--data-path", str(data),
                      "--split", "100,0,0", "--eval-interval", "1"])
    assert proc.returncode == 2 and "valid split is empty" in proc.stderr
