"""Helpers shared by the gateway unit tests: endpoints with given metrics, a running gRPC server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from inferstack.gateway.h2grpc import GrpcH2Server, ServerLimits, StreamContext

from inferstack.gateway.datastore import Endpoint, EndpointMetrics
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.scheduling import SchedContext
from inferstack.gateway.settings import SaturationSettings


def make_endpoint(address: str, waiting: float = 0, running: float = 0, kv: float = 0.0, in_flight: int = 0,
                  age_s: float = 0.0, loras: frozenset[str] = frozenset(), max_loras: int = 0,
                  ready: bool = True, tracked: bool = False) -> Endpoint:
    m = EndpointMetrics(waiting=waiting, running=running, kv_usage=kv, active_loras=loras,
                        max_loras=max_loras, scraped_at=time.monotonic() - age_s)
    return Endpoint(address, ready=ready, metrics=m, in_flight=in_flight, tracked=tracked)


def make_request(prompt: str = "hello", model: str = "m") -> InferenceRequest:
    return InferenceRequest(model=model, prompt=prompt, stream=False, max_tokens=None, kind="chat",
                            target_model=model)


@pytest.fixture
def ctx() -> SchedContext:
    return SchedContext(now=time.monotonic(), staleness_s=0.2, saturation=SaturationSettings())


@dataclass
class ServerThread:
    server: GrpcH2Server
    port: int
    loop: asyncio.AbstractEventLoop

    def call(self, fn):  # type: ignore[no-untyped-def]
        """Run ``fn()`` on the server's loop and return its result (to read state safely)."""
        async def wrapped():  # type: ignore[no-untyped-def]
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(5)


HANGING: list[asyncio.Future] = []  # the futures /t.S/Hang left pending, newest last


async def _later(value: bytes, delay_s: float = 0.05) -> bytes:
    await asyncio.sleep(delay_s)
    return value


def _reply_later(raw: bytes, ctx: StreamContext) -> None:
    ctx.later = _later(raw[::-1])
    ctx.finish = True


def _now_and_later(raw: bytes, ctx: StreamContext) -> bytes:
    ctx.later = _later(b"later:" + raw)  # the stream stays open: its next message waits for this
    return b"now:" + raw


def _hang(raw: bytes, ctx: StreamContext) -> bytes:
    fut = asyncio.get_running_loop().create_future()
    HANGING.append(fut)
    ctx.later = fut
    return b"holding"


async def _fail_later() -> bytes:
    raise RuntimeError("deferred bug")


def _boom_later(raw: bytes, ctx: StreamContext) -> None:
    ctx.later = _fail_later()


def _echo_and_finish(raw: bytes, ctx: StreamContext) -> bytes:
    ctx.finish = True  # as the EPP does once it has routed: the stream ends before the client's half-close
    return raw[::-1]


TEST_ROUTES = {
    "/t.S/Echo": lambda raw, ctx: raw[::-1],
    "/t.S/EchoFinish": _echo_and_finish,
    "/t.S/Twice": lambda raw, ctx: raw + raw,
    "/t.S/Silent": lambda raw, ctx: None,
    "/t.S/Boom": lambda raw, ctx: 1 / 0,
    "/t.S/Later": _reply_later,
    "/t.S/NowAndLater": _now_and_later,
    "/t.S/Hang": _hang,
    "/t.S/BoomLater": _boom_later,
}


@pytest.fixture
def hanging() -> list[asyncio.Future]:
    """The futures /t.S/Hang leaves pending (its deferred replies), newest last."""
    HANGING.clear()
    return HANGING


@pytest.fixture
def grpc_server(request) -> Iterator[ServerThread]:  # type: ignore[no-untyped-def]
    """A GrpcH2Server with ``TEST_ROUTES`` on a free port, in a background event loop."""
    limits = getattr(request, "param", None) or ServerLimits()
    loop = asyncio.new_event_loop()
    srv = GrpcH2Server(TEST_ROUTES, limits)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start("127.0.0.1", 0))
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(5)
    yield ServerThread(srv, srv.port, loop)
    asyncio.run_coroutine_threadsafe(srv.stop(grace_s=0.5), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


class PageServer:
    """A real HTTP server on a free loopback port whose answer to ``GET path`` we control."""

    def __init__(self, path: str, body: bytes, content_type: bytes) -> None:
        self.path = path.encode()
        self.body = body
        self.status = 200
        self.content_type = content_type
        self.served = 0
        self.address = ""
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"GET " + self.path + b" ")
        self.served += 1
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                     % (self.status, self.content_type, len(self.body)) + self.body)
        await writer.drain()
        writer.close()


async def until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)
