"""A minimal OpenAI-shaped HTTP/1.1 server: the backend for gateway overhead benchmarks and tests.

Answers ``POST /v1/chat/completions`` and ``/v1/completions`` at once (JSON, or SSE when
``"stream": true``), ``GET /v1/models``, ``GET /health`` and a vLLM-shaped ``GET /metrics`` whose
values a test sets with ``POST /admin/metrics`` (JSON ``{"waiting": 7, "running": 1, "kv": 0.5}``),
so gateway saturation can be made deterministic. ``POST /admin/fail`` with ``{"status": 500}``
makes inference answers fail with that status (0 = healthy again). Each answer carries
``x-echo-backend: <port>`` so a test can tell which backend served it. A streaming request with
``"echo_chunks": N, "echo_delay_s": D`` gets N SSE chunks D seconds apart (a long generation,
for tests that break things while streams are in flight). ``GET /v1/models`` lists ``--models``
(comma-separated; the first is the base model, the others LoRA adapters whose ``parent`` is it, as
vLLM lists them); ``POST /admin/models`` with ``{"models": ["base", "adapter", ...]}`` replaces the
list (an adapter loaded at runtime), with ``{"raw": "..."}`` serves that text instead.
It is an asyncio Protocol over keep-alive connections, so it is never the benchmark's bottleneck.

    python benchmarks/gateway_echo_backend.py --port 8201 [--host 127.0.0.1] [--models base,adapter-a]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

__all__ = ["EchoState", "main"]


class EchoState:
    def __init__(self, port: int, models: list[str] | None = None) -> None:
        self.port = port
        self.models_page = models_page(models or ["echo"])
        self.waiting = 0.0
        self.running = 0.0
        self.kv = 0.0
        self.fail_status = 0
        self.served = 0

    def metrics(self) -> bytes:
        return (
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="echo"}} {self.waiting}\n'
            f'vllm:num_requests_running{{model_name="echo"}} {self.running}\n'
            f'vllm:kv_cache_usage_perc{{model_name="echo"}} {self.kv}\n'
            f"echo_requests_served_total {self.served}\n"
        ).encode()


def models_page(models: list[str]) -> bytes:
    """vLLM's /v1/models shape: the base model first (parent null), then its adapters."""
    base = models[0]
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "echo",
             "root": m if i == 0 else f"/adapters/{m}", "parent": None if i == 0 else base}
            for i, m in enumerate(models)]
    return json.dumps({"object": "list", "data": data}).encode()


def _response(status: int, body: bytes, port: int, ctype: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nx-echo-backend: %d\r\n\r\n"
            % (status, reason, ctype, len(body), port)) + body


def _completion(req: dict, path: str, port: int) -> tuple[bytes, bytes]:
    model = req.get("model", "echo")
    chat = path.endswith("chat/completions")
    text = f"echo from {port}"
    if req.get("stream"):
        chunks = []
        for piece in ("echo ", "from ", str(port)):
            choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            chunks.append(json.dumps({"id": "echo", "object": "chat.completion.chunk" if chat else "text_completion",
                                      "created": 0, "model": model, "choices": [choice]}))
        if (req.get("stream_options") or {}).get("include_usage"):  # vLLM's last event: usage, no choices
            chunks.append(json.dumps({"id": "echo", "object": "chat.completion.chunk" if chat else "text_completion",
                                      "created": 0, "model": model, "choices": [],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}))
        body = "".join(f"data: {c}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return body.encode(), b"text/event-stream"
    choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
              if chat else {"index": 0, "text": text, "finish_reason": "stop"})
    doc = {"id": "echo", "object": "chat.completion" if chat else "text_completion", "created": 0,
           "model": model, "choices": [choice],
           "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
    return json.dumps(doc).encode(), b"application/json"


class _Http(asyncio.Protocol):
    def __init__(self, state: EchoState) -> None:
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = (lines[0].split(" ") + ["", "", ""])[:3]
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            assert self.transport is not None
            self.transport.write(self.handle(method, path, body))

    async def _slow_stream(self, chunks: int, delay_s: float) -> None:
        t = self.transport
        assert t is not None
        t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                b"x-echo-backend: %d\r\n\r\n" % self.state.port)
        for k in range(chunks):
            piece = b'data: {"choices": [{"index": 0, "delta": {"content": "%d "}}]}\n\n' % k
            t.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await asyncio.sleep(delay_s)
            if t.is_closing():
                return
        done = b"data: [DONE]\n\n"
        t.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))

    def handle(self, method: str, path: str, body: bytes) -> bytes:
        st = self.state
        if path == "/health":
            return _response(200, b"", st.port)
        if path == "/metrics":
            return _response(200, st.metrics(), st.port, b"text/plain")
        if path == "/v1/models":
            return _response(200, st.models_page, st.port)
        if method == "POST" and path == "/admin/models":
            doc = json.loads(body)
            st.models_page = doc["raw"].encode() if "raw" in doc else models_page(list(doc["models"]))
            return _response(200, b"{}", st.port)
        if method == "POST" and path == "/admin/metrics":
            doc = json.loads(body)
            st.waiting, st.running, st.kv = (float(doc.get("waiting", st.waiting)),
                                             float(doc.get("running", st.running)), float(doc.get("kv", st.kv)))
            return _response(200, b"{}", st.port)
        if method == "POST" and path == "/admin/fail":
            st.fail_status = int(json.loads(body).get("status", 0))
            return _response(200, b"{}", st.port)
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            st.served += 1
            if st.fail_status:
                return _response(st.fail_status, b'{"error":{"message":"injected failure"}}', st.port)
            try:
                req = json.loads(body)
            except ValueError:
                return _response(400, json.dumps({"error": {"message": f"bad json: {body[:200]!r}"}}).encode(), st.port)
            if req.get("stream") and req.get("echo_chunks"):
                asyncio.ensure_future(self._slow_stream(int(req["echo_chunks"]), float(req.get("echo_delay_s", 0.1))))
                return b""
            out, ctype = _completion(req, path, st.port)
            return _response(200, out, st.port, ctype)
        return _response(404, b'{"error":{"message":"not found"}}', st.port)


async def _serve(host: str, port: int, models: list[str] | None = None) -> None:
    state = EchoState(port, models)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(state), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo backend pid {os.getpid()} on {host}:{port}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--models", default="echo", help="served model ids for GET /v1/models, comma-separated: "
                    "the base model, then LoRA adapters (default: echo)")
    args = ap.parse_args()
    asyncio.run(_serve(args.host, args.port, [m for m in args.models.split(",") if m]))


if __name__ == "__main__":
    main()
