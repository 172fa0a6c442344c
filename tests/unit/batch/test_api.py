"""The HTTP API with the official ``openai`` client, unchanged, against a fake backend; OpenAI-style
errors for unknown ids, bad values and oversize files."""

import io
import json
import time

import httpx
import openai
import pytest
from batchfakes import ThreadServer, chat_line, jsonl

from inferstack.batch.api import create_app
from inferstack.batch.settings import BatchSettings, DispatchSettings
from inferstack.process import free_port


@pytest.fixture
def service(backend, tmp_path):
    port = free_port()
    settings = BatchSettings(port=port, gateway_url=backend.url, state_dir=tmp_path / "state", poll_interval_s=0.05,
                             max_file_bytes=16384,
                             dispatch=DispatchSettings(backoff_initial_s=0.01, backoff_max_s=0.05))
    with ThreadServer(create_app(settings), port):
        yield f"http://127.0.0.1:{port}/v1"


def _wait(client, batch_id, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)


def test_official_client_round_trip(service, backend):
    client = openai.OpenAI(base_url=service, api_key="none")
    data = jsonl([chat_line(f"req-{i}", f"p{i}") for i in range(30)])
    f = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert f.purpose == "batch" and f.bytes == len(data) and f.status == "processed"
    assert client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).content == data
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "unit"})
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"run": "unit"}
    batch = _wait(client, batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 30 and batch.request_counts.failed == 0
    assert batch.usage.total_tokens == 150 and batch.completed_at >= batch.in_progress_at >= batch.created_at
    lines = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"req-{i}" for i in range(30))
    assert {x["response"]["status_code"] for x in lines} == {200}
    page = client.batches.list(limit=5)
    assert [b.id for b in page.data] == [batch.id]
    assert any(x.id == batch.output_file_id for x in client.files.list())


def test_cancel_through_the_client(service, backend):
    backend.delay_s = 0.1
    client = openai.OpenAI(base_url=service, api_key="none")
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([chat_line(f"c{i}", "x") for i in range(40)]))),
                            purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch = client.batches.cancel(batch.id)
    assert batch.status in ("cancelling", "cancelled")
    batch = _wait(client, batch.id)
    assert batch.status == "cancelled" and batch.request_counts.completed < 40
    backend.delay_s = 0.0
    done = _wait(client, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                               completion_window="24h").id)
    assert done.status == "completed"
    with pytest.raises(openai.ConflictError):  # a finished batch cannot be cancelled
        client.batches.cancel(done.id)


def test_openai_style_errors(service):
    client = openai.OpenAI(base_url=service, api_key="none", max_retries=0)
    with pytest.raises(openai.NotFoundError) as exc:
        client.batches.retrieve("batch_nope")
    assert exc.value.body["message"] == "No such Batch object: batch_nope"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([chat_line("a", "1")]))), purpose="batch")
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    assert exc.value.body["param"] == "endpoint"
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="1h")
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("in.jsonl", io.BytesIO(b"{}")), purpose="fine-tune")
    assert exc.value.body["param"] == "purpose"
    with pytest.raises(openai.APIStatusError) as exc:
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * 20000)), purpose="batch")
    assert exc.value.status_code == 413 and exc.value.body["code"] == "file_too_large"
    # a streamed (chunked) upload without Content-Length is cut off too
    head = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b\r\n'
            b'Content-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n')
    chunks = iter([head, b"x" * 10000, b"y" * 10000, b"\r\n--b--\r\n"])
    r = httpx.post(f"{service}/files", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    r = httpx.get(f"{service}/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_malformed_lines_fail_the_batch_with_errors(service):
    client = openai.OpenAI(base_url=service, api_key="none")
    data = jsonl([chat_line("a", "1")]) + b"{oops\n" + jsonl([chat_line("b", "2", url="/v1/completions")])
    f = client.files.create(file=("bad.jsonl", io.BytesIO(data)), purpose="batch")
    batch = _wait(client, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                completion_window="24h").id)
    assert batch.status == "failed"
    assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_json_line", 2), ("invalid_url", 3)]


def test_health_says_when_the_dispatcher_loop_has_ended_or_stalled(tmp_path, monkeypatch):
    """/health answers 503 with the reason once the dispatcher's loop is gone (a bug outside every
    batch) or completes no pass within the bound (a stuck pass); the watchdog exits on the same."""
    import asyncio

    from starlette.testclient import TestClient

    from inferstack.batch.dispatcher import Dispatcher

    async def dies(self, stop):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug outside any batch")

    monkeypatch.setattr(Dispatcher, "run", dies)
    settings = BatchSettings(gateway_url="http://127.0.0.1:9", state_dir=tmp_path / "a")
    app = create_app(settings)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/health").status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = client.get("/health")
        assert r.status_code == 503 and r.json() == {**r.json(), "status": "unhealthy",
                                                     "reason": "the dispatcher loop is not running"}
        assert app.state.dispatcher_problem() == "the dispatcher loop is not running"

    async def stuck(self):  # type: ignore[no-untyped-def]
        await asyncio.sleep(3600)
        return 1.0

    monkeypatch.undo()
    monkeypatch.setattr(Dispatcher, "step", stuck)
    app = create_app(BatchSettings(gateway_url="http://127.0.0.1:9", state_dir=tmp_path / "b",
                                   dispatcher_stall_s=0.2))
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/health").status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "completed no pass" in client.get("/health").json()["reason"]
