"""The /metrics sampler against a real local HTTP server serving a recorded vLLM page."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferstack.bench.sampler import KEPT_METRICS, MetricsSampler, read_samples
from inferstack.engine.metrics import parse_series


def test_parse_keeps_only_the_vllm_series_we_attribute(fixtures_dir: Path) -> None:
    series = parse_series((fixtures_dir / "metrics-none.txt").read_text(), KEPT_METRICS)
    assert series["vllm:generation_tokens_total"] > 0
    assert series['vllm:request_success_total{finished_reason="length"}'] > 0
    assert 'vllm:time_to_first_token_seconds_bucket{le="+Inf"}' in series
    assert not [k for k in series if k.endswith("_created") or not k.startswith("vllm:")]
    assert not [k for k in series if "engine=" in k or "model_name=" in k]
    assert "vllm:iteration_tokens_total_count" not in series  # not kept


class _Page:
    text = ""
    status = 200


@pytest.fixture
def metrics_server(fixtures_dir: Path) -> Iterator[tuple[str, type[_Page]]]:
    page = _Page
    page.text = (fixtures_dir / "metrics-none.txt").read_text()
    page.status = 200

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = page.text.encode()
            self.send_response(page.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", page
    srv.shutdown()
    srv.server_close()
    t.join()


def _wait_for(pred, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_sampler_writes_deltas_that_read_back_as_full_series(tmp_path: Path, metrics_server) -> None:  # type: ignore[no-untyped-def]
    url, page = metrics_server
    out = tmp_path / "s.jsonl"
    sampler = MetricsSampler([url], out, interval_s=0.02)
    with sampler:
        _wait_for(lambda: sampler.samples_written >= 3)
        page.text = page.text.replace(
            'vllm:generation_tokens_total{engine="0",model_name="smollm2-135m-instruct"}',
            'vllm:generation_tokens_total{engine="0",model_name="smollm2-135m-instruct"} 99999.0\n#',
        )
        n = sampler.samples_written
        _wait_for(lambda: sampler.samples_written >= n + 2)
        page.status = 500
        n = sampler.samples_written
        _wait_for(lambda: sampler.samples_written >= n + 2)
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert raw[0]["ok"] and "delta" not in raw[0]
    assert any(r.get("delta") and r["series"] == {} for r in raw)  # unchanged page: empty delta
    assert any(not r["ok"] for r in raw)  # a failed scrape is recorded, sampling went on
    full = [r for r in read_samples(out) if r["ok"]]
    assert all(len(r["series"]) == len(full[0]["series"]) for r in full)
    assert full[-1]["series"]["vllm:generation_tokens_total"] == 99999.0
    assert full[0]["series"]["vllm:generation_tokens_total"] != 99999.0


def test_unreachable_replica_is_recorded_not_raised(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    with MetricsSampler(["http://127.0.0.1:9"], out, interval_s=0.05, scrape_timeout_s=0.5) as s:
        _wait_for(lambda: s.samples_written >= 1)
    recs = list(read_samples(out))
    assert recs and not recs[0]["ok"] and recs[0]["error"]


def test_torn_last_line_is_skipped(tmp_path: Path, fixtures_dir: Path) -> None:
    src = (fixtures_dir / "run-ngram" / "server_metrics.jsonl").read_text()
    path = tmp_path / "s.jsonl"
    path.write_text(src + '{"t": 1, "repl')
    assert len(list(read_samples(path))) == len(src.splitlines())


def test_unusable_page_is_recorded_as_a_failed_sample(tmp_path: Path, metrics_server) -> None:  # type: ignore[no-untyped-def]
    url, page = metrics_server
    good = page.text
    out = tmp_path / "s.jsonl"
    with MetricsSampler([url], out, interval_s=0.02) as sampler:
        _wait_for(lambda: sampler.samples_written >= 1)
        page.text = "<html><body>502 Bad Gateway</body></html>\n"
        n = sampler.samples_written
        _wait_for(lambda: sampler.samples_written >= n + 2)
        page.text = good.replace('vllm:prompt_tokens_total{engine="0",model_name="smollm2-135m-instruct"}',
                                 'vllm:prompt_tokens_total{engine="0",model_name="smollm2-135m-instruct"')
        n = sampler.samples_written
        _wait_for(lambda: sampler.samples_written >= n + 2)
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert raw[0]["ok"]
    errors = [r["error"] for r in raw if not r["ok"]]
    assert any("no vLLM series" in e for e in errors)
    assert any("vllm:prompt_tokens_total" in e for e in errors)  # a malformed kept line spoils the sample
