"""The NVML room: the only place that imports pynvml (real.py), and a scripted fake."""
