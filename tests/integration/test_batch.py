"""The OpenAI Batch API on the real stack (vLLM replicas + Envoy + our picker + the batch service).

The official ``openai`` client talks to the gateway's base URL, unchanged: files.create,
batches.create, batches.retrieve, files.content; cancel mid-run; SIGKILL of the batch service
mid-run (the supervisor restarts it and it resumes: each line exactly once); bad input gives
OpenAI-style 4xx errors or per-line errors. Every wait polls the API, never a fixed sleep.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time

import httpx
import openai
import pytest
from stackutil import RunningStack, run_cli

from inferstack.process import pid_alive

pytestmark = pytest.mark.integration

_TERMINAL = ("completed", "failed", "cancelled", "expired")


def _lines(model: str, n: int, max_tokens: int = 8, prefix: str = "req") -> list[dict]:
    return [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "temperature": 0, "max_tokens": max_tokens,
                      "messages": [{"role": "user", "content": f"Count from {i} to {i + 5}."}]}}
            for i in range(n)]


def _jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def _client(stack: RunningStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="none", max_retries=0, timeout=60)


def _create(client: openai.OpenAI, lines: list[dict]):
    f = client.files.create(file=("batch.jsonl", io.BytesIO(_jsonl(lines))), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")


def _wait(client: openai.OpenAI, batch_id: str, until=lambda b: b.status in _TERMINAL, timeout_s: float = 600):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if until(batch):
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id}: {batch.status} {batch.request_counts}"
        time.sleep(0.2)


def _output(client: openai.OpenAI, file_id: str) -> list[dict]:
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_official_client_runs_a_batch_of_24(stack: RunningStack):
    client = _client(stack)
    batch = _create(client, _lines(stack.served_model, 24))
    batch = _wait(client, batch.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (24, 24, 0)
    assert batch.usage.output_tokens > 0 and batch.error_file_id is None
    out = _output(client, batch.output_file_id)
    assert sorted(x["custom_id"] for x in out) == sorted(f"req-{i}" for i in range(24))  # each once
    for line in out:
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    status = stack.state().batch
    assert status and status.state == "running" and pid_alive(status.pid)


def test_cli_submit_wait_and_results(stack: RunningStack, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(_jsonl(_lines(stack.served_model, 6, prefix="cli")))
    proc = run_cli("batch", "submit", str(path), "--wait", env=stack.env, timeout=600)
    batch_id = proc.stdout.strip().splitlines()[0]
    assert batch_id.startswith("batch_"), proc.stdout
    assert "6/6" in proc.stderr
    out = tmp_path / "out.jsonl"
    run_cli("batch", "results", batch_id, "--output", str(out), env=stack.env)
    assert sorted(json.loads(x)["custom_id"] for x in out.read_text().splitlines()) == [f"cli-{i}" for i in range(6)]
    assert batch_id in run_cli("batch", "list", env=stack.env).stdout
    assert "completed" in run_cli("batch", "status", batch_id, env=stack.env).stdout


def test_cancel_mid_run(stack: RunningStack):
    client = _client(stack)
    batch = _create(client, _lines(stack.served_model, 80, max_tokens=48, prefix="cancel"))
    _wait(client, batch.id, until=lambda b: b.request_counts.completed >= 2 or b.status in _TERMINAL)
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    batch = _wait(client, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    done = batch.request_counts.completed
    assert 2 <= done < 80
    ids = [x["custom_id"] for x in _output(client, batch.output_file_id)]
    assert len(ids) == len(set(ids)) == done


def test_sigkill_of_the_batch_service_mid_run_resumes_each_line_once(stack: RunningStack):
    client = _client(stack)
    old = stack.state().batch
    assert old and old.pid
    old_pid = old.pid
    batch = _create(client, _lines(stack.served_model, 20, max_tokens=8, prefix="kill"))
    _wait(client, batch.id, until=lambda b: b.request_counts.completed >= 5 or b.status in _TERMINAL)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # the supervisor restarts it (backoff 0.5 s); the API answers again through Envoy
        status = stack.state().batch
        if status and status.pid != old_pid and status.state == "running":
            try:
                client.batches.retrieve(batch.id)
                break
            except openai.APIError:
                pass
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status.restarts >= 1
    batch = _wait(client, batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 20
    ids = [x["custom_id"] for x in _output(client, batch.output_file_id)]
    assert sorted(ids) == sorted(f"kill-{i}" for i in range(20))  # none lost, none twice


def test_bad_input_gives_openai_errors(stack: RunningStack):
    client = _client(stack)
    good = _lines(stack.served_model, 2, prefix="bad")
    data = _jsonl(good[:1]) + b"{not json\n" + json.dumps({**good[1], "url": "/v1/embeddings"}).encode() + b"\n"
    f = client.files.create(file=("bad.jsonl", io.BytesIO(data)), purpose="batch")
    batch = _wait(client, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                completion_window="24h").id)
    assert batch.status == "failed"
    assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_json_line", 2), ("invalid_url", 3)]

    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-doesnotexist")
    with pytest.raises(openai.APIStatusError) as exc:  # the stack's limit is 1 MB (conftest)
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * 1_100_000)), purpose="batch")
    assert exc.value.status_code == 413

    # a line vLLM refuses is a per-line error (its 4xx answer in the error file), not a crash
    lines = _lines(stack.served_model, 3, prefix="line")
    lines[1]["body"]["max_tokens"] = -5
    batch = _wait(client, _create(client, lines).id)
    assert batch.status == "completed" and batch.request_counts.completed == 2 and batch.request_counts.failed == 1
    errors = _output(client, batch.error_file_id)
    assert [e["custom_id"] for e in errors] == ["line-1"] and 400 <= errors[0]["response"]["status_code"] < 500
    # and online traffic still flows through the same gateway
    r = httpx.post(f"{stack.base_url}/chat/completions", json={
        "model": stack.served_model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert r.status_code == 200


@pytest.mark.last_session_stack_user
def test_down_then_up_resumes_the_batch(stack: RunningStack):
    """`down` mid-batch, `up` again on the same state dir and config -> the batch resumes and completes
    with each line once (its state is in <state dir>/batch, which outlives the stack). The session
    stack's last user: it leaves the stack down."""
    config = stack.state().config_path
    assert config, "the session stack was started from a config file"
    client = _client(stack)
    batch = _create(client, _lines(stack.served_model, 10, max_tokens=16, prefix="resume"))
    _wait(client, batch.id, until=lambda b: b.request_counts.completed >= 3 or b.status in _TERMINAL)
    run_cli("down", env=stack.env, timeout=300)
    try:
        run_cli("up", "--detach", "--config", config, env=stack.env, timeout=900)
        batch = _wait(client, batch.id)
        assert batch.status == "completed" and batch.request_counts.completed == 10
        ids = [x["custom_id"] for x in _output(client, batch.output_file_id)]
        assert sorted(ids) == sorted(f"resume-{i}" for i in range(10))
    finally:
        run_cli("down", env=stack.env, timeout=300, check=False)
