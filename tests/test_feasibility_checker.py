"""The feasibility checker catches every kind of broken plan and accepts a sound one.

The checker is the oracle for the planner's tests, so each rule gets a hand-made plan that breaks
exactly that rule next to a plan that keeps it.
"""

from __future__ import annotations

import pytest
from builders import (
    H100,
    L40,
    bind,
    domain,
    evict,
    gang,
    move,
    node,
    plan_of,
    pod,
    policy,
    snapshot,
)

from scheduler.verify import check_plan, explanation_problems, final_placement, gpu_allocation

# n1: 4 H100 (GPU 3 degraded), n2: 2 L40, n3: cordoned; a running low-priority job on n1 GPU 0.
SNAP = snapshot(
    [
        node("n1", 4, cpu=16_000, mem=65_536, health={3: "degraded", 2: "suspect"}),
        node("n2", 2, model="L40"),
        node("n3", 2, cordoned=True),
    ],
    [
        pod("old", on=("n1", [0]), priority=-10),
        pod("serve", "inference", on=("n2", [0]), app="chat"),
        pod("locked", on=("n2", [1]), preemptible=False, priority=-10),
        pod("a"),
        pod("b", gpus=2),
        pod("big", gpus=4, priority=50),
        pod("f1", "inference", milli=600),
        pod("f2", "inference", milli=500),
        pod("cpu-hog", cpu=20_000),
        pod("needs-l40", models=("L40",)),
        pod("chat-2", "inference", app="chat", max_per_node=1),
    ],
    models=[H100, L40],
)
POLICY = policy()


def problems(*bindings, evictions=(), moves=(), snap=SNAP, pol=POLICY) -> list[str]:
    return check_plan(snap, pol, plan_of(list(bindings), list(evictions), list(moves)))


def assert_one(found: list[str], *words: str) -> None:
    assert len(found) >= 1, "expected a violation"
    assert any(all(w in p for w in words) for p in found), found


def test_a_sound_plan_passes():
    assert problems() == []
    # "a" takes the last free healthy GPU; "f1" takes a share of the GPU "old" leaves.
    sound = [bind("a", "n1", 1), bind("f1", "n1", 0)]
    assert problems(*sound, evictions=[evict("old", "n1")]) == []


def test_unknown_pod_and_running_pod_and_double_binding():
    assert_one(problems(bind("ghost", "n1", 1)), "unknown pod")
    assert_one(problems(bind("old", "n1", 1)), "not pending")
    assert_one(problems(bind("a", "n1", 1), bind("a", "n1", 1)), "bound 2 times")


def test_unknown_and_cordoned_nodes():
    assert_one(problems(bind("a", "n9", 0)), "unknown node")
    assert_one(problems(bind("a", "n3", 0)), "cordoned")


@pytest.mark.parametrize(
    ("binding", "words"),
    [
        (bind("a", "n1", 7), ("does not exist",)),
        (bind("b", "n1", 1), ("not 2 distinct",)),
        (bind("b", "n1", 1, 1), ("not 2 distinct",)),
        (bind("f1", "n1", 1, 2), ("not 1 distinct",)),
        (bind("f1", "n1"), ("not 1 distinct",)),
    ],
)
def test_gpu_indices_must_exist_and_match_the_request(binding, words):
    assert_one(problems(binding), *words)


def test_whole_gpus_are_exclusive():
    assert_one(problems(bind("a", "n1", 0)), "held whole by 2 pods")


def test_shares_fit_in_one_gpu_and_never_beside_a_whole_gpu_pod():
    assert_one(problems(bind("f1", "n1", 1), bind("f2", "n1", 1)), "1100 milli-GPU")
    assert_one(problems(bind("f1", "n1", 0)), "shared by")
    assert problems(bind("f2", "n1", 1), bind("chat-2", "n2", 0)) != []  # n2/0 is whole
    assert problems(bind("f2", "n1", 1)) == []


def test_new_work_only_on_gpus_that_take_it():
    assert_one(problems(bind("a", "n1", 3)), "degraded")
    assert_one(problems(bind("a", "n1", 2)), "suspect")
    assert problems(bind("a", "n1", 2), pol=policy(newWorkOn=["healthy", "suspect"])) == []


