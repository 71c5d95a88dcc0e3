"""Exit statuses of ``lumos-train`` (``python -m lumos_megatron.train``), one place for all.

A launcher decides from the status whether to requeue the job, alert a person, or stop:
docs/failure_modes.md lists every failure, what the trainer does, and which status it ends with.
"""

OK = 0
"""Done: the last iteration, or a stop signal / the exit duration (saved first)."""
ERROR = 1
"""An unexpected error (Python's own status for an uncaught exception): read the traceback."""
BAD_INPUT = 2
"""Bad configuration, impossible layout, unusable checkpoint: fix the input, do not requeue."""
NONFINITE_LOSS = 3
"""A NaN/Inf loss or gradient norm: resume from an earlier checkpoint with other settings."""
NO_SPACE = 4
"""No space left on the checkpoint device: free space (alert a person), then requeue."""
SAVE_FAILED = 5
"""Checkpoint saves kept failing (several in a row, or the final / signal-driven one)."""
HUNG = 6
"""The hang watchdog fired (a step far slower than usual; stacks were dumped): requeue."""
