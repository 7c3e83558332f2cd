"""One check for a plan with moves: feasible at the end, feasible at every step of carrying it
out, and no running pod lost on the way."""

from __future__ import annotations

from scheduler.execute import Execution, Recording, plan_steps
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan
from scheduler.verify import check_plan, check_steps, final_placement


def assert_carried_out_safely(snap: ClusterSnapshot, pol: PackingPolicy, result: Plan) -> None:
    assert check_plan(snap, pol, result) == []
    # Both ways: every budgeted domain ordering its steps, and only those without room for
    # every add (as the simulator and the operator carry plans out).
    assert check_steps(snap, pol, result, plan_steps(result, snap)) == []
    steps = plan_steps(result, snap, pol)
    assert check_steps(snap, pol, result, steps) == []
    final = final_placement(snap, result)
    evicted = {e.pod for e in result.evictions}
    # A running pod runs on (where it was, or where it moved) unless it was evicted.
    assert all(p.key in final or p.key in evicted for p in snap.pods if p.node is not None)
    assert all(final[m.pod] == (m.to_node, tuple(m.gpu_indices)) for m in result.moves)
    pods = {p.key: p for p in snap.pods}
    assert all(pods[m.pod].preemptible for m in result.moves)
    run = Execution(steps)
    run.advance(Recording())
    assert run.complete
