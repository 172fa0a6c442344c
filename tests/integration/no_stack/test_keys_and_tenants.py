"""API keys and tenants through real Envoy + our picker + the batch service (echo backends, no LLM):
401 in OpenAI's shape without or with a wrong key (the official client raises AuthenticationError),
served with a right one; each tenant's files and batches are its own; batch lines run through the
picker with the stack's service key as their tenant; a key added to the file works without a restart."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest
from test_gateway_support import echo_backends, gateway_and_batch_service, wait_until

pytestmark = pytest.mark.integration

KEY_A, KEY_B, KEY_C, SERVICE = ("sk-team-a-0123456789", "sk-team-b-0123456789", "sk-team-c-0123456789",
                                "sk-service-0123456789")


def test_keys_tenants_and_private_batches_through_real_envoy(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{key: {KEY_A}, tenant: team-a}}\n- {{key: {KEY_B}, tenant: team-b}}\n")
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
