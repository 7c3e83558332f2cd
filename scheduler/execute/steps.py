"""A plan's steps and what each waits for.

Phases: evictions first, then moves (a stop and a start each), then bindings. A step that adds
load (a start or a binding) waits for every step planned before it that takes load off its node
or off a budgeted power domain above it: that is the room it may have been planned into. So
whatever order a target finishes the steps in, a node holds at most what the plan gave it and a
budgeted domain draws at most what it did before or after the plan, but for replacements
started before their old copy stops, which the plan counted both ways when it placed them.

How a pod moves depends on what it is:
- an inference pod (not in a gang) moves by surge: its replacement starts first, and the old
  copy stops once the replacement runs, so serving never drops; an app's replicas move one at
  a time;
- a training or fine-tuning pod, or any gang member, restarts: it checkpoints and stops, then
  starts from the checkpoint on its new GPUs; a gang's members all stop before any starts.

Moves are carried out in the order the plan lists them: a surge may use room an earlier move
left, never a later one's; a restart may use room any restart's stop frees (moves that trade
places stop before either starts). Stops of restarts wait for nothing, so the steps never wait
on each other in a circle.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from enum import StrEnum

from scheduler.model import ClusterSnapshot, Move, MoveBy, PackingPolicy, Plan, Pod, PodKind
from scheduler.power import budgets, domain_chain, domain_power


class StepKind(StrEnum):
    EVICT = "evict"  # a victim leaves for good (it is queued again)
    STOP = "stop"  # a moved pod's old copy stops
    START = "start"  # a moved pod's replacement starts on its new GPUs
    BIND = "bind"  # a pending pod is bound


PHASE = {StepKind.EVICT: 1, StepKind.STOP: 2, StepKind.START: 2, StepKind.BIND: 3}


@dataclass(frozen=True)
class Step:
    id: int
    kind: StepKind
    pod: str
    node: str
    gpus: tuple[int, ...] = ()
    after: tuple[int, ...] = ()  # steps that must be done before this one starts
    group: str | None = None  # a gang's bindings: carried out together or not at all
    surge: bool = False  # a surge move's steps: the replacement runs beside its old copy
    reason: str = ""

    @property
    def phase(self) -> int:
        return PHASE[self.kind]

    @property
    def adds(self) -> bool:
        return self.kind in (StepKind.START, StepKind.BIND)


def surges(pod: Pod) -> bool:
    """Whether the pod moves by surge (replacement first) rather than by restart."""
    if pod.move_by is not None:
        return pod.move_by == MoveBy.SURGE
    return pod.kind == PodKind.INFERENCE and pod.gang is None


def plan_steps(
    plan: Plan, snapshot: ClusterSnapshot, policy: PackingPolicy | None = None
) -> list[Step]:
    """The plan's steps, in phase order, each with the steps it waits for. With the policy (its
    power model), a budgeted domain that has room for everything the plan adds in it before
    anything leaves orders nothing: a binding there waits only for its own node's removals, so
    an eviction elsewhere under the same facility does not hold it up."""
    pods = {p.key: p for p in snapshot.pods}
    node_domain = {n.name: n.power_domain for n in snapshot.nodes}
    chains = domain_chain(snapshot)
    budgeted = set(budgets(snapshot))
    if policy is not None:
        budgeted -= _slack_domains(plan, snapshot, policy, pods)
    steps: list[Step] = []
    # Load taken off so far, by node and by budgeted domain: what a later add may wait for.
    off_node: dict[str, list[int]] = defaultdict(list)
    off_domain: dict[str, list[int]] = defaultdict(list)

    def scopes(node: str) -> list[str]:
        return [d for d in chains.get(node_domain.get(node, ""), []) if d in budgeted]

    def add(kind: StepKind, pod: str, node: str, **kw) -> Step:
        step = Step(len(steps), kind, pod, node, **kw)
        steps.append(step)
        return step

    def took_off(step: Step) -> None:
        off_node[step.node].append(step.id)
        for d in scopes(step.node):
            off_domain[d].append(step.id)

    def waits_for(node: str) -> tuple[int, ...]:
        ids = set(off_node[node])
        for d in scopes(node):
            ids.update(off_domain[d])
        return tuple(sorted(ids))

    for e in plan.evictions:
        took_off(add(StepKind.EVICT, e.pod, e.node, reason=e.reason))
    # A gang's restart: every moving member stops before any starts.
    moving = [(m, pods.get(m.pod)) for m in plan.moves]
    members = Counter(p.gang_key for _, p in moving if p is not None and p.gang_key is not None)
    gang_stops: dict[str, list[int]] = defaultdict(list)
    gang_moves: dict[str, list[Move]] = defaultdict(list)
    last_of_app: dict[str, int] = {}  # an app's replicas move one at a time
    for m, pod in moving:
        if pod is not None and surges(pod) and not m.restart:
            previous = last_of_app.get(pod.app) if pod.app is not None else None
            start = add(
                StepKind.START,
                m.pod,
                m.to_node,
                gpus=tuple(m.gpu_indices),
                after=tuple(
                    sorted({*waits_for(m.to_node), *([previous] if previous is not None else [])})
                ),
                surge=True,
                reason=m.reason,
            )
            stop = add(
                StepKind.STOP, m.pod, m.from_node, after=(start.id,), surge=True, reason=m.reason
            )
            took_off(stop)
            if pod.app is not None:
                last_of_app[pod.app] = stop.id
            continue
        stop = add(StepKind.STOP, m.pod, m.from_node, reason=m.reason)
        took_off(stop)
        gang = pod.gang_key if pod is not None else None
        if gang is None:
            add(
                StepKind.START,
                m.pod,
                m.to_node,
                gpus=tuple(m.gpu_indices),
                after=tuple(sorted({stop.id, *waits_for(m.to_node)})),
                reason=m.reason,
            )
            continue
        gang_stops[gang].append(stop.id)
        gang_moves[gang].append(m)
        if len(gang_stops[gang]) < members[gang]:
            continue
        for gm in gang_moves[gang]:  # the gang's last moving member has stopped
            add(
                StepKind.START,
                gm.pod,
                gm.to_node,
                gpus=tuple(gm.gpu_indices),
                after=tuple(sorted(set(gang_stops[gang]) | set(waits_for(gm.to_node)))),
                group=gang,
                reason=gm.reason,
            )
    # A restart waits for every restart's stop on its node or budgeted domains, not only the
    # earlier ones: moves that trade places (one repack's) then all stop before any starts.
    # Restart stops wait for nothing, so this makes no circle.
    restart_stops = [t for t in steps if t.kind == StepKind.STOP and not t.surge]
    for i, t in enumerate(steps):
        if t.kind == StepKind.START and not t.surge:
            mine = set(scopes(t.node))
            extra = {
                o.id
                for o in restart_stops
                if o.pod != t.pod and (o.node == t.node or mine & set(scopes(o.node)))
            }
            if not extra <= set(t.after):
                steps[i] = replace(t, after=tuple(sorted(set(t.after) | extra)))
    for b in plan.bindings:
        pod = pods.get(b.pod)
        add(
            StepKind.BIND,
            b.pod,
            b.node,
            gpus=tuple(b.gpu_indices),
            after=waits_for(b.node),
            group=pod.gang_key if pod is not None else None,
        )
    return steps


def _slack_domains(
    plan: Plan, snapshot: ClusterSnapshot, policy: PackingPolicy, pods: dict[str, Pod]
) -> set[str]:
    """Budgeted domains that draw within budget with every pod running before the plan and
    every pod the plan adds (bindings, replacements) at once: no order of steps can overdraw
    them."""
    running = [(p, p.node) for p in snapshot.pods if p.node is not None]
    added = [(pods[b.pod], b.node) for b in plan.bindings if b.pod in pods]
    added += [(pods[m.pod], m.to_node) for m in plan.moves if m.pod in pods]
    draw = domain_power(snapshot, [*running, *added], policy)  # type: ignore[list-item]
    return {d for d, budget in budgets(snapshot).items() if draw[d] <= budget}