def test_running_pods_on_unhealthy_gpus_may_stay():
    snap = snapshot([node("n", 2, health={0: "failed"})], [pod("r", on=("n", [0])), pod("p")])
    assert check_plan(snap, POLICY, plan_of([bind("p", "n", 1)])) == []


def test_node_cpu_and_memory():
    assert_one(problems(bind("cpu-hog", "n1", 1)), "cpuMilli 20000 > capacity 16000")
    snap = snapshot([node("n", 2, mem=1000)], [pod("m", mem=600, on=("n", [0])), pod("p", mem=500)])
    assert_one(check_plan(snap, POLICY, plan_of([bind("p", "n", 1)])), "memoryMiB 1100")


def test_gpu_model_constraint():
    assert_one(problems(bind("needs-l40", "n1", 1)), "wants ['L40']")
    snap = snapshot(
        [node("h", 1), node("l", 1, model="L40")], [pod("p", models=("L40",))], models=[H100, L40]
    )
    assert check_plan(snap, POLICY, plan_of([bind("p", "l", 0)])) == []


def test_gangs_are_all_or_nothing():
    snap = snapshot([node("n", 2), node("m", 2)], gang("g", 3, gpus=1))
    assert_one(check_plan(snap, POLICY, plan_of([bind("g-0", "n", 0)])), "1 of 3 members")
    whole = [bind("g-0", "n", 0), bind("g-1", "n", 1), bind("g-2", "m", 0)]
    assert check_plan(snap, POLICY, plan_of(whole)) == []


def test_evicting_one_member_of_a_running_gang_breaks_it():
    members = [
        pod("g-0", gang=("g", 2), on=("n", [0]), priority=-5),
        pod("g-1", gang=("g", 2), on=("n", [1]), priority=-5),
        pod("hi", priority=10),
    ]
    snap = snapshot([node("n", 2)], members)
    found = check_plan(snap, POLICY, plan_of([bind("hi", "n", 0)], [evict("g-0", "n")]))
    assert_one(found, "gang default/g", "1 of 2")


def test_max_per_node_counts_only_the_app_and_includes_running_pods():
    assert_one(problems(bind("chat-2", "n2", 0)), "2 pods of app chat > maxPerNode 1")
    assert problems(bind("chat-2", "n1", 1)) == []


def test_policy_spreads_inference_without_its_own_limit():
    pods = [pod(f"r{i}", "inference", app="web") for i in range(2)] + [pod("t", app="web")]
    snap = snapshot([node("n", 4)], pods)
    both = plan_of([bind("r0", "n", 0), bind("r1", "n", 1)])
    assert check_plan(snap, POLICY, both) == []
    assert_one(check_plan(snap, policy(inferenceMaxPerNode=1), both), "maxPerNode 1")
    # Training pods of the app count toward the app but are not limited by the inference rule.
    mixed = plan_of([bind("r0", "n", 0), bind("t", "n", 1)])
    assert_one(check_plan(snap, policy(inferenceMaxPerNode=1), mixed), "maxPerNode 1")


def test_power_budgets_hold_in_every_domain_up_the_tree():
    # 2 H100s idle at 200 W; a training GPU adds 600 W, an inference GPU 360 W.
    domains = [domain("dc", 1_000), domain("rack", None, "dc")]
    snap = snapshot(
        [node("n", 2)], [pod("t"), pod("i", "inference"), pod("j", "inference")], domains=domains
    )
    assert check_plan(snap, POLICY, plan_of([bind("t", "n", 0)])) == []
    assert check_plan(snap, POLICY, plan_of([bind("i", "n", 0), bind("j", "n", 1)])) == []
    over = plan_of([bind("t", "n", 0), bind("i", "n", 1)])
    assert check_plan(snap, POLICY, over) == ["power domain dc: draws 1160 W > budget 1000 W"]


