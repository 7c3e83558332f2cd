"""The plan-execution contract: steps in phases, what each waits for, and the phase checker."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
from builders import bind, domain, evict, gang, move, node, plan_of, pod, policy, snapshot

from scheduler.execute import Execution, Recording, Step, StepKind, UnknownStep, plan_steps
from scheduler.verify import check_plan, check_steps


def _by(steps: list[Step], kind: StepKind, pod_name: str) -> Step:
    return next(s for s in steps if s.kind == kind and s.pod == f"default/{pod_name}")


def test_a_binding_waits_for_the_eviction_that_freed_its_node_and_the_recording_says_so():
    snap = snapshot(
        [node("n1", 1), node("n2", 1)],
        [pod("low", on=("n1", [0])), pod("high", priority=5), pod("other")],
    )
    plan = plan_of([bind("high", "n1", 0), bind("other", "n2", 0)], [evict("low", "n1")])
    steps = plan_steps(plan, snap)
    e, high, other = (
        _by(steps, k, n) for k, n in [("evict", "low"), ("bind", "high"), ("bind", "other")]
    )
    assert high.after == (e.id,) and other.after == ()
    assert [s.phase for s in steps] == sorted(s.phase for s in steps)
    rec = Recording()
    run = Execution(steps)
    run.advance(rec)
    assert run.complete
    # The free node's binding needs nothing and goes with the eviction; the other waits.
    assert rec.lines[-1].startswith(f"#{high.id} phase 3: bind default/high to n1")
    assert rec.lines[-1].endswith(f"after #{e.id}")
    assert check_steps(snap, policy(), plan, steps) == []


def test_a_binding_waits_for_an_eviction_on_another_node_of_its_budgeted_rack():
    """The victim frees power, not GPUs: without the wait, the binding may run first and the
    rack draws over its budget, which the checker sees in the adds-first order."""
    snap = snapshot(
        [node("n1", 1, domain="r"), node("n2", 1, domain="r")],
        [pod("low", on=("n1", [0])), pod("high", priority=5)],
        domains=[domain("r", budget=2 * 100 + 600)],  # idle of two GPUs + one pod
    )
    plan = plan_of([bind("high", "n2", 0)], [evict("low", "n1")])
    assert check_plan(snap, policy(), plan) == []
    steps = plan_steps(plan, snap)
    e, b = _by(steps, "evict", "low"), _by(steps, "bind", "high")
    assert b.after == (e.id,)
    assert check_steps(snap, policy(), plan, steps) == []
    unguarded = [dataclasses.replace(s, after=()) for s in steps]
    problems = check_steps(snap, policy(), plan, unguarded)
    assert problems and all("power domain r draws 1400 W > budget 800 W" in p for p in problems)


def test_a_budget_with_room_for_every_add_orders_nothing_and_one_without_orders_them():
    """With the power model, a rack that has room for the binding while the victim still runs
    does not make it wait for an eviction on another node (in the operator that would hold the
    binding a cycle); a rack without that room does."""
    snap = snapshot(
        [node("n1", 1, domain="r"), node("n2", 1, domain="r")],
        [pod("low", on=("n1", [0])), pod("high", priority=5)],
        domains=[domain("r", budget=2 * 100 + 2 * 600)],  # room for both pods at once
    )
    plan = plan_of([bind("high", "n2", 0)], [evict("low", "n1")])
    steps = plan_steps(plan, snap, policy())
    assert _by(steps, "bind", "high").after == ()
    assert check_steps(snap, policy(), plan, steps) == []
    # Without the power model every budgeted domain orders its steps.
    assert _by(plan_steps(plan, snap), "bind", "high").after == (_by(steps, "evict", "low").id,)
    tight = snap.model_copy(
        update={
            "power_domains": [
                d.model_copy(update={"budget_watts": 800}) for d in snap.power_domains
            ]
        }
    )
    steps = plan_steps(plan, tight, policy())
    assert _by(steps, "bind", "high").after == (_by(steps, "evict", "low").id,)
    assert check_steps(tight, policy(), plan, steps) == []


def test_inference_surges_training_restarts_and_a_gang_stops_whole_before_it_starts():
    snap = snapshot(
        [node("a", 4), node("b", 4)],
        [
            pod("serve", "inference", on=("a", [0])),
            pod("train", on=("a", [1])),
            *({**m, "node": "a", "gpuIndices": [2 + i]} for i, m in enumerate(gang("g", 2))),
        ],
    )
    plan = plan_of(
        moves=[
            move("serve", "a", "b", 0),
            move("g-0", "a", "b", 1),
            move("train", "a", "b", 2),
            move("g-1", "a", "b", 3),
        ]
    )
    steps = plan_steps(plan, snap)
    s_start, s_stop = _by(steps, "start", "serve"), _by(steps, "stop", "serve")
    assert s_start.surge and s_stop.surge and s_stop.after == (s_start.id,)  # replica first
    t_stop, t_start = _by(steps, "stop", "train"), _by(steps, "start", "train")
    assert t_stop.id in t_start.after and not t_start.surge
    stops = {_by(steps, "stop", f"g-{i}").id for i in range(2)}
    for i in range(2):
        start = _by(steps, "start", f"g-{i}")
        assert stops <= set(start.after) and start.group == "default/g"
    assert check_steps(snap, policy(), plan, steps) == []
    rec = Recording()
    Execution(steps).advance(rec)
    text = "\n".join(rec.lines)
    assert text.index("stop default/g-1") < text.index("start restart default/g-0")


def test_a_surge_replica_counts_beside_its_old_copy():
    """A replica started on the old copy's node would need its GPUs twice over: caught."""
    snap = snapshot([node("a", 1)], [pod("serve", "inference", on=("a", [0]))])
    plan = plan_of(moves=[move("serve", "a", "a", 0)])
    problems = check_steps(snap, policy(), plan, plan_steps(plan, snap))
    assert any("GPU a/0 given twice" in p for p in problems)


def test_a_gang_binds_together_and_an_unknown_step_fails_loudly():
    snap = snapshot([node("n1", 2)], gang("g", 2))
    plan = plan_of([bind("g-0", "n1", 0), bind("g-1", "n1", 1)])
    steps = plan_steps(plan, snap)

    class Counting(Recording):
        calls: ClassVar[list[int]] = []

        def bind(self, group):
            self.calls.append(len(group))
            return super().bind(group)

    target = Counting()
    Execution(steps).advance(target)
    assert target.calls == [2]
    odd = dataclasses.replace(steps[0], kind="reboot", group=None)
    with pytest.raises(UnknownStep, match="unknown kind 'reboot'"):
        Execution([odd]).advance(Recording())


def test_steps_under_way_wait_for_the_target_and_circles_are_reported():
    snap = snapshot([node("n1", 1)], [pod("low", on=("n1", [0])), pod("high", priority=5)])
    plan = plan_of([bind("high", "n1", 0)], [evict("low", "n1")])
    steps = plan_steps(plan, snap)

    class Slow(Recording):
        def evict(self, step):
            super().evict(step)
            return False  # the pod takes a while to go

    run = Execution(steps)
    assert [s.kind for s in run.advance(Slow())] == ["evict"]
    assert not run.complete and run.ready() == []
    run.done(steps[0].id)
    assert [s.kind for s in run.advance(Slow())] == ["bind"] and run.complete
    circle = [dataclasses.replace(steps[0], after=(steps[1].id,)), steps[1]]
    assert "circle" in check_steps(snap, policy(), plan, circle)[-1]
