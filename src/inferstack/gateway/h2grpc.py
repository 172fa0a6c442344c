"""A lean gRPC-over-HTTP/2 server (asyncio Protocol) for the EPP's hot path.

Why: per request Envoy opens one ext_proc stream and exchanges two small messages; with grpcio's
asyncio server the per-stream machinery costs several hundred microseconds of Python time, more
than Envoy itself. This server does only what a gRPC server in front of Envoy needs:
HTTP/2 framing (RFC 9113), HPACK decoding of request headers (to read ``:path``), gRPC length-
prefixed messages (uncompressed), flow control, SETTINGS/PING/GOAWAY/RST_STREAM, and answers
each message synchronously through a handler ``(path, message) -> reply | None``.

Invariants:
- a handler is called once per complete gRPC message, in order, on the event loop, without
  creating tasks; it must not block. A reply of None answers nothing for that message.
- a stream ends with trailers ``grpc-status: 0`` when the client half-closes (or ``12``,
  UNIMPLEMENTED, for an unknown path); a RST_STREAM drops it silently.
- we advertise a 2^31-1 receive window and replenish the connection window, so large request
  bodies never stall; our sends respect the peer's windows and max frame size (queued if needed).
- each ``data_received`` call ends with at most one ``transport.write`` (writes are batched).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

import hpack

__all__ = ["GrpcH2Server", "Handler"]

log = logging.getLogger(__name__)

Handler = Callable[[bytes], bytes | None]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONT = range(10)
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIO_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_MAX_WINDOW = 2**31 - 1
_HDR = struct.Struct(">HBBBI")


def _frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    n = len(payload)
    return _HDR.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def _lit(name: bytes, value: bytes) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (lengths < 127)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


# :status 200 (static index 8) + content-type: application/grpc (literal, name index 31)
_RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + bytes([len(b"application/grpc")]) + b"application/grpc"
_TRAILERS_OK = _lit(b"grpc-status", b"0")
_TRAILERS_UNIMPLEMENTED = _lit(b"grpc-status", b"12") + _lit(b"grpc-message", b"unknown method")


class _Stream:
    __slots__ = ("buf", "handler", "responded", "send_window", "closed_remote")

    def __init__(self, handler: Handler | None, send_window: int) -> None:
        self.buf = bytearray()
        self.handler = handler
        self.responded = False
        self.send_window = send_window
        self.closed_remote = False


class _Connection(asyncio.Protocol):
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.preface_ok = False
        self.decoder = hpack.Decoder()
        self.streams: dict[int, _Stream] = {}
        self.out: list[bytes] = []
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.conn_send_window = 65535
        self.recv_unacked = 0
        self.pending: list[tuple[int, bytes, bool]] = []  # (stream id, data payload, then trailers?)
        self.header_block: bytearray | None = None
        self.header_stream = 0
        self.header_end_stream = False

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        settings = struct.pack(">HI", 0x4, _MAX_WINDOW) + struct.pack(">HI", 0x3, 10_000)
        transport.write(_frame(_SETTINGS, 0, 0, settings)  # type: ignore[attr-defined]
                        + _frame(_WINDOW, 0, 0, struct.pack(">I", _MAX_WINDOW - 65535)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.preface_ok:
            if len(buf) < len(_PREFACE):
                return
            if bytes(buf[:len(_PREFACE)]) != _PREFACE:
                log.warning("not an HTTP/2 client (bad preface); closing")
                self.transport.close()  # type: ignore[union-attr]
                return
            del buf[:len(_PREFACE)]
            self.preface_ok = True
        pos, end = 0, len(buf)
        try:
            while end - pos >= 9:
                hi, lo, ftype, flags, sid = _HDR.unpack_from(buf, pos)
                length = (hi << 8) | lo
                if end - pos - 9 < length:
                    break
                payload = bytes(buf[pos + 9:pos + 9 + length])
                pos += 9 + length
                self._frame_received(ftype, flags, sid & 0x7FFFFFFF, payload)
        finally:
            del buf[:pos]
            if self.out:
                self.transport.write(b"".join(self.out))  # type: ignore[union-attr]
                self.out.clear()

    # -- frames --
    def _frame_received(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype == _DATA:
            self._on_data(flags, sid, payload)
        elif ftype == _HEADERS:
            if flags & _PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & _PRIO_FLAG:
                payload = payload[5:]
            self.header_block = bytearray(payload)
            self.header_stream, self.header_end_stream = sid, bool(flags & _END_STREAM)
            if flags & _END_HEADERS:
                self._on_headers()
        elif ftype == _CONT:
            if self.header_block is not None:
                self.header_block += payload
                if flags & _END_HEADERS:
                    self._on_headers()
        elif ftype == _SETTINGS:
            if not flags & _ACK:
                for i in range(0, len(payload) - 5, 6):
                    key, value = struct.unpack_from(">HI", payload, i)
                    if key == 0x4:
                        delta = value - self.peer_initial_window
                        self.peer_initial_window = value
                        for st in self.streams.values():
                            st.send_window += delta
                    elif key == 0x5:
                        self.peer_max_frame = value
                self.out.append(_frame(_SETTINGS, _ACK, 0, b""))
                self._flush_pending()
        elif ftype == _WINDOW:
            inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
            if sid == 0:
                self.conn_send_window += inc
            elif sid in self.streams:
                self.streams[sid].send_window += inc
            self._flush_pending()
        elif ftype == _PING:
            if not flags & _ACK:
                self.out.append(_frame(_PING, _ACK, 0, payload))
        elif ftype == _RST:
            self.streams.pop(sid, None)
            self.pending = [p for p in self.pending if p[0] != sid]
        elif ftype == _GOAWAY:
            log.debug("peer sent GOAWAY")
        # PRIORITY, PUSH_PROMISE and unknown frame types are ignored (RFC 9113 5.5)

    def _on_headers(self) -> None:
        block, sid = bytes(self.header_block or b""), self.header_stream
        self.header_block = None
        try:
            headers = self.decoder.decode(block, raw=True)
        except hpack.HPACKError as exc:
            log.warning("bad HPACK block on stream %d (%s); closing connection", sid, exc)
            self.out.append(_frame(_GOAWAY, 0, 0, struct.pack(">II", sid, 0x9)))
            self.transport.close()  # type: ignore[union-attr]
            return
        st = self.streams.get(sid)
        if st is None:  # new stream
            path = next((v for k, v in headers if k == b":path"), b"").decode("latin-1")
            st = self.streams[sid] = _Stream(self.routes.get(path), self.peer_initial_window)
            if st.handler is None:
                self._send_trailers(sid, st, _TRAILERS_UNIMPLEMENTED)
                return
        if self.header_end_stream:
            self._half_closed(sid, st)

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        if flags & _PADDED:
            payload = payload[1:n - payload[0]]
        self.recv_unacked += n
        if self.recv_unacked > _MAX_WINDOW // 2:
            self.out.append(_frame(_WINDOW, 0, 0, struct.pack(">I", self.recv_unacked)))
            self.recv_unacked = 0
        st = self.streams.get(sid)
        if st is None:
            return
        buf = st.buf
        if not buf and len(payload) >= 5 and payload[0] == 0:
            # fast path: a whole message in one frame
            mlen = int.from_bytes(payload[1:5], "big")
            if len(payload) == 5 + mlen:
                self._message(sid, st, payload[5:])
                payload = b""
        if payload:
            buf += payload
            while len(buf) >= 5:
                if buf[0] != 0:
                    log.warning("compressed gRPC message on stream %d is not supported; resetting", sid)
                    self.out.append(_frame(_RST, 0, sid, struct.pack(">I", 0x1)))
                    self.streams.pop(sid, None)
                    return
                mlen = int.from_bytes(buf[1:5], "big")
                if len(buf) < 5 + mlen:
                    break
                msg = bytes(buf[5:5 + mlen])
                del buf[:5 + mlen]
                self._message(sid, st, msg)
        if flags & _END_STREAM and sid in self.streams:
            self._half_closed(sid, st)

    # -- application --
    def _message(self, sid: int, st: _Stream, msg: bytes) -> None:
        assert st.handler is not None
        try:
            reply = st.handler(msg)
        except Exception:  # a handler bug must not take the connection (and every stream) down
            log.exception("handler failed on stream %d", sid)
            self._send_trailers(sid, st, _lit(b"grpc-status", b"13") + _lit(b"grpc-message", b"internal error"))
            return
        if reply is None:
            return
        if not st.responded:
            st.responded = True
            self.out.append(_frame(_HEADERS, _END_HEADERS, sid, _RESPONSE_HEADERS))
        self._send_data(sid, st, len(reply).to_bytes(5, "big") + reply)

    def _half_closed(self, sid: int, st: _Stream) -> None:
        st.closed_remote = True
        self._send_trailers(sid, st, _TRAILERS_OK)

    def _send_trailers(self, sid: int, st: _Stream, trailers: bytes) -> None:
        if any(p[0] == sid for p in self.pending):
            self.pending.append((sid, trailers, True))
            return
        if not st.responded:
            block = _RESPONSE_HEADERS + trailers  # trailers-only response
        else:
            block = trailers
        self.out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, sid, block))
        self.streams.pop(sid, None)

    def _send_data(self, sid: int, st: _Stream, data: bytes) -> None:
        n = len(data)
        if (not self.pending and n <= self.peer_max_frame and n <= self.conn_send_window
                and n <= st.send_window):
            self.conn_send_window -= n
            st.send_window -= n
            self.out.append(_frame(_DATA, 0, sid, data))
            return
        self.pending.append((sid, data, False))
        self._flush_pending()

    def _flush_pending(self) -> None:
        while self.pending:
            sid, data, is_trailers = self.pending[0]
            st = self.streams.get(sid)
            if st is None:
                self.pending.pop(0)
                continue
            if is_trailers:
                self.pending.pop(0)
                self.out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, sid, data))
                self.streams.pop(sid, None)
                continue
            room = min(self.conn_send_window, st.send_window, self.peer_max_frame)
            if room <= 0:
                return
            chunk, rest = data[:room], data[room:]
            self.conn_send_window -= len(chunk)
            st.send_window -= len(chunk)
            self.out.append(_frame(_DATA, 0, sid, chunk))
            if rest:
                self.pending[0] = (sid, rest, False)
            else:
                self.pending.pop(0)


class GrpcH2Server:
    """Serve ``routes`` (``"/package.Service/Method"`` -> handler) on host:port."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()

    def _new_connection(self) -> _Connection:
        conn = _Connection(self.routes)
        self._connections.add(conn)
        return conn

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, host, port, backlog=1024)

    async def stop(self) -> None:
        """Stop accepting, then close every connection (in-flight streams were answered in-line)."""
        if self._server is not None:
            self._server.close()
            for conn in self._connections:
                if conn.transport is not None:
                    conn.transport.close()
            self._connections.clear()
            await self._server.wait_closed()
            self._server = None
