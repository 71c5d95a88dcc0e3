"""Offline quality numbers of generated videos, with no network weights.

* pixel metrics (``pixels``): ``psnr``, ``ssim``, ``temporal_flicker`` (VBench's pixel-only
  temporal-flickering score) of ``[T, H, W, C]`` videos;
* token metrics (``tokens``): ``codebook_usage`` and ``token_histogram_divergence``
  (Jensen–Shannon, bits) of raw video codes;
* a whole generated directory (``report.evaluate_directory``), what
  ``python -m lumos_megatron.evaluate DIR`` writes to ``DIR/metrics.json``.

The set-level modules are resolved on first access, so importing the metrics stays cheap.
"""

from lumos_megatron.lazy_exports import lazy_getattr

from .pixels import frame_differences, mean_squared_error, psnr, ssim, temporal_flicker
from .tokens import (
    CodebookUsage,
    code_histogram,
    codebook_usage,
    entropy_bits,
    token_histogram_divergence,
    usage_from_counts,
)

_EXPORTS = {
    "EvaluationOptions": "lumos_megatron.evaluation_metrics.report",
    "evaluate_directory": "lumos_megatron.evaluation_metrics.report",
    "EvaluationInputError": "lumos_megatron.evaluation_metrics.generated_set",
}
__all__ = [
    "CodebookUsage", "EvaluationInputError", "EvaluationOptions", "code_histogram", "codebook_usage",
    "entropy_bits", "evaluate_directory", "frame_differences", "mean_squared_error", "psnr", "ssim",
    "temporal_flicker", "token_histogram_divergence", "usage_from_counts",
]
__getattr__ = lazy_getattr(__name__, _EXPORTS)