def test_evictions_follow_the_preemption_rules():
    ok = [bind("a", "n1", 0)]
    assert problems(*ok, evictions=[evict("old", "n1")]) == []
    assert_one(problems(*ok, evictions=[evict("a", "n1")]), "not running")
    assert_one(problems(*ok, evictions=[evict("old", "n2")]), "runs on n1")
    assert_one(
        problems(*ok, evictions=[evict("old", "n1")], pol=policy(preemption=False)),
        "preemption is off",
    )
    assert_one(
        problems(bind("big", "n2", 0, 1), evictions=[evict("locked", "n2")]), "not preemptible"
    )
    hi = bind("needs-l40", "n2", 0)
    assert_one(problems(hi, evictions=[evict("serve", "n2")]), "preemptInference is off")


def test_evictions_need_a_higher_priority_beneficiary_nearby():
    # "a" (priority 0) cannot justify evicting "serve" (priority 0): not strictly higher.
    pol = policy(preemptInference=True)
    assert_one(
        problems(bind("a", "n2", 0), evictions=[evict("serve", "n2")], pol=pol),
        "no newly bound pod",
    )
    # A higher-priority binding elsewhere, with no shared budget, gains nothing from the eviction.
    snap = snapshot(
        [node("n", 1), node("m", 1)], [pod("low", on=("n", [0]), priority=-1), pod("hi")]
    )
    far = plan_of([bind("hi", "m", 0)], [evict("low", "n")])
    assert_one(check_plan(snap, POLICY, far), "no newly bound pod")
    budgeted = snapshot(
        [node("n", 1), node("m", 1)],
        [pod("low", on=("n", [0]), priority=-1), pod("hi")],
        domains=[domain("rack", 900)],
    )
    assert check_plan(budgeted, POLICY, far) == []


def test_a_gang_leaves_whole_when_one_member_makes_room():
    members = [
        pod("g-0", gang=("g", 2), on=("n", [0]), priority=-5),
        pod("g-1", gang=("g", 2), on=("m", [0]), priority=-5),
        pod("hi", priority=10),
    ]
    snap = snapshot([node("n", 1), node("m", 1)], members)
    plan = plan_of([bind("hi", "n", 0)], [evict("g-0", "n"), evict("g-1", "m")])
    assert check_plan(snap, POLICY, plan) == []


def test_moves_relocate_running_pods():
    assert problems(bind("a", "n1", 0), moves=[move("old", "n1", "n1", 1)]) == []
    assert_one(problems(moves=[move("old", "n1", "n3", 0)]), "cordoned")
    assert_one(problems(moves=[move("old", "n2", "n1", 1)]), "runs on n1")
    assert_one(problems(moves=[move("a", "n1", "n1", 1)]), "not running")
    assert_one(problems(moves=[move("old", "n1", "n1", 3)]), "degraded")


def test_final_placement_and_allocation():
    plan = plan_of([bind("a", "n1", 1), bind("f2", "n1", 2)], [evict("old", "n1")])
    final = final_placement(SNAP, plan)
    assert final == {
        "default/serve": ("n2", (0,)),
        "default/locked": ("n2", (1,)),
        "default/a": ("n1", (1,)),
        "default/f2": ("n1", (2,)),
    }
    # 3.5 GPUs in use over the 4 that take work: n1/0, n1/1 and both L40s.
    assert gpu_allocation(SNAP, POLICY, final) == pytest.approx(3.5 / 4)


def test_pending_pods_need_reasons():
    snap = snapshot([node("n", 1)], [pod("p"), pod("q")])
    plan = plan_of([bind("p", "n", 0)])
    assert explanation_problems(snap, plan) == ["default/q: stays pending without a reason"]


def _over_budget_before():
    # The running pod alone draws 2 x idle + its work: more than the budget, lowered under it.
    nodes = [node("n", 2)]
    pods = [pod("old", on=("n", [0]), preemptible=False), pod("new")]
    return snapshot(nodes, pods, domains=[domain("rack", budget=500)])


def test_a_domain_over_budget_before_the_plan_is_not_the_plans_fault():
    snap = _over_budget_before()
    assert check_plan(snap, policy(), plan_of()) == []


def test_a_plan_may_not_add_load_to_a_domain_already_over_budget():
    snap = _over_budget_before()
    problems = check_plan(snap, policy(), plan_of([bind("new", "n", 1)]))
    assert any("power domain rack" in p and "before the plan" in p for p in problems)
