"""A thin gRPC server on the ``h2`` library's HTTP/2 state machine (asyncio Protocol), for the EPP.

Why not grpcio: per request Envoy opens one ext_proc stream and exchanges two small messages; with
grpcio's asyncio server the per-stream machinery costs more Python time than Envoy itself (see
``benchmarks/gateway_overhead.py``). Why not our own framing: HTTP/2 is a protocol with many
ways to be abused; ``h2`` (python-hyper) is the maintained, fuzzed state machine that does the
framing, HPACK, stream states, limits (frame size, header list size, CONTINUATION backlog,
concurrent streams), flow control, PING and GOAWAY. This module only adds gRPC on top:
length-prefixed messages (uncompressed), ``:path`` routing, trailers, and resource bounds.

Handlers: ``handler(message, stream) -> reply | None``, called once per complete gRPC message, in
order, on the event loop; it must not block. ``stream.data`` is free for the handler's per-stream
state; setting ``stream.finish = True`` ends the stream (trailers ``grpc-status: 0``) right after
the reply. A stream also ends OK when the client half-closes; an unknown path answers
UNIMPLEMENTED; a handler exception answers INTERNAL and the connection keeps serving.
To answer later, a handler sets ``stream.later`` to an awaitable (besides returning an immediate
reply or None): its result (bytes, or None for no message) is sent on the stream when it
completes, then ``finish`` is honoured; until then the stream's further messages and its
half-close wait, in order; an exception answers INTERNAL. If the client resets the stream or the
connection ends first, the awaitable is cancelled.

Bounds (a cluster's pods can reach this port): a message over ``max_message_bytes`` resets its
stream (RESOURCE_EXHAUSTED); more than ``max_buffered_bytes`` buffered on one connection, or more
than ``max_resets_per_s`` RST_STREAMs a second (the "rapid reset" attack), closes the connection
with GOAWAY(ENHANCE_YOUR_CALM) (resets of streams already answered do not count: Envoy sends
one per request). Any protocol error answers GOAWAY (h2 picks the code) and closes
that connection only. ``stop(grace_s)``: GOAWAY to every peer, stop accepting, let open streams
finish for up to ``grace_s``, then close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

__all__ = ["GrpcH2Server", "Handler", "ServerLimits", "StreamContext"]

log = logging.getLogger(__name__)


class StreamContext:
    """Per-stream state a handler may use: ``data`` (anything), ``finish`` (end after reply) and
    ``later`` (an awaitable whose result is the next reply)."""

    __slots__ = ("data", "finish", "later", "stream_id")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.data: object = None
        self.finish = False
        self.later: Awaitable[bytes | None] | None = None


Handler = Callable[[bytes, StreamContext], bytes | None]


@dataclass(frozen=True)
class ServerLimits:
    max_concurrent_streams: int = 1000       # Envoy multiplexes every ext_proc stream on few connections
    max_header_list_bytes: int = 16 * 1024   # gRPC requests carry a handful of small headers
    initial_window_bytes: int = 1 << 20      # per stream; replenished as messages are consumed
    max_message_bytes: int = 32 << 20        # Envoy buffers request bodies up to 16 MiB
    max_buffered_bytes: int = 64 << 20       # all partial messages of one connection together
    max_resets_per_s: int = 2000             # Envoy resets a stream per client disconnect; more is abuse


_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
_TRAILERS_OK = [(b"grpc-status", b"0")]
_TRAILERS_UNIMPLEMENTED = [(b"grpc-status", b"12"), (b"grpc-message", b"unknown method")]
_TRAILERS_INTERNAL = [(b"grpc-status", b"13"), (b"grpc-message", b"internal error")]
_TRAILERS_CANCELLED = [(b"grpc-status", b"1"), (b"grpc-message", b"reply cancelled")]
_TRAILERS_TOO_BIG = [(b"grpc-status", b"8"), (b"grpc-message", b"message too large")]
_TRAILERS_COMPRESSED = [(b"grpc-status", b"12"), (b"grpc-message", b"compressed messages are not supported")]


class _Stream:
    __slots__ = ("backlog", "buf", "ctx", "half_closed", "handler", "held", "out", "pending", "responded")

    def __init__(self, handler: Handler, stream_id: int) -> None:
        self.handler = handler
        self.ctx = StreamContext(stream_id)
        self.buf = bytearray()
        self.responded = False
        self.out: list[tuple[bytes, list[tuple[bytes, bytes]] | None]] = []  # waiting for send window
        self.pending: asyncio.Future[bytes | None] | None = None  # a deferred reply (handler's ``later``)
        self.backlog: list[bytes] = []  # messages that arrived while a reply was pending
        self.half_closed = False  # the client ended its side while a reply was pending
        self.held = 0  # bytes of buf + backlog counted in the connection's ``buffered`` (see _recount)


class _Connection(asyncio.Protocol):
    def __init__(self, server: GrpcH2Server) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        # our own headers are constants (no outbound checks); inbound ones are validated (RFC 9113
        # 8.2) but not normalized: we only look up :path
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                        validate_outbound_headers=False, normalize_outbound_headers=False,
                                        normalize_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)
        lim = self.limits
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: lim.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: lim.max_header_list_bytes,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: lim.initial_window_bytes,
        })
        self.streams: dict[int, _Stream] = {}
        self.buffered = 0  # sum of the streams' ``held``: changed only by _recount and _forget_all
        self.reset_window_start = 0.0
        self.resets = 0
        self.closing = False
        self.last_stream_id: int | None = None  # set by our graceful GOAWAY: later streams are refused

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        # the connection window spans what we are willing to buffer (the default 64 KiB would make
        # a 16 MiB request body crawl); max_buffered_bytes bounds it in memory
        extra = self.limits.max_buffered_bytes - 65535
        if extra > 0:
            self.h2.increment_flow_control_window(min(extra, 2**31 - 1 - 65535))
        self._flush()
        if self.server.stopping:
            self.graceful_close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_pending()
        self._forget_all()
        self.server._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the right error code; send it and close this connection
            log.info("HTTP/2 protocol error from peer (%s); GOAWAY and close", exc)
            self._flush()
            self.transport.close()
            return
        for ev in events:
            try:
                if self._on_event(ev):
                    return
            except (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError) as exc:
                # the peer reset this stream in the same read, before we answered (h2 may already
                # have forgotten it): drop that stream only
                self._drop(exc.stream_id)
        if self.closing and not self.streams:
            self._flush()
            self.transport.close()
            return
        self._flush()

    # -- events --
    def _on_event(self, ev: h2.events.Event) -> bool:
        """Handle one h2 event; True when the connection was closed."""
        t = type(ev)
        if t is h2.events.DataReceived:
            self._on_data(ev)  # type: ignore[arg-type]
        elif t is h2.events.RequestReceived:
            self._on_request(ev)  # type: ignore[arg-type]
        elif t is h2.events.StreamEnded:
            st = self.streams.get(ev.stream_id)  # type: ignore[attr-defined]
            if st is not None:
                if st.pending is not None:
                    st.half_closed = True  # end after the deferred reply
                else:
                    self._end(ev.stream_id, st, _TRAILERS_OK)  # type: ignore[attr-defined]
        elif t is h2.events.StreamReset:
            # Envoy resets each stream we already ended (no work lost); a reset of a stream we
            # still serve is what the rapid-reset attack repeats
            if self._drop(ev.stream_id) and self._count_reset():  # type: ignore[attr-defined]
                return True
        elif t is h2.events.WindowUpdated or t is h2.events.RemoteSettingsChanged:
            self._send_pending()
        elif t is h2.events.ConnectionTerminated:
            self.closing = True
        return False

    def _on_request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        if self.last_stream_id is not None and sid > self.last_stream_id:
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)  # opened after our GOAWAY
            return
        path = b""
        for k, v in ev.headers:
            if k == b":path":
                path = v
                break
        handler = self.server.routes.get(path)
        if handler is None:
            self.h2.send_headers(sid, _RESPONSE_HEADERS + _TRAILERS_UNIMPLEMENTED, end_stream=True)
            return
        self.streams[sid] = _Stream(handler, sid)

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        sid = ev.stream_id
        if ev.flow_controlled_length:
            self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
        st = self.streams.get(sid)
        if st is None:
            return
        data = ev.data
        buf = st.buf
        if not buf and len(data) >= 5 and data[0] == 0 and int.from_bytes(data[1:5], "big") == len(data) - 5:
            self._message(sid, st, data[5:])  # the common case: one whole message in one frame
            return
        buf += data
        try:
            while len(buf) >= 5:
                if buf[0] != 0:
                    self._fail(sid, st, _TRAILERS_COMPRESSED)
                    return
                mlen = int.from_bytes(buf[1:5], "big")
                if mlen > self.limits.max_message_bytes:
                    log.warning("stream %d announced a %d-byte message (limit %d); resetting",
                                sid, mlen, self.limits.max_message_bytes)
                    self._fail(sid, st, _TRAILERS_TOO_BIG)
                    return
                if len(buf) < 5 + mlen:
                    break
                msg = bytes(buf[5:5 + mlen])
                del buf[:5 + mlen]
                self._message(sid, st, msg)
                if sid not in self.streams:
                    return
        finally:  # whichever way the loop left (the handler may have ended the stream), recount once
            self._recount(st)
        self._check_buffered("of partial messages")

    def _message(self, sid: int, st: _Stream, msg: bytes) -> None:
        if st.pending is not None:  # the deferred reply goes first: keep the stream's order
            self._hold_back(st, msg)
            return
        try:
            reply = st.handler(msg, st.ctx)
        except Exception:  # a handler bug must not take the connection (and every stream) down
            log.exception("handler failed on stream %d", sid)
            self._end(sid, st, _TRAILERS_INTERNAL)
            return
        if reply is not None:
            self._send(sid, st, len(reply).to_bytes(5, "big") + reply, None)
        if st.ctx.later is not None:
            self._defer(sid, st)
        elif st.ctx.finish:
            self._end(sid, st, _TRAILERS_OK)

    # -- deferred replies --
    def _defer(self, sid: int, st: _Stream) -> None:
        later, st.ctx.later = st.ctx.later, None
        assert later is not None
        fut = asyncio.ensure_future(later)
        if self.streams.get(sid) is not st:  # the peer reset the stream under the immediate reply
            fut.cancel()
            return
        st.pending = fut
        fut.add_done_callback(lambda f: self._deferred_done(sid, st, f))

    def _hold_back(self, st: _Stream, msg: bytes) -> None:
        st.backlog.append(msg)
        self._recount(st)
        self._check_buffered("behind pending replies")

    def _deferred_done(self, sid: int, st: _Stream, fut: asyncio.Future[bytes | None]) -> None:
        if st.pending is not fut or self.streams.get(sid) is not st:
            return  # the stream was dropped (and this reply cancelled) meanwhile
        st.pending = None
        if fut.cancelled():  # by its owner, not by us
            self._end(sid, st, _TRAILERS_CANCELLED)
        elif fut.exception() is not None:
            log.error("deferred reply failed on stream %d", sid, exc_info=fut.exception())
            self._end(sid, st, _TRAILERS_INTERNAL)
        else:
            reply = fut.result()
            if reply is not None:
                self._send(sid, st, len(reply).to_bytes(5, "big") + reply, None)
            if st.ctx.finish:
                self._end(sid, st, _TRAILERS_OK)
            else:
                self._resume(sid, st)
        self._flush()
        if self.closing and not self.streams and self.transport is not None:
            self.transport.close()

    def _resume(self, sid: int, st: _Stream) -> None:
        """Handle what waited behind a deferred reply, until the stream defers again or ends."""
        while st.backlog and st.pending is None and self.streams.get(sid) is st:
            msg = st.backlog.pop(0)
            self._recount(st)
            self._message(sid, st, msg)
        if st.half_closed and st.pending is None and self.streams.get(sid) is st:
            self._end(sid, st, _TRAILERS_OK)

    def _cancel_pending(self) -> None:
        for st in self.streams.values():
            if st.pending is not None:
                fut, st.pending = st.pending, None
                fut.cancel()

    # -- sending --
    def _open(self, sid: int) -> bool:
        """Whether h2 still has the stream open for our answer (the peer may have reset it)."""
        stream = self.h2.streams.get(sid)
        return stream is not None and not stream.closed

    def _send(self, sid: int, st: _Stream, data: bytes, trailers: list[tuple[bytes, bytes]] | None) -> None:
        if not self._open(sid):
            self._forget(sid, st)
            return
        if not st.responded:
            st.responded = True
            self.h2.send_headers(sid, _RESPONSE_HEADERS)
        if st.out or (data and len(data) > min(self.h2.local_flow_control_window(sid),
                                                self.h2.max_outbound_frame_size)):
            st.out.append((data, trailers))
            self._send_pending()
            return
        if data:
            self.h2.send_data(sid, data)
        if trailers is not None:
            self.h2.send_headers(sid, trailers, end_stream=True)
            self._forget(sid, st)

    def _send_pending(self) -> None:
        for sid, st in list(self.streams.items()):
            while st.out:
                data, trailers = st.out[0]
                if data:
                    room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                    if room <= 0:
                        break
                    self.h2.send_data(sid, data[:room])
                    data = data[room:]
                    if data:
                        st.out[0] = (data, trailers)
                        continue
                st.out.pop(0)
                if trailers is not None:
                    self.h2.send_headers(sid, trailers, end_stream=True)
                    self._forget(sid, st)
                    break

    def _end(self, sid: int, st: _Stream, trailers: list[tuple[bytes, bytes]]) -> None:
        if not self._open(sid):
            self._forget(sid, st)
            return
        if not st.responded:
            st.responded = True
            if not st.out:  # trailers-only response
                self.h2.send_headers(sid, _RESPONSE_HEADERS + trailers, end_stream=True)
                self._forget(sid, st)
                return
        self._send(sid, st, b"", trailers)

    def _fail(self, sid: int, st: _Stream, trailers: list[tuple[bytes, bytes]]) -> None:
        """End the stream with an error status and stop reading it (the peer gets RST after)."""
        st.out.clear()
        self._end(sid, st, trailers)
        try:  # RFC 9113 8.1: a complete response, then ask the client to stop sending
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.StreamClosedError:
            pass  # the client had already finished its side

    # -- buffered bytes: one place changes the count, from what the stream holds --
    def _recount(self, st: _Stream) -> None:
        """Set the stream's share of ``buffered`` to what it holds now (0 once it is forgotten).

        Every change of a stream's ``buf`` or ``backlog`` ends in a call here, so the connection's
        count is always the sum of what its live streams hold: a stream that ends (however) takes
        its bytes with it."""
        live = self.streams.get(st.ctx.stream_id) is st
        held = len(st.buf) + sum(map(len, st.backlog)) if live else 0
        self.buffered += held - st.held
        st.held = held

    def _forget_all(self) -> None:
        for st in self.streams.values():
            st.held = 0
        self.streams.clear()
        self.buffered = 0

    def _check_buffered(self, what: str) -> None:
        if self.buffered > self.limits.max_buffered_bytes:
            log.warning("peer buffered %d bytes %s (limit %d); GOAWAY",
                        self.buffered, what, self.limits.max_buffered_bytes)
            self._goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def _forget(self, sid: int, st: _Stream) -> None:
        if self.streams.get(sid) is st:
            del self.streams[sid]
        self._recount(st)
        if st.pending is not None:  # reset or ended before its deferred reply: nobody waits for it
            fut, st.pending = st.pending, None
            fut.cancel()

    def _drop(self, sid: int) -> bool:
        st = self.streams.get(sid)
        if st is not None:
            self._forget(sid, st)
        return st is not None

    def _count_reset(self) -> bool:
        now = time.monotonic()
        if now - self.reset_window_start >= 1.0:
            self.reset_window_start, self.resets = now, 0
        self.resets += 1
        if self.resets > self.limits.max_resets_per_s:
            log.warning("peer reset %d streams within a second; GOAWAY", self.resets)
            self._goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            return True
        return False

    def _goaway(self, code: h2.errors.ErrorCodes) -> None:
        self.h2.close_connection(error_code=code)
        self._flush()
        self._cancel_pending()
        self._forget_all()
        if self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def graceful_close(self) -> None:
        """GOAWAY(NO_ERROR) naming the last stream we accepted; open streams may finish, then close.

        The frame is written beside h2, not through ``close_connection``: h2 treats a connection as
        closed once it sent GOAWAY and would reject the open streams' remaining frames."""
        if self.transport is None or self.transport.is_closing() or self.last_stream_id is not None:
            return
        self.closing = True
        self.last_stream_id = self.h2.highest_inbound_stream_id or 0
        self._flush()
        goaway = hyperframe.frame.GoAwayFrame(0)
        goaway.last_stream_id, goaway.error_code = self.last_stream_id, 0
        self.transport.write(goaway.serialize())
        if not self.streams:
            self.transport.close()


class GrpcH2Server:
    """Serve ``routes`` (``"/package.Service/Method"`` -> handler) on host:port."""

    def __init__(self, routes: dict[str, Handler], limits: ServerLimits | None = None) -> None:
        self.routes = {k.encode(): v for k, v in routes.items()}
        self.limits = limits or ServerLimits()
        self.stopping = False
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def connection_count(self) -> int:
        return len(self._connections)

    def buffered_bytes(self) -> int:
        """Bytes of partial or held-back messages buffered over all connections (0 when idle)."""
        return sum(c.buffered for c in list(self._connections))

    def _new_connection(self) -> _Connection:
        conn = _Connection(self)
        self._connections.add(conn)
        return conn

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, host, port, backlog=1024)

    async def stop(self, grace_s: float = 2.0) -> None:
        """GOAWAY to every peer and stop accepting; open streams get ``grace_s`` to finish."""
        if self._server is None:
            return
        self.stopping = True
        self._server.close()
        for conn in list(self._connections):
            conn.graceful_close()
        deadline = time.monotonic() + grace_s
        while any(c.streams for c in self._connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.close()
        self._connections.clear()
        await self._server.wait_closed()
        self._server = None
