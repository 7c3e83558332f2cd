"""The room a running pod frees when taken off its node, as every capacity row of the model
counts it (scheduler.solver.room)."""

from __future__ import annotations

from builders import pod

from scheduler.fit.classes import victim_signature
from scheduler.model import Pod
from scheduler.solver.room import Room, freed_by


def _freed(spec: dict, usable: list[bool]) -> Room:
    p = Pod.model_validate(spec)
    return freed_by(victim_signature(p, usable), p)


def test_whole_gpus_count_only_those_that_take_new_work():
    spec = pod("t", gpus=4, cpu=8000, mem=64, on=("n", [0, 1, 2, 3]))
    room = _freed(spec, [True, True, False, True])
    assert room == Room(gpus=3, slots=0, milli=3000, cpu=8000, mem=64)


def test_a_share_frees_its_slot_its_milli_and_at_most_one_gpu():
    spec = pod("s", "inference", milli=300, cpu=500, mem=8, on=("n", [2]))
    assert _freed(spec, [True] * 4) == Room(gpus=1, slots=1, milli=300, cpu=500, mem=8)
    # On a GPU that takes no new work it frees CPU and memory, and nothing new work may use.
    assert _freed(spec, [True, True, False, True]) == Room(cpu=500, mem=8)


def test_rooms_add_and_scale():
    a = Room(gpus=1, slots=1, milli=300, cpu=500, mem=8)
    assert a + a == a.times(2) == Room(gpus=2, slots=2, milli=600, cpu=1000, mem=16)
    assert sum((a.times(k) for k in (1, 2)), Room()) == a.times(3)
