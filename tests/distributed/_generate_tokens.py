"""Video tokens of ``generate_batch`` at a given TP, for ``test_generation_parallel.py``.

    [torchrun --nproc-per-node N] tests/distributed/_generate_tokens.py CKPT OUT.pt TP KV_CACHE [PP]

Every rank runs the sampler on the same prompts and seeds; rank 0 saves the token lists, every
rank checks that its tokens equal rank 0's. A configuration the sampler refuses saves
``{"refused": message}`` instead.
"""

import sys

import torch
import torch.distributed as dist


def main() -> None:
    ckpt, out_file, tp, kv_cache = sys.argv[1:5]
    pp = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    from lumos_megatron.inference import SamplerSettings, VideoRequest, generate_batch, load_model

    with load_model(ckpt, tensor_parallel_size=int(tp), pipeline_parallel_size=pp) as model:
        prompts = [[0, 101, 102, 103, 8710], [0, 300, 301, 302, 303, 304, 8710]]
        requests = [VideoRequest(p, (4, 4), 5, 1, torch.Generator().manual_seed(i)) for i, p in enumerate(prompts)]
        try:
            tokens = generate_batch(model, requests, SamplerSettings(steps=4, cfg_scale=15.0, kv_cache=kv_cache == "1"))
        except ValueError as err:
            if dist.get_rank() == 0:
                torch.save({"refused": str(err)}, out_file)
            return
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, tokens)
        assert all(t == tokens for t in gathered), "ranks generated different tokens"
        if dist.get_rank() == 0:
            torch.save(tokens, out_file)


if __name__ == "__main__":
    main()
