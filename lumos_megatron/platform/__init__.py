"""What the system needs from the machine it runs on: distributed init and parallel layouts, the
one module of CPU adaptations of megatron-core, disk space, optional dependencies."""
