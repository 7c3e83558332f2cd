"""The Statement: trial changes to a cycle's state, taken back to exactly the state before
(buckets and power included) or kept."""

from __future__ import annotations

from synthetic import live_states

from scheduler.fit.cycle import start_cycle
from scheduler.fit.greedy import unit_order, units_of
from scheduler.fit.state import ClusterState
from scheduler.fit.statement import Statement
from scheduler.model import PackingPolicy


def _view(s: ClusterState) -> dict:
    """Everything a look-up reads, with empty buckets left out (they carry no meaning)."""

    def nonempty(d: dict) -> dict:
        return {k: dict(v) for k, v in d.items() if v}

    return {
        "res": [list(r) for r in s.res],
        "cpu": list(s.cpu),
        "mem": list(s.mem),
        "power": dict(s.power),
        "apps": [+a for a in s.apps],
        "whole": nonempty(s.whole),
        "part": nonempty(s.part),
        "share_nodes": nonempty(s.share_nodes),
        "with_free": [set(d) for d in s.with_free],
        "with_partial": set(s.with_partial),
        "free_milli": list(s._free_milli),
        "nfree": list(s.nfree),
        "empty_of": +s.empty_of,
    }


def _cycle():
    snap = live_states.scattered_state(64, 11)
    cycle = start_cycle(snap, PackingPolicy())
    cycle.state.weigh_stranding = False
    return cycle


def _trial(cycle, statement: Statement, count: int) -> int:
    """Places up to `count` pending pods and takes one running pod off; returns changes made."""
    pods = [p for u in unit_order(units_of(cycle.pending), cycle.policy) for p in u if p.gpus]
    made = 0
    for pod in pods[:count]:
        where = cycle.state.find(pod)
        if where is not None:
            statement.place(pod, *where)
            made += 1
    running = next(p for p in cycle.snapshot.pods if p.node is not None and p.gpus)
    node = cycle.state.node_index[running.node]
    statement.remove(running, node, tuple(running.gpu_indices))
    return made + 1


def test_discard_restores_the_state_exactly():
    cycle = _cycle()
    before = _view(cycle.state)
    statement = Statement(cycle.state)
    assert _trial(cycle, statement, 40) > 10
    assert _view(cycle.state) != before
    statement.discard()
    assert _view(cycle.state) == before
    assert statement.placed() == []


def test_discard_to_a_checkpoint_keeps_what_came_before():
    cycle = _cycle()
    statement = Statement(cycle.state)
    _trial(cycle, statement, 10)
    mark = statement.checkpoint()
    kept = _view(cycle.state)
    _trial(cycle, statement, 30)
    statement.discard(mark)
    assert _view(cycle.state) == kept
    assert statement.checkpoint() == mark


def test_commit_keeps_changes_and_forgets_them():
    cycle = _cycle()
    statement = Statement(cycle.state)
    _trial(cycle, statement, 20)
    placed = statement.placed()
    assert placed
    after = _view(cycle.state)
    statement.commit()
    statement.discard()  # nothing recorded any more: nothing taken back
    assert _view(cycle.state) == after
    for pod, (node, gpus) in placed:
        assert all(cycle.state.res[node][g] < 1000 for g in gpus), pod.key


def test_take_back_removes_the_named_placements_wherever_they_are_and_keeps_the_rest():
    cycle = _cycle()
    statement = Statement(cycle.state)
    _trial(cycle, statement, 40)
    placed = statement.placed()
    gone = {pod.key for pod, _ in placed[1::3]}  # every third, from all through the record
    kept = [(pod, at) for pod, at in placed if pod.key not in gone]
    statement.take_back(gone)
    assert statement.placed() == kept
    # The state is as if only the kept placements (and the removal) had been made.
    expected = start_cycle(cycle.snapshot, cycle.policy).state
    expected.weigh_stranding = False
    redo = Statement(expected)
    for pod, (node, gpus) in kept:
        redo.place(pod, node, gpus)
    running = next(p for p in cycle.snapshot.pods if p.node is not None and p.gpus)
    redo.remove(running, expected.node_index[running.node], tuple(running.gpu_indices))
    view, want = _view(cycle.state), _view(expected)
    for field in ("res", "cpu", "mem", "power", "apps", "free_milli", "nfree", "empty_of"):
        assert view[field] == want[field], field
    statement.discard()  # what is left of the record is taken back too
    assert (
        _view(cycle.state)["res"] == _view(start_cycle(cycle.snapshot, cycle.policy).state)["res"]
    )
