"""The scheduling policy, pure: one pass's decision from its facts (ray_app/scheduling/policy.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_app.scheduling import priority, usage
from ray_app.scheduling.policy import Facts, Holding, Quota, Waiting, dominant_share, plan
from ray_app.scheduling.resources import Resources

CPU = Resources(cpus=1)


def waiting(job_id: str, project: str = "a", prio: int = 50, num: int = 0, cpus: float = 1, gpus: float = 0,
            beyond: bool = False) -> Waiting:
    return Waiting(job_id, project, prio, num or int(job_id.strip("jabcdefghiklmnopqrstuvwxyz") or 0),
                   Resources(cpus, gpus), beyond)


def holding(job_id: str, project: str = "a", prio: int = 50, cpus: float = 1, gpus: float = 0, started: float = 0,
            stopping: bool = False, placed: bool = True) -> Holding:
    return Holding(job_id, project, prio, Resources(cpus, gpus), started, stopping, placed)


def facts(w, h=(), free=Resources(2), total=Resources(4), **kw) -> Facts:
    return Facts(list(w), list(h), total, free, **kw)


def test_higher_priority_first_then_submission_order():
    p = plan(facts([waiting("j1", prio=20), waiting("j2", prio=80), waiting("j3", prio=50), waiting("j4", prio=80)]))
    assert [e.job_id for e in p.queue] == ["j2", "j4", "j3", "j1"]
    assert p.admitted == ["j2", "j4"]
    assert p.queue[2].reason == "waiting for 1 CPU to be free" and p.queue[2].position == 3


def test_a_blocked_job_reserves_what_it_waits_for_but_not_what_it_cannot_use():
    # the high job needs 2 CPUs, 1 is free: the low 1-CPU job must not take that one
    p = plan(facts([waiting("j1", prio=80, cpus=2), waiting("j2", prio=20, cpus=1)], free=Resources(1)))
    assert p.admitted == []
    # a GPU job waiting does not hold back a CPU job (it could not use the CPU... it asks for GPUs only)
    p = plan(facts([waiting("j1", prio=80, cpus=0, gpus=1), waiting("j2", prio=20, cpus=1)],
                   free=Resources(1, 0), total=Resources(4, 2)))
    assert p.admitted == ["j2"]


def test_quotas_hold_jobs_back_with_the_reason_and_reserve_nothing():
    quotas = {"a": Quota(max_cpus=2), "b": Quota(max_running_jobs=1)}
    p = plan(facts([waiting("j1", "a", cpus=1), waiting("j2", "a", cpus=1), waiting("j3", "b"), waiting("j4", "b"),
                    waiting("j5", "c")], [holding("r1", "a", cpus=1)], free=Resources(10), total=Resources(12),
                   quotas=quotas))
    reasons = {e.job_id: e.reason for e in p.queue}
    assert reasons["j1"] is None and reasons["j2"] == "project a: 2/2 CPUs in use"
    assert reasons["j3"] is None and reasons["j4"] == "project b: 1/1 running jobs"
    assert reasons["j5"] is None
    big = plan(facts([waiting("j1", "a", gpus=4, cpus=0)], free=Resources(0, 8), total=Resources(0, 8),
                     quotas={"a": Quota(max_gpus=2)}))
    assert big.queue[0].reason == "project a: asks for 4 GPUs, more than its quota of 2"


def test_fair_share_interleaves_projects_by_weighted_dominant_share():
    jobs = [waiting(f"j{i}", "a", num=i) for i in range(1, 7)] + [waiting(f"j{i}", "b", num=i) for i in range(7, 13)]
    p = plan(facts(jobs, free=Resources(6), total=Resources(6), quotas={"a": Quota(weight=2)}))
    admitted = p.admitted
    assert len(admitted) == 6
    assert sum(j in {f"j{i}" for i in range(1, 7)} for j in admitted) == 4  # weight 2: twice b's share
    # what a project used recently counts too: b used the whole cluster lately, a goes first
    p = plan(facts([waiting("j1", "b"), waiting("j2", "a")], free=Resources(1), recent={"b": Resources(4)}))
    assert p.admitted == ["j2"]


def test_dominant_share_is_the_largest_fraction_over_the_weight():
    assert dominant_share(Resources(2, 1), Resources(), Resources(8, 4), 1.0) == 0.25
    assert dominant_share(Resources(4, 0), Resources(), Resources(8, 4), 2.0) == 0.25
    assert dominant_share(Resources(1, 0), Resources(1, 0), Resources(4, 0), 1.0) == 0.5


def test_preemption_takes_the_cheapest_lower_priority_victims_only_as_many_as_needed():
    running = [holding("low-old", prio=20, started=1), holding("low-new", prio=20, started=5),
               holding("normal", prio=50, started=9), holding("high", prio=80, started=9)]
    p = plan(facts([waiting("j9", prio=80, cpus=1)], running, free=Resources(0), total=Resources(4)))
    assert p.preempt == [("low-new", "j9")]
    assert p.queue[0].reason.startswith("preempting low-new") and not p.queue[0].admitted
    # never equal or higher priority
    p = plan(facts([waiting("j9", prio=50, cpus=2)], running, free=Resources(0), total=Resources(4)))
    assert p.preempt == [("low-new", "j9"), ("low-old", "j9")]
    p = plan(facts([waiting("j9", prio=20, cpus=1)], running, free=Resources(0), total=Resources(4)))
    assert p.preempt == [] and p.queue[0].reason == "waiting for 1 CPU to be free"


def test_no_preemption_when_it_would_not_free_enough_or_it_is_off():
    running = [holding("low", prio=20, cpus=1)]
    p = plan(facts([waiting("j9", prio=80, cpus=3)], running, free=Resources(1), total=Resources(4)))
    assert p.preempt == []  # 1 free + 1 freed < 3
    p = plan(facts([waiting("j9", prio=80, cpus=1)], running, free=Resources(0), total=Resources(4),
                   preemption=False))
    assert p.preempt == []
    p = plan(facts([waiting("j9", prio=80, cpus=1)], running, free=Resources(0), total=Resources(4),
                   quotas={"a": Quota(preemptible=False)}))
    assert p.preempt == []


def test_resources_on_their_way_back_are_claimed_not_preempted_for_again():
    running = [holding("victim", prio=20, stopping=True), holding("low2", prio=20)]
    p = plan(facts([waiting("j9", prio=80, cpus=1), waiting("j10", prio=80, cpus=1)], running,
                   free=Resources(0), total=Resources(2)))
    assert p.queue[0].reason == "waiting for 1 CPU that stopping jobs give back"
    assert p.preempt == [("low2", "j10")]  # the second one needs its own


def test_a_job_asking_for_more_than_the_cluster_or_uncounted_resources_goes_to_ray_within_its_quota():
    p = plan(facts([waiting("j1", cpus=99, beyond=True), waiting("j2")], free=Resources(1)))
    assert p.admitted == ["j1", "j2"]
    p = plan(facts([waiting("j1", cpus=99, beyond=True)], quotas={"a": Quota(max_cpus=4)}))
    assert p.admitted == [] and "quota" in p.queue[0].reason


def test_priority_names_and_numbers():
    assert priority.parse("High") == 80 and priority.parse("7") == 7 and priority.parse(60) == 60
    for bad in ("urgent", "\u0663", "1e2", ""):  # not a level, not ASCII digits
        with pytest.raises(ValueError, match="low, normal, high"):
            priority.parse(bad)
    assert [priority.name_of(v) for v in (20, 50, 60, 80, 100, 5)] == ["low", "normal", "normal+10", "high",
                                                                         "high+20", "5"]


def test_usage_decays_with_its_half_life_and_its_rate_is_the_average_held():
    u = usage.accrue(Resources(), Resources(4, 1), 10_000 * 3600.0, 3600.0)  # held for ages
    assert usage.recent_rate(u, 3600.0).cpus == pytest.approx(4) and usage.recent_rate(u, 3600.0).gpus == pytest.approx(1)
    later = usage.accrue(u, Resources(), 3600.0, 3600.0)
    assert later.cpus == pytest.approx(u.cpus / 2)
    assert usage.accrue(u, Resources(9), 0, 3600.0) == u


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from([20, 50, 80]), st.integers(1, 3),
                          st.integers(0, 1)), max_size=25),
       st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from([20, 50, 80]), st.integers(1, 2)), max_size=6),
       st.integers(0, 6), st.integers(1, 4), st.booleans())
def test_any_pass_keeps_quotas_free_room_and_priority_order(jobs, running, free, max_cpus, preempt_on):
    ws = [Waiting(f"w{i}", p, pr, i, Resources(c, 0), False) for i, (p, pr, c, _) in enumerate(jobs)]
    hs = [Holding(f"h{i}", p, pr, Resources(c, 0), i, False, True) for i, (p, pr, c) in enumerate(running)]
    total = Resources(free + sum(c for _, _, c in running))
    quotas = {"a": Quota(max_cpus=max_cpus), "b": Quota(max_running_jobs=2)}
    p = plan(Facts(ws, hs, total, Resources(free), quotas, {}, preempt_on))
    by_id = {w.job_id: w for w in ws}
    admitted = [by_id[j] for j in p.admitted]
    # never more than is free
    assert sum(w.demand.cpus for w in admitted) <= free
    # quotas: what a project holds plus what it is given stays within them (when it was within)
    for project, q in quotas.items():
        held = [h for h in hs if h.project_id == project]
        given_ = [w for w in admitted if w.project_id == project]
        if q.max_cpus is not None and sum(h.demand.cpus for h in held) <= q.max_cpus:
            assert sum(x.demand.cpus for x in held + given_) <= q.max_cpus
        if q.max_running_jobs is not None and len(held) <= q.max_running_jobs:
            assert len(held) + len(given_) <= q.max_running_jobs
    # a job is admitted only if no earlier job in the queue (higher or equal priority) waits for room
    # it would take: every job before an admitted one that waits for room asks for more than was left
    positions = [e.priority for e in p.queue]
    assert positions == sorted(positions, reverse=True)
    # preemption: only strictly lower priority victims, never twice, only when on
    victims = [v for v, _ in p.preempt]
    assert len(victims) == len(set(victims))
    for v, for_job in p.preempt:
        assert preempt_on
        assert next(h for h in hs if h.job_id == v).priority < by_id[for_job].priority


def test_what_an_ended_job_gave_back_is_waited_for_not_preempted_for():
    # Ray shows a removed job's resources free a moment later: meanwhile no one is preempted for them
    running = [holding("low", prio=20)]
    p = plan(Facts([waiting("j9", prio=80)], running, Resources(2), Resources(0), returning=Resources(1)))
    assert p.preempt == [] and p.queue[0].reason == "waiting for 1 CPU that stopping jobs give back"
