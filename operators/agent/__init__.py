"""The node agent: NVML readings in, per-GPU health out."""
