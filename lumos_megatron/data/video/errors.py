"""Why a media file was skipped: one exception type with a fixed set of machine-readable reasons.

Pre-tokenization catches :class:`MediaError` per file and writes ``{"path": ..., "reason": ...}``
lines to its skip log, so the reason strings below are a contract: add new ones, never rename.
"""

from __future__ import annotations

from typing import Dict

MISSING = "missing"
EMPTY = "empty"
CORRUPT = "corrupt"
TOO_SHORT = "too_short"
UNSUPPORTED_CODEC = "unsupported_codec"
# The official frame rule (``frame_step = int(src_fps / target_fps)``) has no valid step for a
# source slower than the target rate (it would divide by zero), so such clips are skipped with
# their own reason instead of being mislabelled as short or corrupt.
LOW_FPS = "low_fps"

REASONS = (MISSING, EMPTY, CORRUPT, TOO_SHORT, UNSUPPORTED_CODEC, LOW_FPS)

_ADVICE = {
    MISSING: "check the manifest path",
    EMPTY: "the file has zero bytes; re-download or drop it",
    CORRUPT: "the file cannot be opened or decoded; re-encode or drop it",
    TOO_SHORT: "the clip is shorter than the requested duration; lower the duration or drop it",
    UNSUPPORTED_CODEC: "use backend='auto' or 'pyav', or re-encode the file",
    LOW_FPS: "the source frame rate is below the target fps; use sampling='exact' or drop it",
}


class MediaError(Exception):
    """A media file that cannot become training frames, with a contract ``reason`` (see REASONS).

    Attributes: ``path`` (the input as given), ``reason`` (one of :data:`REASONS`), ``detail``
    (human-readable specifics: codec, durations, the decoder's message).
    """

    def __init__(self, path: str, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown MediaError reason {reason!r}; expected one of {REASONS}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        message = f"{self.path}: {reason}"
        if detail:
            message += f" ({detail})"
        super().__init__(f"{message}; {_ADVICE[reason]}")

    def as_record(self) -> Dict[str, str]:
        """The skip-log line for this file: ``{"path", "reason", "detail"}``."""
        return {"path": self.path, "reason": self.reason, "detail": self.detail}

    def __reduce__(self):
        # Keep the exception picklable across DataLoader / multiprocessing workers.
        return (MediaError, (self.path, self.reason, self.detail))


class BackendUnavailableError(RuntimeError):
    """A decode backend was requested by name but cannot run here (DALI or CUDA missing).

    This is a configuration error, not a property of one file, so it is not a MediaError:
    pre-tokenization should stop instead of skipping every file.
    """
