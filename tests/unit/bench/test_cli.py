from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import inferstack.bench as bench
from inferstack.commands import bench as cli
from inferstack.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="command", required=True))
    return p


def test_bench_flags_become_settings(tmp_path: Path) -> None:
    args = _parser().parse_args(
        ["bench", "--profile", "poisson", "--rate", "3", "--duration", "5", "--stages", "2",
         "--dataset", "shared-prefix", "--target", "http://127.0.0.1:8101", "--output", str(tmp_path / "r"),
         "--metrics-url", "http://127.0.0.1:8101", "--metrics-url", "http://127.0.0.1:8102"]
    )
    s = cli.settings_from_args(args)
    assert (s.profile, s.rate, s.duration_s, s.stages, s.dataset) == ("poisson", 3.0, 5, 2, "shared-prefix")
    assert s.metrics_urls == ("http://127.0.0.1:8101", "http://127.0.0.1:8102")
    assert args.func.__name__ == "_bench"


def test_bad_flags_are_config_errors(tmp_path: Path) -> None:
    args = _parser().parse_args(["bench", "--profile", "constant", "--target", "http://x", "--output", str(tmp_path)])
    with pytest.raises(ConfigError, match="needs --rate"):
        cli.settings_from_args(args)
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "--profile", "ramp", "--output", "x"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "--target", "http://x"])  # --output is required


def test_report_argument_errors(tmp_path: Path, run_ngram: Path) -> None:
    p = _parser()
    with pytest.raises(ConfigError, match="at least one RUN_DIR"):
        cli._report(p.parse_args(["report"]))
    with pytest.raises(ConfigError, match="--output"):
        cli._report(p.parse_args(["report", str(run_ngram)]))
    with pytest.raises(ConfigError, match="takes no other run directories"):
        cli._report(p.parse_args(["report", str(run_ngram), "--compare", str(run_ngram), str(run_ngram)]))


def test_report_and_compare_print_markdown(tmp_path: Path, run_ngram: Path, run_none: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    p = _parser()
    assert cli._report(p.parse_args(["report", str(run_ngram), "--output", str(tmp_path / "out")])) == 0
    assert "| stage |" in capsys.readouterr().out and (tmp_path / "out" / "index.html").exists()
    assert cli._report(p.parse_args(["report", "--compare", str(run_none), str(run_ngram)])) == 0
    assert "out tok/s B/A" in capsys.readouterr().out


def test_public_names() -> None:
    for name in bench.__all__:
        assert hasattr(bench, name)


def test_without_target_the_running_stack_supplies_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferstack.bench.stack import local_stack_defaults

    monkeypatch.setenv("INFERSTACK_STATE", str(tmp_path / "state"))
    args = _parser().parse_args(["bench", "--output", str(tmp_path / "r")])
    with pytest.raises(ConfigError, match="no running local stack"):
        cli.settings_from_args(args)
    from inferstack.stack.status import ReplicaStatus, StackStatus

    def replica(name: str, url: str) -> ReplicaStatus:
        return ReplicaStatus(name=name, url=url, port=int(url.rstrip("/").rsplit(":", 1)[1]), pid=1, state="ready",
                             generation=1, retiring=False, restarts=0, last_exit=None, started_at=0.0,
                             ready_at=1.0, cores=[0], log="r.log")

    state = StackStatus(
        state="ready", supervisor_pid=1, started_at=0.0, base_url="http://127.0.0.1:8080/v1",
        model="smollm2-135m-instruct", model_source=str(tmp_path), speculative="ngram", dtype="float32",
        dtype_reason="default", config_path=None, endpoints_file="e.json", desired_replicas=2, ready_replicas=2,
        generation=1, replicas=[replica("r0", "http://127.0.0.1:8101"), replica("r1", "http://127.0.0.1:8102/")])
    assert local_stack_defaults(state).routing == "direct"
    state.gateway = _gateway_status()
    d = local_stack_defaults(state)
    assert d.target == "http://127.0.0.1:8080" and d.tokenizer == tmp_path
    assert d.metrics_urls == ("http://127.0.0.1:8101", "http://127.0.0.1:8102")
    assert d.spec_method == "ngram" and d.routing.startswith("gateway")


def test_rate_list_gives_every_stage(tmp_path: Path) -> None:
    args = _parser().parse_args(["bench", "--profile", "constant", "--rate", "1,2.5,4", "--target", "http://x",
                                 "--output", str(tmp_path)])
    s = cli.settings_from_args(args)
    assert s.stage_levels() == [1.0, 2.5, 4.0] and s.rate is None
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "--rate", "fast", "--output", "x"])


def _gateway_status():  # type: ignore[no-untyped-def]
    from inferstack.gateway.runtime import EnvoyStatus, EppStatus, GatewayStatus

    return GatewayStatus(state="running", url="http://127.0.0.1:8080", base_url="http://127.0.0.1:8080/v1",
                         run_dir="run", envoy=EnvoyStatus(pid=2, state="running", restarts=0, log="e.log", port=8080,
                                                          admin_port=9901),
                         epp=EppStatus(pid=3, state="running", restarts=0, log="p.log", grpc_port=9002,
                                       metrics_port=9090), epp_failure_mode="closed")
