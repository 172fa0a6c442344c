"""The gRPC server on h2 against the real grpcio client (a second, independent implementation)."""

import grpc
import pytest



@pytest.fixture
def server(grpc_server):
    return grpc_server.port


def test_unary(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as ch:
        assert ch.unary_unary("/t.S/Echo")(b"abc", timeout=5) == b"cba"
        assert ch.unary_unary("/t.S/Echo")(b"", timeout=5) == b""


def test_bidi_stream_many_messages_and_streams(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as ch:
        call = ch.stream_stream("/t.S/Twice")
        for n in range(30):  # many streams on one connection
            msgs = [bytes([65 + i]) * (i + n) for i in range(3)]
            assert list(call(iter(msgs), timeout=5)) == [m + m for m in msgs]


def test_large_messages_cross_frames_and_flow_control(server):
    big = bytes(range(256)) * 4096  # 1 MiB: many DATA frames each way, beyond the 64 KiB default window
    with grpc.insecure_channel(f"127.0.0.1:{server}", options=[("grpc.max_receive_message_length", 8 << 20)]) as ch:
        for _ in range(3):
            assert ch.unary_unary("/t.S/Echo")(big, timeout=10) == big[::-1]


def test_unknown_method_is_unimplemented(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/t.S/Nope")(b"x", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_handler_error_is_internal_and_connection_survives(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/t.S/Boom")(b"x", timeout=5)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert ch.unary_unary("/t.S/Echo")(b"ok", timeout=5) == b"ko"


def test_stream_without_replies_ends_ok(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as ch:
        assert list(ch.stream_stream("/t.S/Silent")(iter([b"a", b"b"]), timeout=5)) == []


# -- deferred replies (stream.later) --

def _wait_for(cond, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    import time
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_deferred_reply_is_sent_when_ready_then_the_stream_finishes(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as ch:
        assert ch.unary_unary("/t.S/Later")(b"abc", timeout=5) == b"cba"
        assert ch.unary_unary("/t.S/Echo")(b"xy", timeout=5) == b"yx"  # the connection serves on


def test_messages_and_half_close_wait_behind_a_deferred_reply_in_order(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as ch:
        # both messages and the half-close arrive at once; each reply pair comes in order
        got = list(ch.stream_stream("/t.S/NowAndLater")(iter([b"1", b"2"]), timeout=5))
    assert got == [b"now:1", b"later:1", b"now:2", b"later:2"]


def test_a_reset_while_a_reply_is_pending_cancels_it(grpc_server, hanging):
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as ch:
        call = ch.unary_stream("/t.S/Hang")(b"x", timeout=5)
        assert next(call) == b"holding"  # the immediate reply came; the deferred one is pending
        fut = hanging[-1]
        assert not grpc_server.call(fut.done)
        call.cancel()  # RST_STREAM(CANCEL)
        _wait_for(lambda: grpc_server.call(fut.cancelled))
        conn = grpc_server.call(lambda: next(iter(grpc_server.server._connections)))
        assert grpc_server.call(lambda: dict(conn.streams)) == {}
        assert ch.unary_unary("/t.S/Echo")(b"ok", timeout=5) == b"ko"


def test_a_closed_connection_cancels_pending_replies(grpc_server, hanging):
    ch = grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}")
    call = ch.unary_stream("/t.S/Hang")(b"x", timeout=5)
    assert next(call) == b"holding"
    fut = hanging[-1]
    ch.close()
    _wait_for(lambda: grpc_server.call(fut.cancelled))
    _wait_for(lambda: grpc_server.call(grpc_server.server.connection_count) == 0)


def test_a_failing_deferred_reply_is_internal(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/t.S/BoomLater")(b"x", timeout=5)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert ch.unary_unary("/t.S/Echo")(b"ok", timeout=5) == b"ko"


def test_multi_frame_messages_ended_by_the_handler_leave_nothing_counted(grpc_server):
    """A message over several DATA frames whose handler ends the stream (the EPP's case) must take
    its bytes out of the connection's buffered count: they once stayed counted for ever, and after
    64 MiB of long prompts the connection was closed with every stream on it."""
    body = b"p" * 100_000  # ~7 DATA frames
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as ch:
        call = ch.unary_unary("/t.S/EchoFinish")
        for _ in range(50):
            assert call(body, timeout=5) == body[::-1]
        assert grpc_server.call(grpc_server.server.connection_count) == 1  # the channel's, still open
        assert grpc_server.call(grpc_server.server.buffered_bytes) == 0
