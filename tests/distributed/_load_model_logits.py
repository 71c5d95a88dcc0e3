"""Logits of ``load_model(CKPT)`` at a given TP/PP, for ``test_conversion_parallel.py``.

    [torchrun --nproc-per-node N] tests/distributed/_load_model_logits.py CKPT TOKENS.pt OUT.pt TP PP

Every rank loads its share of the model and runs ``forward_logits`` on the same tokens; each
rank checks that it received the full logits, and rank 0 saves them.
"""

import sys

import torch
import torch.distributed as dist


def main() -> None:
    ckpt, tokens_file, out_file, tp, pp = sys.argv[1:6]
    from lumos_megatron.inference import load_model

    with load_model(ckpt, tensor_parallel_size=int(tp), pipeline_parallel_size=int(pp)) as model:
        tokens = torch.load(tokens_file)
        logits = model.forward_logits(tokens)
        assert logits.shape == (*tokens.shape, model.vocab.vocab_size), logits.shape
        if dist.get_rank() == 0:
            torch.save(logits, out_file)


if __name__ == "__main__":
    main()
