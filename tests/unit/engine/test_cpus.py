import pytest

from inferstack.engine.cpus import plan_core_sets


@pytest.mark.parametrize(
    ("replicas", "cores", "per", "expected"),
    [
        (1, [0, 1], None, [[0, 1]]),
        (2, [0, 1], None, [[0], [1]]),
        (3, [0, 1], None, [[0], [1], [0]]),
        (2, [0, 1, 2, 3, 4], None, [[0, 1], [2, 3]]),
        (2, [0, 1, 2, 3], 1, [[0], [1]]),
        (2, [0, 1, 2, 3], 9, [[0, 1], [2, 3]]),
        (2, [], None, [[], []]),
    ],
)
def test_plan_core_sets(replicas, cores, per, expected):
    assert plan_core_sets(replicas, cores, per) == expected


def test_core_sets_never_overlap_when_cores_suffice():
    sets = plan_core_sets(4, list(range(8)))
    flat = [c for s in sets for c in s]
    assert len(flat) == len(set(flat)) == 8


def test_zero_replicas_is_an_error():
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        plan_core_sets(0, [0])
