"""The policy simulator: traces, the queue model, determinism, the report and the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferstack.autoscale import SimSettings, load_trace, parse_policy, simulate
from inferstack.autoscale.report import CHARTS, write_report
from inferstack.autoscale.simulate import Trace
from inferstack.cli import main
from inferstack.errors import ConfigError


def test_builtin_traces() -> None:
    bursty = load_trace("bursty")
    assert bursty.duration_s == 1200 and bursty.rate_at(0) == 3.0 and bursty.rate_at(130) == 8.0
    assert bursty.rate_at(1199) == 2.0
    diurnal = load_trace("diurnal")
    assert diurnal.rate_at(0) == 1.0 and max(r for _, r in diurnal.points) == pytest.approx(11.0)


def test_csv_trace(tmp_path: Path) -> None:
    path = tmp_path / "spike.csv"
    path.write_text("time_s,rate_rps\n0,1\n60,9\n120,1\n180,0\n")
    trace = load_trace(str(path))
    assert trace.name == "spike" and trace.duration_s == 180
    assert [trace.rate_at(t) for t in (0, 59, 60, 179)] == [1, 1, 9, 1]
    path.write_text("0,1\n60,x\n")
    with pytest.raises(ConfigError, match="line 2: expected 'time_s,rate_rps'"):
        load_trace(str(path))
    with pytest.raises(ConfigError, match="neither bursty nor diurnal"):
        load_trace(str(tmp_path / "missing.csv"))


def test_enough_capacity_meets_the_slo_and_stays_at_min() -> None:
    trace = Trace("flat", ((0.0, 2.0),), 300.0)
    result = simulate(trace, parse_policy("waiting:3"), SimSettings(seed=None))
    assert result.slo_attainment == 1.0
    assert set(result.replicas) == {1} and result.replica_seconds == 300
    assert result.requests == pytest.approx(600)


def test_overload_without_headroom_builds_a_queue_and_misses_the_slo() -> None:
    trace = Trace("over", ((0.0, 9.0),), 120.0)
    result = simulate(trace, parse_policy("waiting:3,max=1"), SimSettings(seed=None))
    assert result.queue[-1] == pytest.approx(120 * (9 - 4.5))
    assert result.slo_attainment < 0.2


def test_scale_up_waits_for_startup_and_serves_after() -> None:
    trace = Trace("step", ((0.0, 2.0), (60.0, 8.0)), 300.0)
    result = simulate(trace, parse_policy("waiting:3,max=3"), SimSettings(seed=None, startup_s=30))
    first = next(d for d in result.decisions if d.rescale)
    assert first.at == 75.0 and first.desired_replicas == 3  # the first sync after the queue builds
    assert result.replicas[76] == 3 and result.ready[76] == 1 and result.ready[105] == 3
    assert "vllm:num_requests_waiting avg" in first.message()


def test_same_inputs_give_the_same_numbers() -> None:
    trace = load_trace("bursty")
    a = simulate(trace, parse_policy("waiting:5"))
    b = simulate(trace, parse_policy("waiting:5"))
    assert (a.replica_seconds, a.met, a.requests) == (b.replica_seconds, b.met, b.requests)
    c = simulate(trace, parse_policy("waiting:5"), SimSettings(seed=7))
    assert c.requests != a.requests  # another seed, other arrivals


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="capacity_rps has value 0"):
        SimSettings(capacity_rps=0)


def test_report_files(tmp_path: Path) -> None:
    trace = Trace("short", ((0.0, 3.0), (30.0, 12.0)), 120.0)
    results = [simulate(trace, parse_policy(p)) for p in ("waiting:3", "running:8")]
    files = write_report(trace, SimSettings(), results, tmp_path)
    assert [f.name for f in files] == [*CHARTS, "index.html"]
    page = (tmp_path / "index.html").read_text()
    assert "waiting:3" in page and "running:8" in page and "data:image/png;base64," in page


def test_cli_simulate_prints_replica_seconds_and_slo_per_policy(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code = main(["autoscale", "simulate", "--trace", "bursty", "--output", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line for line in out.splitlines() if "replica-seconds" in line]
    assert [line.split(":", 2)[0] + ":" + line.split(":", 2)[1] for line in lines] == [
        "waiting:3", "waiting:5", "waiting:10"]
    assert all("SLO attainment" in line for line in lines)
    assert (tmp_path / "index.html").exists() and all((tmp_path / c).exists() for c in CHARTS)


def test_cli_policy_file_and_bad_policy(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pol = tmp_path / "conservative.yaml"
    pol.write_text("autoscaling:\n  max_replicas: 4\n  metric: waiting\n  target: 3\n  behavior:\n"
                   "    scale_up: {policies: [{type: Pods, value: 1, period_s: 60}]}\n")
    code = main(["autoscale", "simulate", "--trace", "diurnal", "--policy", str(pol), "--policy", "kv:0.8",
                 "--output", str(tmp_path / "out"), "--fluid"])
    out, _ = capsys.readouterr()
    assert code == 0 and "conservative: replica-seconds" in out and "kv:0.8: replica-seconds" in out
    code = main(["autoscale", "simulate", "--trace", "bursty", "--policy", "wating:3", "--output", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and "unknown metric 'wating'" in err
