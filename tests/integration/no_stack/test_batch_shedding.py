"""Batch lines are the picker's lowest priority: real Envoy + our EPP + the batch service in front of
echo backends whose /metrics the test sets. Saturated: every batch line is shed (429) and waits while
online requests are served; room again: the batch completes, each line once. No LLM (fast)."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest
from test_gateway_support import (
    echo_backends,
    epp_gauge,
    gateway_and_batch_service,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_saturation_sheds_batch_lines_first_then_the_batch_completes(tmp_path):
    with echo_backends(2) as backends:
        addrs = [a for a, _ in backends]
        with gateway_and_batch_service(tmp_path, addrs, epp={"saturation": {
                "queue_depth_threshold": 3, "metrics_staleness_ms": 500}}, batch={}) as (gw, svc):
            for a in addrs:
                httpx.post(f"http://{a}/admin/metrics", json={"waiting": 10})
            for a in addrs:
                wait_until(lambda a=a: epp_gauge(gw, "inferstack_epp_endpoint_queue_requests", a) == 10.0,
                           what="EPP to scrape the saturated queues")
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="none", max_retries=0)
            data = b"".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": {"model": "echo", "messages": [{"role": "user", "content": str(i)}]}
                                        }).encode() + b"\n" for i in range(20))
            f = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
            wait_until(lambda: httpx.get(f"{svc.url}/health").json()["shed"] >= 3, what="batch lines to be shed")
            assert client.batches.retrieve(b.id).request_counts.completed == 0
            online = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
            assert online.choices[0].message.content  # priority 0 is served while batch lines wait
            for a in addrs:
                httpx.post(f"http://{a}/admin/metrics", json={"waiting": 0})
            deadline = time.monotonic() + 30
            while (b := client.batches.retrieve(b.id)).status != "completed":
                assert time.monotonic() < deadline, b
                time.sleep(0.1)
            assert b.request_counts.completed == 20 and b.request_counts.failed == 0
            ids = [json.loads(x)["custom_id"] for x in client.files.content(b.output_file_id).text.splitlines()]
            assert ids == [f"c{i}" for i in range(20)]
