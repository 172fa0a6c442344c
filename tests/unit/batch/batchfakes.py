"""Helpers of the batch tests: a fake OpenAI backend (stands in for the gateway) and a thread-run
uvicorn server for any app, on loopback ports.

``running_backend()`` serves /v1/chat/completions and /v1/completions from a Starlette app in a thread;
``backend.behaviour`` decides each answer: a queue of statuses to give first (429, 500, ...),
a per-custom-content rule, a delay. Every request's body and headers are recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inferstack.process import free_port


@dataclass
class FakeBackend:
    url: str = ""
    first_statuses: list[int] = field(default_factory=list)  # popped one per request
    fail_content: dict[str, int] = field(default_factory=dict)  # prompt content -> status always
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    max_concurrent: int = 0
    _concurrent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def contents(self) -> list[str]:
        return [_content(r["body"]) for r in self.requests]


def _content(body: dict[str, Any]) -> str:
    if "messages" in body:
        return str(body["messages"][-1]["content"])
    return str(body.get("prompt", ""))


def _app(fake: FakeBackend) -> Starlette:
    async def complete(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        with fake.lock:
            fake.requests.append({"body": body, "headers": dict(request.headers), "path": request.url.path})
            status = fake.first_statuses.pop(0) if fake.first_statuses else None
            fake._concurrent += 1
            fake.max_concurrent = max(fake.max_concurrent, fake._concurrent)
        try:
            if fake.delay_s:
                await asyncio.sleep(fake.delay_s)
            content = _content(body)
            status = status or fake.fail_content.get(content)
            if status:
                return JSONResponse({"error": {"message": f"fake {status}", "type": "fake", "code": status}},
                                    status_code=status)
            return JSONResponse({
                "id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {content}"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
                headers={"x-request-id": f"req-{len(fake.requests)}"})
        finally:
            with fake.lock:
                fake._concurrent -= 1

    return Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"]),
                             Route("/v1/completions", complete, methods=["POST"])])


class ThreadServer:
    """uvicorn in a background thread; stopped (should_exit) and joined on exit."""

    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def running_backend() -> Iterator[FakeBackend]:
    port = free_port()
    fake = FakeBackend(url=f"http://127.0.0.1:{port}")
    with ThreadServer(_app(fake), port):
        yield fake


def chat_line(custom_id: str, content: str, url: str = "/v1/chat/completions") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 4}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)
