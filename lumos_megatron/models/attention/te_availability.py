"""Whether TransformerEngine can be imported here: read by the ``te_bias`` backend declaration
(its runtime check) and by the TE core attention (its error), without either importing the other."""

from __future__ import annotations

from typing import Optional


def transformer_engine_problem(training: bool = True) -> Optional[str]:
    """One line saying why ``transformer_engine.pytorch`` cannot be imported, or None if it can."""
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception as err:  # ImportError, or OSError/RuntimeError from a broken CUDA stack
        reason = (str(err).splitlines() or [""])[0]
        return ("model.attention_backend='te_bias' needs TransformerEngine, which cannot be "
                f"imported here ({type(err).__name__}: {reason}); install it on a CUDA machine "
                "with `pip install -e '.[te]'`, or use model.attention_backend=sdpa (flex on GPU)")
    return None
