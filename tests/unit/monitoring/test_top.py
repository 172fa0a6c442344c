"""``inferstack top``'s screen from two samples (pure: the times are passed in)."""

from inferstack.commands.top import ReplicaRow, TopSample, render
from inferstack.engine.metrics import ReplicaFigures


def figures(generated: float, running: float = 2, waiting: float = 1, kv: float = 0.25) -> ReplicaFigures:
    return ReplicaFigures(running=running, waiting=waiting, kv_cache_usage=kv, spec_drafts=10,
                          spec_draft_tokens=40, spec_accepted_tokens=30, generation_tokens=generated)


def test_rates_come_from_two_samples_and_unknowns_show_as_dashes():
    first = TopSample(10.0, 1, 2, (ReplicaRow("r0", "ready", figures(1000)), ReplicaRow("r1", "starting", None)),
                      picker_waiting=0, decisions={"routed": 100, "shed": 3})
    screen = render(None, first)
    assert "replicas 1 ready / 2 desired" in screen
    r0 = next(line for line in screen.splitlines() if line.startswith("r0"))
    assert r0.split()[2:5] == ["2", "1", "25.0"] and r0.split()[5] == "-"  # no rate from one sample
    assert "decisions/s: none" in screen
    second = TopSample(12.0, 1, 2, (ReplicaRow("r0", "ready", figures(1300)), ReplicaRow("r1", "starting", None)),
                       picker_waiting=4, decisions={"routed": 110, "shed": 3, "queue_full": 2})
    screen = render(first, second)
    r0 = next(line for line in screen.splitlines() if line.startswith("r0"))
    assert r0.split()[5:] == ["150.0", "75%"]  # 300 tokens in 2 s; 30 of 40 drafted accepted
    r1 = next(line for line in screen.splitlines() if line.startswith("r1"))
    assert r1.split()[2:] == ["-", "-", "-", "-", "-%"]
    assert "4 waiting; decisions/s: queue_full 1.0, routed 5.0" in screen  # shed did not move
    assert next(line for line in screen.splitlines() if line.startswith("all")).split()[-1] == "150.0"


def test_without_a_picker_it_says_so():
    lone = TopSample(1.0, 1, 1, (ReplicaRow("r0", "ready", figures(5)),))
    assert "picker  (no gateway, or it did not answer)" in render(None, lone)
