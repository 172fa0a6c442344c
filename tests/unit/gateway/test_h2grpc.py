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
