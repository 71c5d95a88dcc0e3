"""Frame sampling (exact and official rules) and the Lumina-mGPT crop list / selection / resize."""

import pickle

import numpy as np
import pytest
from PIL import Image

from lumos_megatron.data.video import MediaError
from lumos_megatron.data.video.crop import (
    aspect_score,
    center_crop,
    crop_frames,
    crop_sizes_for,
    generate_crop_size_list,
    select_crop_size,
    var_center_crop,
)
from lumos_megatron.data.video.sampling import num_target_frames, sample_frame_indices


def official_loop(num_frames, src_fps, target_fps, duration):
    """The official extract_frames_from_video as a literal frame-by-frame loop (None = skipped)."""
    if num_frames / src_fps < duration:
        return None
    required = round(target_fps * duration)
    step = int(src_fps / target_fps)
    middle = num_frames // 2
    start = middle - (required * step) // 2
    end = start + required * step
    start, end = max(0, start), min(num_frames, end)
    kept = []
    frame = start
    while len(kept) < required and frame < end:
        if frame % step == 0:
            kept.append(frame)
        frame += 1
    return kept if len(kept) >= required else None


def assert_nearest(indices, num_frames, src_fps, target_fps, duration):
    """Each index is the source frame whose interval centre is nearest its output interval centre."""
    start = (num_frames / src_fps - duration) / 2
    centres = start + (np.arange(len(indices)) + 0.5) / target_fps
    distance = np.abs((indices + 0.5) / src_fps - centres)
    assert np.all(distance <= 0.5 / src_fps + 1e-9)


# ---------------------------------------------------------------- exact sampling

@pytest.mark.parametrize("src_fps,num_frames", [(30, 300), (25, 250), (29.97002997, 240),
                                                (60, 500), (24, 170), (8, 80)])
def test_exact_sampling_picks_nearest_frames_of_a_centred_window(src_fps, num_frames):
    indices = sample_frame_indices(num_frames, src_fps, 12, 7)
    assert indices.dtype == np.int64 and len(indices) == 84 == num_target_frames(12, 7)
    assert np.all(np.diff(indices) >= 0) and indices.min() >= 0 and indices.max() < num_frames
    assert_nearest(indices, num_frames, src_fps, 12, 7)
    if src_fps >= 12:
        assert len(set(indices.tolist())) == 84  # downsampling never repeats a frame
    else:
        assert len(set(indices.tolist())) < 84  # 8 fps source: frames repeat to reach 12 fps


def test_exact_sampling_30fps_runs_at_true_12fps_and_is_centred():
    indices = sample_frame_indices(300, 30, 12, 7)
    # 30/12 = 2.5: steps alternate 2 and 3, so 84 frames span 7 s of source, not 5.6 s.
    assert set(np.diff(indices).tolist()) == {2, 3}
    assert abs((indices[-1] - indices[0]) - 83 * 2.5) <= 1  # 84 frames span 7 s of source
    np.testing.assert_array_equal(indices + indices[::-1], np.full(84, 299))


def test_exact_sampling_same_rate_same_length_is_identity():
    np.testing.assert_array_equal(sample_frame_indices(84, 12, 12, 7), np.arange(84))
    np.testing.assert_array_equal(sample_frame_indices(25, 25, 12, 1), sample_frame_indices(25, 25, 12, 1.0))


def test_exact_sampling_fps_and_duration_of_one_takes_the_middle_frame():
    assert sample_frame_indices(101, 25, 1, 1).tolist() == [50]


# ---------------------------------------------------------------- official sampling

@pytest.mark.parametrize("src_fps", [23.976023976, 24, 25, 29.97002997, 30, 48, 50, 59.94005994, 60, 13])
@pytest.mark.parametrize("seconds", [7, 7.3, 9.9, 20])
def test_official_sampling_matches_the_official_frame_loop(src_fps, seconds):
    num_frames = int(seconds * src_fps)
    expected = official_loop(num_frames, src_fps, 12, 7)
    if expected is None:
        with pytest.raises(MediaError) as info:
            sample_frame_indices(num_frames, src_fps, 12, 7, "official")
        assert info.value.reason == "too_short"
    else:
        assert sample_frame_indices(num_frames, src_fps, 12, 7, "official").tolist() == expected


