"""Video/image decoding for pre-tokenization: probe, sample frames, decode (DALI GPU/CPU or PyAV), crop.

Entry point: :func:`load_media` (one file -> cropped uint8 frames or a ``MediaError`` whose
``reason`` says why the file is skipped). DALI is imported only when a DALI backend is used.
"""

from .crop import (
    center_crop,
    crop_frames,
    crop_sizes_for,
    generate_crop_size_list,
    select_crop_size,
    var_center_crop,
)
from .errors import REASONS, BackendUnavailableError, MediaError
from .media import LoadedMedia, is_image_path, load_image, load_media
from .readers import (
    AUTO,
    BACKENDS,
    VideoInfo,
    available_backends,
    backend_can_decode,
    choose_backend,
    probe,
    read_frames,
    read_frames_with,
)
from .sampling import SAMPLING_MODES, num_target_frames, sample_frame_indices

__all__ = [
    "AUTO", "BACKENDS", "REASONS", "SAMPLING_MODES", "BackendUnavailableError", "LoadedMedia",
    "MediaError", "VideoInfo", "available_backends", "backend_can_decode", "center_crop",
    "choose_backend", "crop_frames", "crop_sizes_for", "generate_crop_size_list", "is_image_path",
    "load_image", "load_media", "num_target_frames", "probe", "read_frames", "read_frames_with",
    "sample_frame_indices", "select_crop_size", "var_center_crop",
]
