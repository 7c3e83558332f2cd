"""Where a pod may go, as data: nodes' labels and taints, and pods' tolerations, node selectors
and required node affinity, with kube-scheduler's meaning (TaintToleration, NodeAffinity). The
rules that read them are scheduler.fit.filters."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from scheduler.model.base import Wire


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"  # no new pod that does not tolerate it
    PREFER_NO_SCHEDULE = "PreferNoSchedule"  # a preference only: never filters
    NO_EXECUTE = "NoExecute"  # no new pod, and running ones are evicted (by the kubelet)


class Taint(Wire):
    key: str = Field(description="Taint key, e.g. nvidia.com/gpu.")
    value: str = Field(default="", description="Taint value.")
    effect: TaintEffect = Field(description="NoSchedule | PreferNoSchedule | NoExecute.")


class Toleration(Wire):
    key: str = Field(default="", description="Taint key; empty with Exists: every taint.")
    operator: str = Field(
        default="Equal", pattern="^(Equal|Exists)$", description="Equal | Exists."
    )
    value: str = Field(default="", description="With Equal: the taint's value.")
    effect: TaintEffect | None = Field(default=None, description="Effect; null: every effect.")

    def tolerates(self, taint: Taint) -> bool:
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.value == taint.value


class Requirement(Wire):
    """One expression of a node selector term (NodeSelectorRequirement)."""

    key: str = Field(description="Label key; in matchFields, metadata.name.")
    operator: str = Field(
        pattern="^(In|NotIn|Exists|DoesNotExist|Gt|Lt)$",
        description="In | NotIn | Exists | DoesNotExist | Gt | Lt.",
    )
    values: list[str] = Field(default_factory=list, description="Values (one integer for Gt/Lt).")

    def matches(self, labels: dict[str, str]) -> bool:
        op, value = self.operator, labels.get(self.key)
        if op == "In":
            return value is not None and value in self.values
        if op == "NotIn":
            return value is None or value not in self.values
        if op == "Exists":
            return value is not None
        if op == "DoesNotExist":
            return value is None
        try:  # Gt, Lt: both sides integers, else no match
            have, want = int(value or ""), int(self.values[0])
        except (ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want


class SelectorTerm(Wire):
    """A node selector term: every expression and field requirement holds (an empty term
    matches no node, as in Kubernetes)."""

    match_expressions: list[Requirement] = Field(default_factory=list)
    match_fields: list[Requirement] = Field(
        default_factory=list, description="Only metadata.name, with In or NotIn."
    )

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        if not self.match_expressions and not self.match_fields:
            return False
        fields = {"metadata.name": name}
        return all(r.matches(labels) for r in self.match_expressions) and all(
            r.matches(fields) for r in self.match_fields
        )


class PreferredTerm(Wire):
    """A preferred node affinity term: nodes matching it are preferred, by its weight."""

    weight: int = Field(ge=1, le=100, description="1..100: how much it counts.")
    preference: SelectorTerm = Field(description="The nodes it prefers.")


class HostPort(Wire):
    """A container port bound on the node (hostPort): kube-scheduler's NodePorts filter keeps
    two pods that would bind the same one off the same node."""

    port: int = Field(ge=1, le=65535, description="The node's port.")
    protocol: str = Field(
        default="TCP", pattern="^(TCP|UDP|SCTP)$", description="TCP | UDP | SCTP."
    )
    host_ip: str = Field(default="", description="The node address it binds; empty: all.")

    def conflicts(self, other: HostPort) -> bool:
        if self.port != other.port or self.protocol != other.protocol:
            return False
        wild = ("", "0.0.0.0", "::")
        return self.host_ip in wild or other.host_ip in wild or self.host_ip == other.host_ip