def test_official_sampling_30fps_quirk_is_15fps():
    indices = sample_frame_indices(300, 30, 12, 7, "official")
    assert len(indices) == 84
    assert np.all(np.diff(indices) == 2) and np.all(indices % 2 == 0)  # frame_step = int(2.5) = 2
    assert (indices[-1] - indices[0] + 2) / 30 == pytest.approx(5.6)  # 84 frames cover 5.6 s
    assert (indices[0] + indices[-1]) // 2 in (149, 150)  # centred on the middle frame 150


def test_official_sampling_25fps_and_23976fps_steps():
    at25 = sample_frame_indices(250, 25, 12, 7, "official")
    assert np.all(np.diff(at25) == 2) and np.all(at25 % 2 == 0)  # 12.5 fps, not 12
    at23 = sample_frame_indices(240, 23.976023976, 12, 7, "official")
    np.testing.assert_array_equal(np.diff(at23), np.ones(83))  # int(1.998) = 1: every frame


@pytest.mark.parametrize("target_fps,duration", [(12, 1), (12.5, 6.68), (8, 2.5), (15, 3), (11.9, 7)])
def test_official_sampling_matches_the_loop_near_the_minimum_length(target_fps, duration):
    for src_fps in (target_fps, 16, 24, 25, 29.97002997, 30, 31, 60):
        if src_fps < target_fps:
            continue
        shortest = int(src_fps * duration)
        for num_frames in range(shortest - 2, shortest + 12):
            expected = official_loop(num_frames, src_fps, target_fps, duration)
            if expected is None:
                with pytest.raises(MediaError, match="too_short"):
                    sample_frame_indices(num_frames, src_fps, target_fps, duration, "official")
            else:
                got = sample_frame_indices(num_frames, src_fps, target_fps, duration, "official")
                assert got.tolist() == expected


def test_official_sampling_source_slower_than_target_is_low_fps():
    with pytest.raises(MediaError) as info:
        sample_frame_indices(100, 8, 12, 7, "official", path="slow.mp4")
    assert info.value.reason == "low_fps" and info.value.path == "slow.mp4"
    assert len(sample_frame_indices(100, 8, 12, 7, "exact")) == 84


@pytest.mark.parametrize("mode", ["exact", "official"])
def test_clip_shorter_than_duration_is_too_short(mode):
    with pytest.raises(MediaError) as info:
        sample_frame_indices(209, 30, 12, 7, mode, path="clip.mp4")
    assert info.value.reason == "too_short"
    assert "clip.mp4" in str(info.value) and info.value.as_record() == {
        "path": "clip.mp4", "reason": "too_short", "detail": info.value.detail}
    restored = pickle.loads(pickle.dumps(info.value))  # crosses worker-process boundaries intact
    assert (restored.path, restored.reason, restored.detail) == ("clip.mp4", "too_short", info.value.detail)
    assert len(sample_frame_indices(210, 30, 12, 7, mode)) == 84  # exactly 7 s is enough


def test_sampling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sampling mode"):
        sample_frame_indices(100, 25, 12, 2, "nearest")
    with pytest.raises(ValueError, match="positive"):
        sample_frame_indices(100, 25, 0, 2)
    with pytest.raises(ValueError, match="fps"):
        sample_frame_indices(0, 25, 12, 2)


# ---------------------------------------------------------------- crop list

