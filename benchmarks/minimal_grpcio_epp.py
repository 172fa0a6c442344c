"""The smallest useful ext_proc endpoint picker on grpcio: a baseline for ``gateway_overhead.py``.

It routes every request to one fixed ``--destination`` and does nothing else: no body parsing, no
scheduling, no metrics. What is left is the cost of grpcio's asyncio server plus one protobuf
parse per message, which is what a plain Python ext_proc server costs before any picking.
Per Envoy stream (our gateway's processing mode: request headers, then the buffered body sent
without waiting for the headers' answer):
- request headers -> a plain continue (``HeadersResponse{}``);
- request body    -> header ``x-gateway-destination-endpoint: <destination>`` and the same key under
                     dynamic metadata namespace ``envoy.lb`` (what the gateway's ``override_host``
                     load-balancing policy reads);
- any other phase -> an empty answer of the same phase (continue).
``grpc.health.v1.Health/Check`` answers SERVING. Answers are serialized once at start-up. If the
gateway's Envoy config streams its access log to the picker (``envoy.service.accesslog.v3``), the
entries are read and dropped unparsed, so (b) runs exactly the gateway's Envoy config.
SIGTERM/SIGINT stop the server (1 s grace).

    python benchmarks/minimal_grpcio_epp.py --port 9102 --destination 127.0.0.1:8201
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

__all__ = ["DESTINATION_HEADER", "main", "route_response", "start"]

DESTINATION_HEADER = "x-gateway-destination-endpoint"
METADATA_NAMESPACE = "envoy.lb"
_EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
_ACCESS_LOG_SERVICE = "envoy.service.accesslog.v3.AccessLogService"
_HEALTH_SERVICE = "grpc.health.v1.Health"
_HEALTH_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
_STOP_GRACE_S = 1.0


def route_response(destination: str) -> pb.ProcessingResponse:
    """The answer to a request body message: the destination as header and as ``envoy.lb`` metadata."""
    header = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=DESTINATION_HEADER, raw_value=destination.encode()),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    meta = struct_pb2.Struct()
    meta.update({METADATA_NAMESPACE: {DESTINATION_HEADER: destination}})
    common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=[header]))
    return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=meta)


async def start(host: str, port: int, destination: str) -> grpc.aio.Server:
    """Bind and start the server; the caller stops it (``await server.stop(grace)``)."""
    routed = route_response(destination).SerializeToString()
    answers = {"request_headers": pb.ProcessingResponse(request_headers=pb.HeadersResponse()).SerializeToString(),
               "request_body": routed}

    async def process(request_iterator, context):  # type: ignore[no-untyped-def]
        async for raw in request_iterator:
            which = pb.ProcessingRequest.FromString(raw).WhichOneof("request")
            if which is None:
                continue  # an empty message asks for nothing
            out = answers.get(which)
            if out is None:  # a phase the gateway's Envoy config does not send: continue unchanged
                out = answers[which] = pb.ProcessingResponse(**{which: {}}).SerializeToString()
            yield out

    async def access_logs(request_iterator, context) -> bytes:  # type: ignore[no-untyped-def]
        async for _ in request_iterator:
            pass
        return b""  # StreamAccessLogsResponse{}

    async def health(raw: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
        return _HEALTH_SERVING

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(_EXT_PROC_SERVICE, {
            "Process": grpc.stream_stream_rpc_method_handler(process)}),
        grpc.method_handlers_generic_handler(_ACCESS_LOG_SERVICE, {
            "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(access_logs)}),
        grpc.method_handlers_generic_handler(_HEALTH_SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(health)}),
    ])
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind the minimal ext_proc server's port {host}:{port}")
    await server.start()
    return server


async def _serve(host: str, port: int, destination: str) -> None:
    server = await start(host, port, destination)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"minimal grpcio ext_proc pid {os.getpid()} on {host}:{port} -> {destination}", flush=True)
    await stop.wait()
    await server.stop(grace=_STOP_GRACE_S)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--destination", required=True, help="host:port every request is routed to")
    args = ap.parse_args()
    asyncio.run(_serve(args.host, args.port, args.destination))


if __name__ == "__main__":
    main()
