"""Step plan (joint image/video alternation), sample schedule and per-step padded lengths."""

import pytest

from lumos_megatron.config import parse_cli
from lumos_megatron.training.data_plan import SampleSchedule, StepPlan, StreamBatching, step_seq_length

from conftest import TINY_RECIPE


def _cfg(*overrides):
    return parse_cli(["--config", str(TINY_RECIPE), *overrides])


def test_video_only_plan_reads_the_video_stream_every_step():
    plan = StepPlan(_cfg(), dp=1)
    assert [plan.stream_at(i).name for i in range(3)] == ["video"] * 3
    assert plan.stream_at(0).global_batch_size == 8


@pytest.mark.parametrize("video_per_image", [1, 2])
def test_joint_plan_alternates_image_then_video_steps(video_per_image):
    cfg = _cfg("data.mock_image=true", "data.image_micro_batch_size=3",
               f"data.video_iters_per_image_iter={video_per_image}")
    plan = StepPlan(cfg, dp=2)
    names = [plan.stream_at(i).name for i in range(6)]
    cycle = ["image"] + ["video"] * video_per_image
    assert names == (cycle * 6)[:6]
    image = plan.streams["image"]
    # Default image batch: image micro-batch x the video step's micro-batch count x DP.
    assert (image.micro_batch_size, image.global_batch_size) == (3, 3 * 2 * 2)
    for name in ("image", "video"):
        for start in range(5):
            for end in range(start, 9):
                expected = sum(plan.stream_at(i).name == name for i in range(start, end))
                assert plan.steps_of(name, start, end) == expected


def test_schedule_gives_disjoint_contiguous_blocks_per_rank_and_resumes_exactly():
    cfg = _cfg("data.mock_image=true", "data.image_micro_batch_size=1")
    plan = StepPlan(cfg, dp=2)
    full = SampleSchedule(plan, 2)
    seen = {"image": [], "video": []}
    for it in range(5):
        stream = plan.stream_at(it)
        step = []
        for micro in range(stream.num_microbatches(2)):
            for rank in range(2):
                step += full.indices(it, micro, rank)
        assert sorted(step) == full.global_indices(it)
        seen[stream.name] += step
    for name, indices in seen.items():
        assert sorted(indices) == list(range(len(indices)))
    # Resuming at iteration 3 from the consumed counts reproduces the same indices.
    resumed = SampleSchedule(plan, 2, base_iteration=3,
                             base_samples={n: full.samples_before(n, 3) for n in plan.streams})
    for it in (3, 4):
        assert resumed.global_indices(it) == full.global_indices(it)


def test_vpp_requires_micro_batches_in_groups_of_pp():
    cfg = _cfg("parallel.pipeline_model_parallel_size=2",
               "parallel.virtual_pipeline_model_parallel_size=2", "model.num_layers=4",
               "data.mock_image=true", "data.image_global_batch_size=3", "data.image_micro_batch_size=1")
    with pytest.raises(ValueError, match="image steps"):
        StepPlan(cfg, dp=1)


class _Lengths:
    def __init__(self, lengths):
        self.lengths = lengths

    def sample_length(self, index, max_latent_frames=None):
        return self.lengths[index]


def test_step_length_is_the_bucket_of_the_longest_sample_capped_at_the_stream_length():
    stream = StreamBatching("video", 1, 3, 96)
    source = _Lengths([10, 33, 20, 95])
    assert step_seq_length(stream, source, [0, 1, 2], None, None) == 96
    assert step_seq_length(stream, source, [0, 1, 2], 16, None) == 48
    assert step_seq_length(stream, source, [0, 2], 16, None, divisor=3) == 48  # lcm(16, 3)
    assert step_seq_length(stream, source, [3], 64, None) == 96
