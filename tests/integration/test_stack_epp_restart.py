"""The stack's EPP is SIGKILLed while 8 streams run through its gateway (real vLLM, real Envoy).

What a user of ``inferstack up`` must see: every stream finishes (0 cut), the supervisor restarts
the EPP alone within a few seconds (``status --json``: new ``gateway.epp.pid``, the same
``gateway.envoy.pid``), and requests are routed again.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import openai
import pytest
from stackutil import chat

pytestmark = pytest.mark.integration


def test_epp_sigkill_cuts_no_stream_and_only_the_epp_restarts(stack):
    before = stack.state().gateway
    assert before
    envoy_pid, epp_pid = before.envoy.pid, before.epp.pid
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=300)
    results: dict[int, object] = {}
    first_chunk = [threading.Event() for _ in range(8)]

    def run(i: int) -> None:
        try:
            text, finish = [], None
            for chunk in client.chat.completions.create(
                    model=stack.served_model, stream=True, max_tokens=120, temperature=0,
                    extra_body={"ignore_eos": True},
                    messages=[{"role": "user", "content": f"Write a long story about garden tool {i}."}]):
                if chunk.choices:
                    text.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
                    first_chunk[i].set()
            results[i] = ("done", finish, len("".join(text)))
        except openai.APIError as exc:
            results[i] = ("cut", repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for ev in first_chunk:
        assert ev.wait(120), "a stream never started"
    os.kill(epp_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    back_after = None
    while time.monotonic() - killed_at < 20:
        gateway = stack.state().gateway
        if gateway and gateway.epp.pid != epp_pid and gateway.epp.state == "running":
            back_after = time.monotonic() - killed_at
            break
        time.sleep(0.2)
    assert back_after is not None, "the supervisor did not restart the EPP within 20 s"
    for t in threads:
        t.join(300)
    cut = {i: r for i, r in results.items() if r[0] != "done"}
    assert not cut, f"streams cut by the EPP's death: {cut}"
    assert all(r[1] == "length" and r[2] > 0 for r in results.values()), results
    after = stack.state().gateway
    assert after and after.envoy.pid == envoy_pid, "Envoy was restarted; only the EPP should be"
    assert after.epp.restarts >= 1
    # routing resumes once the new EPP has scraped the replicas
    deadline = time.monotonic() + 30
    while True:
        try:
            assert chat(stack.base_url, stack.served_model, "What is the capital of France?", max_tokens=8)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    print(f"EPP back after {back_after:.1f}s; 8/8 streams finished")
