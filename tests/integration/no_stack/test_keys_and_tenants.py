"""API keys and tenants through real Envoy + our picker + the batch service (echo backends, no LLM):
401 in OpenAI's shape without or with a wrong key (the official client raises AuthenticationError),
served with a right one; each tenant's files and batches are its own; batch lines run through the
picker with the stack's service key as their tenant; a key added to the file works without a restart;
quotas answer 429 with OpenAI's headers, admitted answers carry them too, and a request's tokens settle
to what the backend reported (Envoy's Lua filter reads the usage, its access log brings it to the picker)."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_support import echo_backends, gateway_and_batch_service, wait_until

pytestmark = pytest.mark.integration

KEY_A, KEY_B, KEY_C, KEY_D, SERVICE = ("sk-team-a-0123456789", "sk-team-b-0123456789", "sk-team-c-0123456789",
                                       "sk-team-d-0123456789", "sk-service-0123456789")


def _tokens_of(metrics_url: str, tenant: str, kind: str) -> float:
    for family in text_string_to_metric_families(httpx.get(metrics_url).text):
        for sample in family.samples:
            if sample.name == "inferstack_epp_tenant_tokens_total" and sample.labels == {"tenant": tenant, "kind": kind}:
                return sample.value
    return 0.0


def test_keys_tenants_and_private_batches_through_real_envoy(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{key: {KEY_A}, tenant: team-a}}\n- {{key: {KEY_B}, tenant: team-b}}\n"
                    f"- {{key: {KEY_D}, tenant: team-d, tokens_per_minute: 1000}}\n")
    service_key = tmp_path / "service-key"
    service_key.write_text(SERVICE + "\n")
    with echo_backends(2) as backends:
        addrs = [a for a, _ in backends]
        with gateway_and_batch_service(tmp_path, addrs, epp={"auth_file": keys, "service_key_file": service_key},
                                       batch={"auth_file": keys, "gateway_key_file": service_key}) as (gw, _svc):
            base = f"{gw.url}/v1"
            a = openai.OpenAI(base_url=base, api_key=KEY_A, max_retries=0)
            b = openai.OpenAI(base_url=base, api_key=KEY_B, max_retries=0)
            chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}

            # online: no key, a wrong key -> 401 from the picker, before any backend; the right key -> 200
            for client in (openai.OpenAI(base_url=base, api_key="sk-wrong-key-43210", max_retries=0),):
                with pytest.raises(openai.AuthenticationError) as err:
                    client.chat.completions.create(**chat)
                assert err.value.code == "invalid_api_key" and "...3210" in err.value.message
            r = httpx.post(f"{base}/chat/completions", json=chat)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["type"] == "invalid_request_error"
            assert httpx.get(f"{base}/models").status_code == 401
            assert a.chat.completions.create(**chat).choices[0].message.content
            assert "".join(c.choices[0].delta.content or "" for c in a.chat.completions.create(**chat, stream=True)
                           if c.choices)
            assert [m.id for m in a.models.list().data]
            metrics = httpx.get(f"http://127.0.0.1:{gw.settings.epp.metrics_port}/metrics").text
            assert sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("inferstack_epp_requests_total{") and 'outcome="unauthorized"' in line) >= 3

            # batches: team-a's are team-a's; its lines run through the picker with the service key
            lines = b"".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                         "body": {**chat, "messages": [{"role": "user", "content": str(i)}]}}
                                        ).encode() + b"\n" for i in range(6))
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=base, api_key="sk-wrong-key-43210", max_retries=0).files.list()
            f = a.files.create(file=("in.jsonl", io.BytesIO(lines)), purpose="batch")
            job = a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
            with pytest.raises(openai.NotFoundError):
                b.batches.retrieve(job.id)
            with pytest.raises(openai.NotFoundError):
                b.files.content(f.id)
            assert b.batches.list().data == [] and b.files.list().data == []
            deadline = time.monotonic() + 30
            while (job := a.batches.retrieve(job.id)).status != "completed":
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert job.request_counts.completed == 6 and job.request_counts.failed == 0
            with pytest.raises(openai.NotFoundError):
                b.files.content(job.output_file_id)
            assert len(a.files.content(job.output_file_id).text.splitlines()) == 6

            # a key added to the file works within a second or two, in both, without a restart
            keys.write_text(keys.read_text() + f"- {{key: {KEY_C}, tenant: team-c}}\n")
            c = openai.OpenAI(base_url=base, api_key=KEY_C, max_retries=0)

            def c_is_served() -> bool:
                try:
                    c.chat.completions.create(**chat)
                    c.files.list()
                    return True
                except openai.AuthenticationError:
                    return False

            wait_until(c_is_served, timeout_s=10, what="the new key to be accepted")

            # a quota given in the file (no restart): the next request over it is a 429 the client
            # reads as RateLimitError, with OpenAI's x-ratelimit-* headers
            keys.write_text(keys.read_text().replace("tenant: team-c}", "tenant: team-c, requests_per_minute: 1}"))

            def c_is_limited() -> bool:
                try:
                    c.chat.completions.create(**chat)
                    return False
                except openai.RateLimitError as exc:
                    limited.append(exc)
                    return True

            limited: list[openai.RateLimitError] = []
            wait_until(c_is_limited, timeout_s=10, what="the quota to refuse a request")
            headers = limited[0].response.headers
            assert headers["x-ratelimit-limit-requests"] == "1" and int(headers["retry-after"]) >= 1
            assert limited[0].code == "rate_limit_exceeded"

            # an admitted answer carries the tenant's x-ratelimit-* headers, JSON and stream alike
            d = openai.OpenAI(base_url=base, api_key=KEY_D, max_retries=0)
            metrics_url = f"http://127.0.0.1:{gw.settings.epp.metrics_port}/metrics"
            raw = d.chat.completions.with_raw_response.create(**chat, max_tokens=600)
            assert raw.headers["x-ratelimit-limit-tokens"] == "1000" and "x-ratelimit-limit-requests" not in raw.headers
            assert int(raw.headers["x-ratelimit-remaining-tokens"]) <= 400  # prompt + max_tokens reserved
            # the answer used 1 + 3 tokens (its usage): once the access log has reached the picker the
            # rest comes back, so a second request as large fits the minute (else 600 + 600 > 1000: 429)
            wait_until(lambda: _tokens_of(metrics_url, "team-d", "completion") == 3, timeout_s=10,
                       what="the answer's usage to reach the picker")
            raw = d.chat.completions.with_raw_response.create(**chat, max_tokens=600)
            assert int(raw.headers["x-ratelimit-remaining-tokens"]) >= 1000 - 4 - 600 - 10
            wait_until(lambda: _tokens_of(metrics_url, "team-d", "completion") == 6, timeout_s=10,
                       what="the second answer's usage")
            with d.chat.completions.with_streaming_response.create(**chat, max_tokens=8, stream=True) as r:
                assert r.headers["x-ratelimit-limit-tokens"] == "1000"
                assert "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
            # a stream without usage: its 3 text events counted; with include_usage: vLLM's own count
            wait_until(lambda: _tokens_of(metrics_url, "team-d", "completion") == 9, timeout_s=10,
                       what="the stream's counted events")
            assert _tokens_of(metrics_url, "team-d", "prompt") == 2
            list(d.chat.completions.create(**chat, max_tokens=8, stream=True, stream_options={"include_usage": True}))
            wait_until(lambda: _tokens_of(metrics_url, "team-d", "prompt") == 3, timeout_s=10,
                       what="the stream's reported usage")
            assert _tokens_of(metrics_url, "team-d", "completion") == 12
