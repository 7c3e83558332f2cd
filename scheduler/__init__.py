"""wattpack's pure core: data in, data out. No Kubernetes, no NVML, no clock of its own."""
