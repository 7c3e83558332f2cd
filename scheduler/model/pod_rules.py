"""Where a pod may go relative to other pods, as data: required inter-pod affinity and
anti-affinity, and topology spread constraints that do not schedule (DoNotSchedule), with
kube-scheduler's meaning (InterPodAffinity, PodTopologySpread). The rules that read them are
scheduler.fit.pod_rules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scheduler.model import limits as lim
from scheduler.model.base import Wire
from scheduler.model.node_rules import Requirement


class LabelSelector(Wire):
    """A label selector: every label and expression holds (an empty selector selects every
    pod; where a selector is null, it selects none)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[Requirement] = Field(
        default_factory=list, description="In | NotIn | Exists | DoesNotExist."
    )

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def keys(self) -> set[str]:
        return set(self.match_labels) | {r.key for r in self.match_expressions}

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )


def selects(selector: LabelSelector | None, labels: dict[str, str]) -> bool:
    return selector is not None and selector.matches(labels)


class PodAffinityTerm(Wire):
    """Pods matching the selector, in the namespaces named, on nodes in the same topology
    domain (nodes with the same value of the topology key)."""

    label_selector: LabelSelector | None = Field(
        default=None, description="Pods it is about; null: none."
    )
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces of those pods; empty with a null namespaceSelector: the pod's own.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces by their labels (the snapshot's namespaceLabels), added to "
        "namespaces; {} selects every namespace.",
    )
    topology_key: str = Field(min_length=1, description="Node label that names the domain.")

    def keys(self) -> set[str]:
        return self.label_selector.keys() if self.label_selector else set()

    def selects(
        self,
        owner_ns: str,
        pod_ns: str,
        pod_labels: dict[str, str],
        ns_labels: dict[str, dict[str, str]],
    ) -> bool:
        """Whether the term, written in a pod of namespace owner_ns, is about this pod."""
        if not self.namespaces and self.namespace_selector is None:
            in_scope = pod_ns == owner_ns
        else:
            in_scope = pod_ns in self.namespaces or selects(
                self.namespace_selector, ns_labels.get(pod_ns, {})
            )
        return in_scope and selects(self.label_selector, pod_labels)


class SpreadConstraint(Wire):
    """A topology spread constraint with whenUnsatisfiable DoNotSchedule."""

    max_skew: int = Field(
        ge=1, le=lim.MAX_PODS, description="Most matching pods a domain may have above the least."
    )
    topology_key: str = Field(min_length=1, description="Node label that names the domain.")
    label_selector: LabelSelector | None = Field(
        default=None, description="Pods it counts; null: none (then it never refuses)."
    )
    min_domains: int | None = Field(
        default=None,
        ge=1,
        le=lim.MAX_NODES,
        description="Fewer eligible domains than this: the least count is taken as 0.",
    )
    node_affinity_policy: Literal["Honor", "Ignore"] = Field(
        default="Honor",
        description="Honor: only nodes the pod's nodeSelector and node affinity allow count.",
    )
    node_taints_policy: Literal["Honor", "Ignore"] = Field(
        default="Ignore", description="Honor: only nodes whose taints the pod tolerates count."
    )

    def keys(self) -> set[str]:
        return self.label_selector.keys() if self.label_selector else set()
