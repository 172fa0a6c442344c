"""Never blank: on the shared real stack with monitoring on, under load, every dashboard panel
query, recording rule, alert signal and rendered HPA metric returns data from the live Prometheus
(the stack's own, scraping the replicas, the picker, Envoy, the batch service and the supervisor).
A metric renamed in vLLM or in our code fails here."""

from __future__ import annotations

import io
import json
import math
import time

import httpx
import openai
from stackutil import BackgroundLoad, chat, run_cli
from test_serving import COPY_PROMPT

from inferstack.autoscale.policy import METRICS
from inferstack.monitoring import ALERTS, RECORDING_RULES, panel_queries

# vLLM series the rendered HPA / KEDA objects read per pod (the pool metric `epp-queue` is the
# upstream picker's, which the local stack does not run)
HPA_SERIES = [f"sum({m.name})" for m in METRICS.values() if m.kind == "pods"]


def _query(prometheus: str, expr: str) -> list[float]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    return [float(item["value"][1]) for item in r.json()["data"]["result"]]


def test_every_panel_rule_alert_and_hpa_query_has_data_under_load(stack):
    started = time.monotonic()
    status = json.loads(run_cli("status", "--json", env=stack.env).stdout)
    prometheus = status["monitoring"]["url"]
    assert httpx.get(f"{prometheus}/-/ready", timeout=5).status_code == 200
    queries = {f"panel {d} / {p}: {q}": q for d, p, q in panel_queries()}
    queries |= {f"rule {r.record}": r.record for r in RECORDING_RULES}
    queries |= {f"alert {a.name} (signal)": a.signal_for() for a in ALERTS}
    queries |= {f"HPA metric {q}": q for q in HPA_SERIES}

    # load: short chats through the gateway (two workers), a copy prompt (n-gram drafts), a stream,
    # and a small batch through the Files + Batch API
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    lines = b"".join(json.dumps({"custom_id": f"m{i}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"model": stack.served_model, "max_tokens": 8,
                                          "messages": [{"role": "user", "content": f"Count to {i}."}]}}).encode()
                     + b"\n" for i in range(3))
    batch_file = client.files.create(file=("m.jsonl", io.BytesIO(lines)), purpose="batch")
    client.batches.create(input_file_id=batch_file.id, endpoint="/v1/chat/completions", completion_window="24h")
    missing: dict[str, str] = {}
    with BackgroundLoad(stack.base_url, stack.served_model, workers=2, max_tokens=16) as load:
        chat(stack.base_url, stack.served_model, COPY_PROMPT, max_tokens=48)
        list(client.chat.completions.create(model=stack.served_model, max_tokens=8, stream=True,
                                            messages=[{"role": "user", "content": "Say hi."}]))
        deadline = time.monotonic() + 90
        while True:
            missing = {}
            for what, expr in queries.items():
                values = _query(prometheus, expr)
                if not values or not any(math.isfinite(v) for v in values):
                    missing[what] = expr
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(2)
    print(f"{len(queries)} queries, all with data {time.monotonic() - started:.0f} s after the load began")
    assert not load.failures, load.failures[:3]
    assert not missing, "queries with no data under load (a renamed or missing metric?):\n" + "\n".join(
        f"  {what}: {expr}" for what, expr in missing.items())
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    jobs = {t["labels"]["job"] for t in targets if t["health"] == "up"}
    assert jobs == {"vllm", "picker", "envoy", "batch", "supervisor", "prometheus"}, targets
    assert len(queries) == len(panel_queries()) + len(RECORDING_RULES) + len(ALERTS) + len(HPA_SERIES)


def test_top_shows_the_live_stack(stack):
    # a request takes ~1-2 s here: two workers and 2 s samples so each sample holds a decision
    with BackgroundLoad(stack.base_url, stack.served_model, workers=2, max_tokens=16):
        out = run_cli("top", "--once", "3", "--interval", "2", env=stack.env).stdout
    screens = out.split("inferstack top")[1:]
    assert len(screens) == 3 and "replicas 2 ready / 2 desired" in screens[-1]
    rows = [line.split() for line in screens[-1].splitlines() if line.startswith(("r0", "r1"))]
    assert len(rows) == 2 and all(row[1] == "ready" and row[5] != "-" for row in rows)  # tok/s known
    assert any("decisions/s: " in s and "routed" in s for s in screens), screens
