"""Abuse of the EPP's gRPC server with raw HTTP/2 frames: hand-picked attacks and hypothesis.

Every case must end in a protocol-error answer (GOAWAY / RST_STREAM / an error status) or a clean
close, never a hang or a crash: after each one the same server still answers a real grpcio client
on a new connection, closed connections are pruned, and memory stays bounded.
"""

from __future__ import annotations

import resource
import socket
import struct
import time

import grpc
import hpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstack.gateway.h2grpc import ServerLimits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
ERR = {0x1: "PROTOCOL_ERROR", 0x3: "FLOW_CONTROL_ERROR", 0x6: "FRAME_SIZE_ERROR", 0x9: "COMPRESSION_ERROR",
       0xB: "ENHANCE_YOUR_CALM", 0x5: "STREAM_CLOSED"}


def frame(ftype: int, flags: int, sid: int, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def request_headers(path: str = "/t.S/Echo") -> bytes:
    return hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                   (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])


def grpc_msg(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class RawPeer:
    """A raw HTTP/2 client: sends bytes, collects the server's frames until it closes or goes quiet."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        self.buf = b""
        self.closed = False
        self.reset = False  # a write failed: the server closed while we were still writing

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:  # the server may close while we are still writing an attack
            self.closed = self.reset = True

    def frames(self, quiet_s: float = 0.3, limit_s: float = 5.0) -> list[tuple[int, int, int, bytes]]:
        """Read until the server closes, or sends nothing for ``quiet_s``; parse its frames."""
        end = time.monotonic() + limit_s
        self.sock.settimeout(quiet_s)
        while time.monotonic() < end and not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
        out, pos = [], 0
        while len(self.buf) - pos >= 9:
            n = int.from_bytes(self.buf[pos:pos + 3], "big")
            if len(self.buf) - pos - 9 < n:
                break
            ftype, flags = self.buf[pos + 3], self.buf[pos + 4]
            sid = int.from_bytes(self.buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            out.append((ftype, flags, sid, self.buf[pos + 9:pos + 9 + n]))
            pos += 9 + n
        return out

    def goaway_code(self, frames: list[tuple[int, int, int, bytes]]) -> str | None:
        for ftype, _, _, payload in frames:
            if ftype == GOAWAY:
                return ERR.get(struct.unpack(">I", payload[4:8])[0], "other")
        return None

    def close(self) -> None:
        self.sock.close()


def assert_still_serving(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary("/t.S/Echo")(b"abc", timeout=5) == b"cba"


def attack(port: int, data: bytes) -> tuple[RawPeer, list]:
    peer = RawPeer(port)
    peer.send(data)
    got = peer.frames()
    return peer, got


# -- hand-picked frames -------------------------------------------------------------------------
PROTOCOL_ERRORS = {
    "2-byte WINDOW_UPDATE": (frame(WINDOW, 0, 0, b"\x00\x01"), "FRAME_SIZE_ERROR"),
    "empty PADDED DATA": (frame(HEADERS, END_HEADERS, 1, request_headers()) + frame(DATA, PADDED, 1, b""),
                          "FRAME_SIZE_ERROR"),  # h2 reports a missing pad length byte as a size error
    "padding longer than the frame": (frame(HEADERS, END_HEADERS, 1, request_headers())
                                      + frame(DATA, PADDED, 1, b"\x10abc"), "PROTOCOL_ERROR"),
    "frame above SETTINGS_MAX_FRAME_SIZE": (frame(HEADERS, END_HEADERS, 1, request_headers())
                                            + frame(DATA, 0, 1, b"x" * 16385), "FRAME_SIZE_ERROR"),
    "DATA on stream 0": (frame(DATA, 0, 0, b"abc"), "PROTOCOL_ERROR"),
    "HEADERS on stream 0": (frame(HEADERS, END_HEADERS, 0, request_headers()), "PROTOCOL_ERROR"),
    "even (server-initiated) stream id": (frame(HEADERS, END_HEADERS, 2, request_headers()), "PROTOCOL_ERROR"),
    "stream id going backwards": (frame(HEADERS, END_HEADERS, 5, request_headers())
                                  + frame(HEADERS, END_HEADERS, 3, request_headers()), "PROTOCOL_ERROR"),
    "CONTINUATION without HEADERS": (frame(CONT, END_HEADERS, 1, request_headers()), "PROTOCOL_ERROR"),
    "CONTINUATION on another stream": (frame(HEADERS, 0, 1, request_headers()[:3])
                                       + frame(CONT, END_HEADERS, 3, request_headers()[3:]), "PROTOCOL_ERROR"),
    "connection window overflow": (frame(WINDOW, 0, 0, struct.pack(">I", 0x7FFFFFFF)), "FLOW_CONTROL_ERROR"),
    "zero WINDOW_UPDATE on the connection": (frame(WINDOW, 0, 0, struct.pack(">I", 0)), "PROTOCOL_ERROR"),
    "SETTINGS initial window above 2^31-1": (frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 0x80000000)),
                                             "FLOW_CONTROL_ERROR"),
    "SETTINGS max frame size below 16384": (frame(SETTINGS, 0, 0, struct.pack(">HI", 0x5, 100)),
                                            "PROTOCOL_ERROR"),
    "SETTINGS with a partial entry": (frame(SETTINGS, 0, 0, b"\x00\x04\x00"), "FRAME_SIZE_ERROR"),
    "PING of 7 bytes": (frame(PING, 0, 0, b"1234567"), "FRAME_SIZE_ERROR"),
    "PUSH_PROMISE from a client": (frame(PUSH, END_HEADERS, 1, b"\x00\x00\x00\x02" + request_headers()),
                                   "PROTOCOL_ERROR"),
    "bad HPACK (index far beyond the table)": (frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\x0f"),
                                               "PROTOCOL_ERROR"),
    "RST_STREAM on an idle stream": (frame(RST, 0, 7, struct.pack(">I", 8)), "PROTOCOL_ERROR"),
    "HEADERS without :path": (frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(
        [(":method", "POST"), (":scheme", "http"), (":authority", "x")])), "PROTOCOL_ERROR"),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_ERRORS))
def test_malformed_frames_get_goaway_and_the_server_keeps_serving(grpc_server, name):
    data, code = PROTOCOL_ERRORS[name]
    peer, got = attack(grpc_server.port, data)
    assert peer.goaway_code(got) == code, (name, got)
    assert peer.closed
    peer.close()
    assert_still_serving(grpc_server.port)


def test_bad_preface_is_closed(grpc_server):
    sock = socket.create_connection(("127.0.0.1", grpc_server.port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()  # closed by the server (after a GOAWAY)
    assert_still_serving(grpc_server.port)


def test_truncated_frame_then_close(grpc_server):
    peer = RawPeer(grpc_server.port)
    peer.send(frame(HEADERS, END_HEADERS, 1, request_headers())[:12])
    peer.close()
    assert_still_serving(grpc_server.port)
    deadline = time.monotonic() + 5  # closed connections are pruned
    while grpc_server.call(grpc_server.server.connection_count) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert grpc_server.call(grpc_server.server.connection_count) == 0


def test_unknown_frame_types_are_ignored(grpc_server):
    peer, got = attack(grpc_server.port, frame(0x42, 0, 0, b"whatever") + frame(PING, 0, 0, b"12345678"))
    assert (PING, ACK, 0, b"12345678") in got and peer.goaway_code(got) is None
    peer.close()


def test_continuation_flood_is_bounded(grpc_server):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peer = RawPeer(grpc_server.port)
    peer.send(frame(HEADERS, 0, 1, request_headers()[:4]))
    chunk = frame(CONT, 0, 1, b"\x00" * 16384)
    for _ in range(400):  # 6.5 MB of header block: h2 stops it after 64 CONTINUATION frames
        peer.send(chunk * 5)
        if peer.closed:
            break
    got = peer.frames()
    assert peer.closed or peer.goaway_code(got) is not None
    peer.close()
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kb < 16 * 1024, f"peak RSS grew by {grown_kb} KiB"
    assert_still_serving(grpc_server.port)


def test_rst_storm_gets_enhance_your_calm(grpc_server):
    peer = RawPeer(grpc_server.port)
    block = request_headers()
    burst = b"".join(frame(HEADERS, END_HEADERS, sid, block) + frame(RST, 0, sid, struct.pack(">I", 8))
                     for sid in range(1, 2 * 2500, 2))
    peer.send(burst)
    got = peer.frames(quiet_s=2.0)  # 5,000 frames take a while on a loaded machine
    assert peer.goaway_code(got) == "ENHANCE_YOUR_CALM"
    peer.close()
    assert_still_serving(grpc_server.port)


@pytest.mark.parametrize("grpc_server", [ServerLimits(max_concurrent_streams=10)], indirect=True)
def test_concurrent_stream_limit_is_enforced(grpc_server):
    peer = RawPeer(grpc_server.port)
    peer.frames(quiet_s=0.1)  # our SETTINGS (with the limit) have been read and acknowledged
    peer.send(frame(SETTINGS, ACK, 0, b""))
    peer.send(b"".join(frame(HEADERS, END_HEADERS, sid, request_headers()) for sid in range(1, 2 * 11, 2)))
    got = peer.frames()
    refused = [sid for ftype, _, sid, payload in got if ftype == RST and payload == struct.pack(">I", 0x7)]
    assert refused == [21] or peer.goaway_code(got) == "PROTOCOL_ERROR", got
    peer.close()
    assert_still_serving(grpc_server.port)


def test_announced_oversized_message_is_resource_exhausted(grpc_server):
    peer = RawPeer(grpc_server.port)
    peer.send(frame(HEADERS, END_HEADERS, 1, request_headers())
              + frame(DATA, 0, 1, b"\x00" + struct.pack(">I", 100 << 20) + b"x" * 100))
    got = peer.frames()
    dec = hpack.Decoder()
    statuses = [dict(dec.decode(p)).get("grpc-status") for t, _, sid, p in got if t == HEADERS and sid == 1]
    assert "8" in statuses, got  # RESOURCE_EXHAUSTED
    peer.close()
    assert_still_serving(grpc_server.port)


@pytest.mark.parametrize("grpc_server", [ServerLimits(max_buffered_bytes=1 << 20)], indirect=True)
def test_buffered_partial_messages_are_bounded(grpc_server):
    peer = RawPeer(grpc_server.port)
    peer.send(frame(SETTINGS, ACK, 0, b""))
    # 8 streams each start a 1 MB message and send 200 KB of it: 1.6 MB buffered > the 1 MiB bound
    for sid in range(1, 17, 2):
        peer.send(frame(HEADERS, END_HEADERS, sid, request_headers())
                  + frame(DATA, 0, sid, b"\x00" + struct.pack(">I", 1 << 20) + b"x" * 16000))
        for _ in range(12):
            peer.send(frame(DATA, 0, sid, b"x" * 16384))
    got = peer.frames()
    # the GOAWAY, unless the server's close reset the connection while we were still writing: the
    # kernel then drops what we had not read yet, GOAWAY included
    assert peer.goaway_code(got) == "ENHANCE_YOUR_CALM" or (peer.reset and not got)
    peer.close()
    assert_still_serving(grpc_server.port)


def test_stream_windows_are_replenished(grpc_server):
    """A client may send far more than one initial window on a stream over time."""
    big = b"y" * (3 << 20)  # 3 MiB > the 1 MiB per-stream window we advertise
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}",
                               options=[("grpc.max_receive_message_length", 8 << 20)]) as ch:
        call = ch.stream_stream("/t.S/Echo")
        assert [len(m) for m in call(iter([big, big, big]), timeout=20)] == [len(big)] * 3


def test_graceful_stop_sends_goaway_and_closes(grpc_server):
    import asyncio

    peer = RawPeer(grpc_server.port)
    peer.send(frame(SETTINGS, ACK, 0, b"") + frame(HEADERS, END_HEADERS, 1, request_headers("/t.S/Silent")))
    peer.frames(quiet_s=0.2)
    stop = asyncio.run_coroutine_threadsafe(grpc_server.server.stop(grace_s=2.0), grpc_server.loop)
    time.sleep(0.2)
    # the open stream may still finish during the grace period: half-close it
    peer.send(frame(DATA, END_STREAM, 1, grpc_msg(b"last")))
    got = peer.frames(quiet_s=0.5)
    stop.result(5)
    goaways = [struct.unpack(">II", p[:8]) for t, _, _, p in got if t == GOAWAY]
    assert goaways and goaways[0] == (1, 0)  # last stream id 1, NO_ERROR
    trailers = [p for t, fl, sid, p in got if t == HEADERS and sid == 1 and fl & END_STREAM]
    assert trailers, "the in-flight stream was not finished before the close"
    assert peer.closed


# -- hypothesis ------------------------------------------------------------------------------------
frames_st = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 0x7FFFFFFF]),
              st.binary(max_size=64), st.one_of(st.none(), st.integers(0, 20000))),
    min_size=1, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=frames_st, with_request=st.booleans())
def test_random_frames_never_break_the_server(grpc_server, frames, with_request):
    data = frame(HEADERS, END_HEADERS, 1, request_headers()) if with_request else b""
    for ftype, flags, sid, payload, length in frames:
        raw = frame(ftype, flags, sid, payload, length)
        data += raw if length is None else raw[:9 + min(length, len(payload))]
    peer, got = attack(grpc_server.port, data)
    for ftype, _, _, _ in got:
        assert ftype in (SETTINGS, PING, WINDOW, GOAWAY, RST, HEADERS, DATA)
    peer.close()
    assert_still_serving(grpc_server.port)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(noise=st.binary(min_size=1, max_size=512))
def test_random_bytes_after_the_preface(grpc_server, noise):
    peer, _ = attack(grpc_server.port, noise)
    peer.close()
    assert_still_serving(grpc_server.port)


def test_a_stream_reset_in_the_same_read_as_its_message_leaves_the_connection_serving(grpc_server):
    """The peer cancels a stream whose message we answer in the same read (Envoy does this when a
    client disconnects): h2 has closed the stream before we reply; only that stream is dropped."""
    peer = RawPeer(grpc_server.port)
    enc = hpack.Encoder()

    def hdrs():  # one encoder for the connection: later blocks use its dynamic table
        return enc.encode([(":method", "POST"), (":scheme", "http"), (":path", "/t.S/Echo"),
                           (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])

    peer.send(frame(SETTINGS, ACK, 0, b"")
              + frame(HEADERS, END_HEADERS, 1, hdrs()) + frame(DATA, 0, 1, grpc_msg(b"abc"))
              + frame(RST, 0, 1, struct.pack(">I", 8)))
    peer.send(frame(HEADERS, END_HEADERS, 3, hdrs()) + frame(DATA, END_STREAM, 3, grpc_msg(b"xyz")))
    got = peer.frames()
    assert peer.goaway_code(got) is None and not peer.closed
    assert any(t == DATA and sid == 3 and p.endswith(b"zyx") for t, _, sid, p in got), got
    peer.close()


# -- buffered-bytes accounting: bodies split across frames, streams ended every way ------------------
def sync(peer: RawPeer, token: bytes) -> list[tuple[int, int, int, bytes]]:
    """Read until the server acknowledges our PING: every frame sent before it has been handled."""
    peer.send(frame(PING, 0, 0, token))
    got: list[tuple[int, int, int, bytes]] = []
    deadline = time.monotonic() + 10
    while (PING, ACK, 0, token) not in got:
        assert time.monotonic() < deadline and not peer.closed, got
        got = peer.frames(quiet_s=0.05, limit_s=0.5)
    return got


FATES = ("handler_ends", "client_half_closes", "peer_resets", "left_half_open")
stream_plan = st.tuples(st.integers(1, 200_000), st.lists(st.integers(1, 16384), min_size=1, max_size=20),
                        st.sampled_from(FATES))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=st.lists(stream_plan, min_size=1, max_size=6), order=st.randoms(use_true_random=False))
def test_buffered_count_is_what_open_streams_hold(grpc_server, plans, order):
    """Messages cut at random points into DATA frames, frames of several streams interleaved; each
    stream then ends by the handler (EchoFinish), by the client's half-close, by the peer's reset, or
    not at all. The connection's buffered count is then exactly the bytes of the half-open streams'
    partial messages, and 0 once the peer goes."""
    enc = hpack.Encoder()
    peer = RawPeer(grpc_server.port)
    peer.send(frame(SETTINGS, ACK, 0, b""))
    queues: list[list[bytes]] = []
    expected = 0
    for i, (size, cuts, fate) in enumerate(plans):
        sid = 2 * i + 1
        path = "/t.S/EchoFinish" if fate == "handler_ends" else "/t.S/Echo"
        msg = grpc_msg(b"m" * size)
        if fate in ("peer_resets", "left_half_open"):
            msg = msg[:max(1, len(msg) * 2 // 3)]  # a partial message
        chunks, pos = [], 0
        for c in cuts:
            if pos >= len(msg):
                break
            chunks.append(msg[pos:pos + c])
            pos += c
        while pos < len(msg):
            chunks.append(msg[pos:pos + 16384])
            pos += 16384
        frames_ = [frame(DATA, END_STREAM if fate == "client_half_closes" and j == len(chunks) - 1 else 0, sid, c)
                   for j, c in enumerate(chunks)]
        if fate == "peer_resets":
            frames_.append(frame(RST, 0, sid, struct.pack(">I", 8)))
        if fate == "left_half_open":
            expected += len(msg)  # all of a partial message stays buffered
        peer.send(frame(HEADERS, END_HEADERS, sid, enc.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
             ("content-type", "application/grpc"), ("te", "trailers")])))
        queues.append(frames_)
    while any(queues):  # interleave the streams' frames, each stream's in order
        q = order.choice([q for q in queues if q])
        peer.send(q.pop(0))
    got = sync(peer, b"syncsync")
    assert peer.goaway_code(got) is None
    assert grpc_server.call(grpc_server.server.buffered_bytes) == expected
    peer.close()
    deadline = time.monotonic() + 5
    while grpc_server.call(grpc_server.server.connection_count) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert grpc_server.call(grpc_server.server.buffered_bytes) == 0
    assert_still_serving(grpc_server.port)
