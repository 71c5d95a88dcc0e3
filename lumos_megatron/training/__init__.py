"""Training on megatron-core: batches, forward/loss step, optimizer, loop, logging."""