@pytest.mark.parametrize("num_patches", [1, 2, 16, 64, 121, 256, 576])
def test_crop_size_list_is_the_area_bounded_staircase(num_patches):
    sizes = generate_crop_size_list(num_patches, 32, 4.0)
    grids = [(w // 32, h // 32) for w, h in sizes]
    assert all(w % 32 == 0 and h % 32 == 0 for w, h in sizes)
    assert all(w * h <= num_patches and max(w, h) / min(w, h) <= 4 for w, h in grids)
    # The staircase visits, for each width w, the heights N//(w+1) .. N//w (height 1 at w = N).
    expected = [(w, h) for w in range(num_patches, 0, -1)
                for h in range(max(1, num_patches // (w + 1)), num_patches // w + 1)
                if max(w, h) / min(w, h) <= 4]
    assert grids == expected
    assert len(set(grids)) == len(grids)


def test_crop_lists_of_the_spec():
    assert all(w * h <= 121 * 32 * 32 for w, h in crop_sizes_for(352))
    assert (448, 256) in crop_sizes_for(352) and (672, 384) in crop_sizes_for(528)
    assert crop_sizes_for(512) == crop_sizes_for(528)
    big = crop_sizes_for(512)
    assert len(big) == 49 and big[0] == (1024, 256) and big[-1] == (256, 1024)
    with pytest.raises(ValueError, match="resolution"):
        crop_sizes_for(16)


@pytest.mark.parametrize("resolution,expected", [(352, (448, 256)), (528, (672, 384)), (512, (672, 384))])
@pytest.mark.parametrize("source", [(1920, 1080), (1280, 720), (854, 480)])
def test_16_by_9_sources_land_on_the_spec_sizes(resolution, expected, source):
    assert select_crop_size(*source, crop_sizes_for(resolution)) == expected


def test_selection_maximizes_aspect_score_and_breaks_ties_to_larger_size():
    sizes = crop_sizes_for(352)
    for width, height in [(640, 272), (176, 144), (300, 200), (200, 800), (5000, 100)]:
        chosen = select_crop_size(width, height, sizes)
        assert aspect_score(width, height, chosen) == max(aspect_score(width, height, s) for s in sizes)
    # Exact tie (both 2:1, score 1.0): the official reverse sort prefers the larger tuple.
    assert select_crop_size(200, 100, [(64, 32), (128, 64), (96, 32)]) == (128, 64)
    assert select_crop_size(200, 100, [(128, 64), (64, 32)]) == (128, 64)


# ---------------------------------------------------------------- resize / crop

def ramp_image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(height), np.arange(width)) % 256
    noise = rng.integers(0, 32, (height, width, 3))
    return Image.fromarray(((base[..., None] + noise) % 256).astype(np.uint8), "RGB")


def test_center_crop_output_size_always_equals_the_crop():
    rng = np.random.default_rng(0)
    sizes = crop_sizes_for(352)
    for _ in range(40):
        width, height = (int(v) for v in rng.integers(20, 2500, 2))
        out = var_center_crop(Image.new("RGB", (width, height), (90, 30, 200)), sizes)
        assert out.size == select_crop_size(width, height, sizes)


def test_center_crop_halves_with_box_then_bicubic_then_centres():
    image = ramp_image(1280, 720)
    # 1280x720 -> (448, 256): one BOX halving to 640x360 (640 < 896 stops it), scale
    # max(448/640, 256/360) = 256/360, BICUBIC to (455, 256), crop from x = (455-448)//2 = 3.
    manual = image.resize((640, 360), Image.BOX).resize((455, 256), Image.BICUBIC).crop((3, 0, 451, 256))
    np.testing.assert_array_equal(np.asarray(center_crop(image, (448, 256))), np.asarray(manual))


def test_center_crop_rounds_sides_half_to_even_like_python():
    image = ramp_image(20, 31)
    # scale = max(30/20, 32/31) = 1.5, height 31 * 1.5 = 46.5 -> round() = 46 (not 47).
    manual = image.resize((30, 46), Image.BICUBIC).crop((0, 7, 30, 39))
    np.testing.assert_array_equal(np.asarray(center_crop(image, (30, 32))), np.asarray(manual))


def test_crop_frames_chooses_once_and_applies_to_every_frame():
    frames = np.stack([np.asarray(ramp_image(640, 272, seed)) for seed in range(3)])
    sizes = crop_sizes_for(352)
    out = crop_frames(frames, sizes)
    width, height = select_crop_size(640, 272, sizes)
    assert out.shape == (3, height, width, 3) and out.dtype == np.uint8
    for frame, cropped in zip(frames, out):
        np.testing.assert_array_equal(cropped, np.asarray(center_crop(Image.fromarray(frame), (width, height))))
    with pytest.raises(ValueError, match="frame 1"):
        crop_frames([frames[0], frames[1][:100]], sizes)
    with pytest.raises(ValueError, match="uint8"):
        crop_frames(frames.astype(np.float32), sizes)
