"""GPU health: rules as data (PackingPolicy.health), samples in, a state per GPU out."""

from scheduler.health.machine import Finding, GpuTrack, findings, step
from scheduler.health.sample import GpuSample

__all__ = ["Finding", "GpuSample", "GpuTrack", "findings", "step"]
