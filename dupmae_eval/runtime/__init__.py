"""How the process runs on this machine: CPU/GPU kernels, compilation, and memory (allocator) policy."""
