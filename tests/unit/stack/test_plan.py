"""The reconcile plan, pure: made-up members, no processes, no clock."""

from inferstack.stack.plan import Add, MemberView, Retire, plan


def m(slot: int, generation: int = 1, ready: bool = True, retiring: bool = False) -> MemberView:
    return MemberView(slot, generation, ready, retiring)


def test_scale_out_adds_the_missing_replicas():
    assert plan([m(0)], desired=3, generation=1) == [Add(), Add()]
    assert plan([], desired=1, generation=1) == [Add()]


def test_scale_in_retires_the_not_ready_first_then_the_highest_slot():
    assert plan([m(0), m(1, ready=False), m(2)], desired=2, generation=1) == [Retire(1, "scale-in")]
    assert plan([m(0), m(1), m(2)], desired=1, generation=1) == [Retire(2, "scale-in"), Retire(1, "scale-in")]


def test_scale_in_never_takes_a_ready_replica_while_too_few_others_are_ready():
    # two members, one ready, desired 1: the not-ready one goes, the ready one stays
    assert plan([m(0), m(1, ready=False)], desired=1, generation=1) == [Retire(1, "scale-in")]
    # both starting: either may go (nothing serves yet)
    assert plan([m(0, ready=False), m(1, ready=False)], desired=1, generation=1) == [Retire(1, "scale-in")]


def test_to_zero_retires_every_replica():
    assert plan([m(0), m(1)], desired=0, generation=1) == [Retire(1, "scale-in"), Retire(0, "scale-in")]


def test_retiring_members_count_for_nothing():
    assert plan([m(0), m(1, retiring=True)], desired=2, generation=1) == [Add()]


def test_a_rolling_restart_surges_one_then_retires_an_old_one_once_the_new_is_ready():
    old = [m(0, generation=1), m(1, generation=1)]
    assert plan(old, desired=2, generation=2) == [Add(surge=True)]
    starting = [*old, m(2, generation=2, ready=False)]
    assert plan(starting, desired=2, generation=2) == []  # the surge is kept; no old one goes yet
    ready = [*old, m(2, generation=2)]
    assert plan(ready, desired=2, generation=2) == [Retire(1, "rolling restart to generation 2")]
    draining = [m(0, generation=1), m(1, generation=1, retiring=True), m(2, generation=2)]
    assert plan(draining, desired=2, generation=2) == []  # one rolling step at a time
    assert plan([m(0, generation=1), m(2, generation=2)], desired=2, generation=2) == [Add(surge=True)]
    assert plan([m(2, generation=2), m(3, generation=2)], desired=2, generation=2) == []  # done
