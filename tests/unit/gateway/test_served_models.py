"""Served-model routing: the /v1/models poller, ``policy.serving``, the EPP's 404 for a model no
endpoint serves, rewrites to adapters, and the LoRA scorer's order among the endpoints left."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.datastore import Datastore, EndpointMetrics
from inferstack.gateway.epp import DESTINATION_HEADER, EndpointPicker
from inferstack.gateway.epp_metrics import EppMetrics
from inferstack.gateway.h2grpc import StreamContext
from inferstack.gateway.plugins.scorers import LoraAffinityScorer
from inferstack.gateway.policy import Rewrites, serving
from inferstack.gateway.scheduling import NoParams, Scheduler
from inferstack.gateway.served_models import ModelsPoller, UnreadableModels, parse_models
from inferstack.gateway.settings import (EppSettings, HoldSettings, RewriteSettings, RewriteTarget,
                                         SchedulerSettings)

from .conftest import PageServer, make_endpoint, make_request, until

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"
BASE, PIRATE = "base", "pirate"

# what vLLM answers with one runtime-loaded adapter (fields as vLLM 0.x lists them)
VLLM_MODELS = json.dumps({"object": "list", "data": [
    {"id": BASE, "object": "model", "created": 1, "owned_by": "vllm", "root": "/models/base", "parent": None,
     "max_model_len": 2048, "permission": [{"id": "modelperm-1", "object": "model_permission"}]},
    {"id": PIRATE, "object": "model", "created": 1, "owned_by": "vllm", "root": "/adapters/pirate",
     "parent": BASE, "max_model_len": None, "permission": []}]}).encode()


def page(*models: str) -> bytes:
    return json.dumps({"object": "list", "data": [
        {"id": m, "object": "model", "root": m, "parent": None if i == 0 else models[0]}
        for i, m in enumerate(models)]}).encode()


# --- parsing ----------------------------------------------------------------------------------

def test_parse_a_vllm_model_list():
    listed = parse_models(VLLM_MODELS)
    assert (listed.ids, listed.adapters) == (frozenset({BASE, PIRATE}), frozenset({PIRATE}))
    assert listed.entries == tuple(json.loads(VLLM_MODELS)["data"])
    assert parse_models(b'{"object": "list", "data": []}') == (frozenset(), frozenset(), ())
    # a parent equal to the id, or empty, is not an adapter
    assert parse_models(b'{"data": [{"id": "x", "parent": "x"}, {"id": "y", "parent": ""}]}')[1] == frozenset()


MALFORMED = {
    "not json": b'{"object": "list", "data": [',
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "binary": bytes(range(256)),
    "empty": b"",
    "a list": b'[{"id": "base"}]',
    "no data": b'{"object": "list"}',
    "data not a list": b'{"data": {"id": "base"}}',
    "entry not an object": b'{"data": ["base"]}',
    "entry without id": b'{"data": [{"id": "base"}, {"object": "model"}]}',
    "id not a string": b'{"data": [{"id": 7}]}',
    "empty id": b'{"data": [{"id": ""}]}',
    "null": b"null",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_model_lists_are_refused(body):
    with pytest.raises(UnreadableModels):
        parse_models(body)


# --- the datastore and policy.serving ---------------------------------------------------------

def test_datastore_records_served_models_and_reports_changes():
    ds = Datastore()
    ds.set_addresses([A])
    assert ds.get(A).served_models is None and ds.get(A).serves("anything")
    assert ds.set_served_models(A, frozenset({BASE}), frozenset()) is True
    assert ds.set_served_models(A, frozenset({BASE}), frozenset()) is False
    assert not ds.get(A).serves(PIRATE)
    assert ds.set_served_models("10.9.9.9:1", frozenset({BASE}), frozenset()) is False  # not a member
    # entries are kept at every poll (vLLM stamps "created" per answer), a change is one of ids
    entry = {"id": BASE, "created": 2}
    assert ds.set_served_models(A, frozenset({BASE}), frozenset(), (entry,)) is False
    assert ds.get(A).model_entries == (entry,)


def test_serving_keeps_the_able_and_the_unknown():
    a, b, c = (make_endpoint(x) for x in (A, B, C))
    a.served_models, b.served_models = frozenset({BASE, PIRATE}), frozenset({BASE})
    eps = [a, b, c]
    assert serving(BASE, eps) is eps  # every endpoint able: the list itself, nothing allocated
    assert serving(PIRATE, eps) == [a, c]  # c: not known yet, so it counts as able
    c.served_models = frozenset({BASE})
    assert serving(PIRATE, eps) == [a]
    assert serving("nope", eps) == []


# --- the EPP ----------------------------------------------------------------------------------

def picker(served: dict[str, frozenset[str] | None], **kw) -> EndpointPicker:
    p = EndpointPicker(EppSettings(**kw))
    p.on_endpoints(list(served))
    for a, models in served.items():
        p.datastore.update_metrics(a, EndpointMetrics(scraped_at=time.monotonic()))
        if models is not None:
            p.datastore.set_served_models(a, models, models - {BASE}, entries(a, models))
    return p


def entries(address: str, models: frozenset[str]) -> tuple[dict, ...]:
    """The /v1/models entries ``address`` would list (root: the address, to tell whose entry)."""
    return tuple({"id": m, "object": "model", "root": address, "parent": None if m == BASE else BASE}
                 for m in sorted(models))


def body_msg(model: str, content: str = "hi") -> bytes:
    doc = {"model": model, "messages": [{"role": "user", "content": content}]}
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=json.dumps(doc).encode(),
                                                         end_of_stream=True)).SerializeToString()


def decide(p: EndpointPicker, model: str, content: str = "hi") -> pb.ProcessingResponse:
    return pb.ProcessingResponse.FromString(p.handle(body_msg(model, content)))


def destinations(r: pb.ProcessingResponse) -> list[str]:
    common = r.request_body.response
    return {h.header.key: h.header.raw_value.decode()
            for h in common.header_mutation.set_headers}[DESTINATION_HEADER].split(",")


def error_of(r: pb.ProcessingResponse) -> tuple[int, dict]:
    imm = r.immediate_response
    assert {h.header.key: h.header.raw_value for h in imm.headers.set_headers}["content-type"] == b"application/json"
    return imm.status.code, json.loads(imm.body)


def count(p: EndpointPicker, outcome: str, endpoint: str = "") -> float:
    return sum(v.value for m in p.metrics.registry.collect() if m.name == "inferstack_epp_requests"
               for v in m.samples if v.name.endswith("_total") and v.labels["outcome"] == outcome
               and (not endpoint or v.labels["endpoint"] == endpoint))


def test_an_adapter_goes_only_to_endpoints_holding_it_and_a_base_model_anywhere():
    p = picker({A: frozenset({BASE, PIRATE}), B: frozenset({BASE})})
    for i in range(20):
        assert destinations(decide(p, PIRATE, f"q{i}")) == [A]  # no fallback to B: it would 404
    base = {destinations(decide(p, BASE, f"q{i}"))[0] for i in range(30)}
    assert base == {A, B}
    assert count(p, "routed", A) >= 20


def test_a_model_no_endpoint_serves_is_404_openai_json_and_counted():
    p = picker({A: frozenset({BASE, PIRATE}), B: frozenset({BASE, "adapter-b"})})
    code, body = error_of(decide(p, "parrot"))
    assert code == 404
    assert body == {"error": {
        "message": "The model `parrot` does not exist on any model server; served: adapter-b, base, pirate",
        "type": "NotFoundError", "param": "model", "code": 404}}
    assert count(p, "unknown_model") == 1 and count(p, "routed") == 0
    # a client's name nobody serves is labelled "other" (labels stay bounded)
    reg = p.metrics.registry
    assert reg.get_sample_value("inferstack_epp_requests_total", {
        "model": "other", "target_model": "other", "endpoint": "", "outcome": "unknown_model"}) == 1


def test_unknown_lists_count_as_able_so_nothing_breaks_before_the_first_poll():
    p = picker({A: None, B: None})
    assert destinations(decide(p, "anything"))[0] in (A, B)
    p = picker({A: frozenset({BASE}), B: None})  # B not polled yet (or has no /v1/models)
    for i in range(10):
        assert destinations(decide(p, PIRATE, f"q{i}")) == [B]


def test_the_404_looks_only_at_ready_endpoints():
    p = picker({A: frozenset({BASE}), B: frozenset({BASE, PIRATE})})
    p.datastore.mark_failed(B, "down")  # the only holder is not ready: 404 (it may be back later)
    code, body = error_of(decide(p, PIRATE))
    assert code == 404 and body["error"]["message"].endswith("served: base")


def test_a_404_lists_a_bounded_number_of_names_and_of_the_requested_name():
    many = frozenset({BASE, *(f"a{i:03d}" for i in range(50))})
    p = picker({A: many})
    _, body = error_of(decide(p, "x" * 5000))
    msg = body["error"]["message"]
    assert "... (31 more)" in msg and len(msg) < 600 and "x" * 200 + "..." in msg


def test_a_request_without_a_model_is_unaffected():
    p = picker({A: frozenset({BASE}), B: frozenset({"other"})})
    raw = pb.ProcessingRequest(request_headers=pb.HttpHeaders(end_of_stream=True)).SerializeToString()
    r = pb.ProcessingResponse.FromString(p.handle(raw))  # a body-less request: routed on its headers
    assert r.WhichOneof("response") == "request_headers"
    r = pb.ProcessingResponse.FromString(p.handle(body_msg("")))
    assert r.immediate_response.status.code == 400  # an empty model is a bad request, as before


def get_models_msg(path: str = "/v1/models") -> bytes:
    headers = [base_pb2.HeaderValue(key=":method", raw_value=b"GET"),
               base_pb2.HeaderValue(key=":path", raw_value=path.encode())]
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=headers), end_of_stream=True)).SerializeToString()


def get_models(p: EndpointPicker, path: str = "/v1/models") -> pb.ProcessingResponse:
    """Without a stream (nor a poller): answered at once from the lists known."""
    return pb.ProcessingResponse.FromString(p.handle(get_models_msg(path)))


def test_get_v1_models_lists_the_union_of_the_ready_endpoints_lists():
    # an adapter loaded by hand on A only, another on C only; B serves only the base
    p = picker({A: frozenset({BASE, PIRATE}), B: frozenset({BASE}), C: frozenset({BASE, "poet"})})
    for path in ("/v1/models", "/v1/models?limit=5"):
        code, doc = error_of(get_models(p, path))
        assert code == 200 and doc["object"] == "list"
        assert [m["id"] for m in doc["data"]] == [BASE, PIRATE, "poet"]  # base models first
        assert doc["data"][0]["root"] == A and doc["data"][1]["parent"] == BASE  # entries as served
    assert count(p, "models_list") == 2
    p.datastore.mark_failed(C, "down")  # only ready endpoints count
    assert [m["id"] for m in error_of(get_models(p))[1]["data"]] == [BASE, PIRATE]
    # other paths are routed as before
    assert get_models(p, "/v1/models/base").WhichOneof("response") == "request_headers"


def test_get_v1_models_goes_to_a_replica_while_a_list_is_unknown_or_none_is_ready():
    p = picker({A: frozenset({BASE}), B: None})  # B not polled yet (or models_poll off)
    assert get_models(p).WhichOneof("response") == "request_headers"
    p = picker({A: frozenset({BASE})})
    p.datastore.mark_failed(A, "down")
    assert error_of(get_models(p))[0] == 503  # no ready endpoint: the usual answer


def test_rewrites_filter_by_the_rewritten_target():
    split = RewriteSettings(model="chat", targets=[RewriteTarget(model=BASE, weight=90),
                                                   RewriteTarget(model=PIRATE, weight=10)])
    p = picker({A: frozenset({BASE, PIRATE}), B: frozenset({BASE})}, rewrites=[split])
    p.rewrites = Rewrites([split], rng=random.Random(7))
    seen: dict[str, set[str]] = {BASE: set(), PIRATE: set()}
    for i in range(300):
        r = decide(p, "chat", f"q{i}")
        target = json.loads(r.request_body.response.body_mutation.body)["model"]
        seen[target].add(destinations(r)[0])
        if target == PIRATE:
            assert destinations(r) == [A]
    assert seen == {BASE: {A, B}, PIRATE: {A}}
    # a rewrite to a target nobody serves: 404 naming both names
    gone = picker({A: frozenset({BASE})}, rewrites=[RewriteSettings(
        model="chat", targets=[RewriteTarget(model="canary")])])
    code, body = error_of(decide(gone, "chat"))
    assert code == 404 and "`canary` (rewritten from `chat`)" in body["error"]["message"]


def test_round_robin_respects_served_models_too():
    p = picker({A: frozenset({BASE, PIRATE}), B: frozenset({BASE})},
               scheduler=SchedulerSettings(picker="round-robin"))
    assert {destinations(decide(p, PIRATE, f"q{i}"))[0] for i in range(6)} == {A}


def test_a_held_request_for_an_unknown_model_gets_404_when_released():
    async def main() -> None:
        p = EndpointPicker(EppSettings(hold=HoldSettings(enabled=True)))
        stream = StreamContext(1)
        assert p.handle(body_msg("parrot"), stream)  # no endpoint yet: held
        assert stream.later is not None
        p.on_endpoints([A])
        p.datastore.set_served_models(A, frozenset({BASE}), frozenset())
        p.datastore.update_metrics(A, EndpointMetrics(scraped_at=time.monotonic()))
        p.director.release_waiting()
        code, _ = error_of(pb.ProcessingResponse.FromString(await stream.later))  # type: ignore[arg-type]
        assert code == 404

    asyncio.run(main())


class RecheckPoller:
    """Stands in for ModelsPoller's ``refresh``: each recheck applies ``after`` to the datastore."""

    def __init__(self, p: EndpointPicker, after: dict[str, frozenset[str]]) -> None:
        self.p, self.after, self.rechecks = p, after, 0

    async def refresh(self, addresses: list[str], timeout_s: float) -> None:
        self.rechecks += 1
        await asyncio.sleep(0.01)
        for a in addresses:
            if a in self.after:
                self.p.datastore.set_served_models(a, self.after[a], self.after[a] - {BASE}, entries(a, self.after[a]))


def test_a_model_loaded_since_the_last_poll_is_routed_after_a_recheck_not_404():
    async def main() -> None:
        p = picker({A: frozenset({BASE}), B: frozenset({BASE})})
        p.models_poller = poller = RecheckPoller(p, {B: frozenset({BASE, PIRATE})})  # type: ignore[assignment]
        stream = StreamContext(1)
        first = pb.ProcessingResponse.FromString(p.handle(body_msg(PIRATE), stream))
        assert first.HasField("override_message_timeout")  # Envoy waits; the decision follows
        routed = pb.ProcessingResponse.FromString(await stream.later)  # type: ignore[arg-type]
        assert destinations(routed) == [B] and poller.rechecks == 1
        assert count(p, "routed", B) == 1 and count(p, "unknown_model") == 0

    asyncio.run(main())


def test_a_flood_of_unknown_models_shares_rechecks_and_each_gets_404():
    async def main() -> None:
        p = picker({A: frozenset({BASE})})
        p.models_poller = poller = RecheckPoller(p, {})  # type: ignore[assignment]
        streams = [StreamContext(i) for i in range(50)]
        for i, stream in enumerate(streams):
            p.handle(body_msg(f"ghost-{i}"), stream)
        answers = await asyncio.gather(*(asyncio.ensure_future(s.later) for s in streams))  # type: ignore[arg-type]
        assert all(error_of(pb.ProcessingResponse.FromString(a))[0] == 404 for a in answers)
        assert poller.rechecks <= 2  # the first request's recheck, then one shared by the other 49
        assert count(p, "unknown_model") == 50

    asyncio.run(main())


def test_get_v1_models_polls_the_lists_again_so_an_adapter_loaded_a_moment_ago_is_listed():
    async def main() -> None:
        p = picker({A: frozenset({BASE}), B: frozenset({BASE})})
        p.models_poller = poller = RecheckPoller(p, {B: frozenset({BASE, PIRATE})})  # type: ignore[assignment]
        streams = [StreamContext(i) for i in range(20)]
        for stream in streams:
            first = pb.ProcessingResponse.FromString(p.handle(get_models_msg(), stream))
            assert first.HasField("override_message_timeout")  # Envoy waits; the list follows
        answers = await asyncio.gather(*(asyncio.ensure_future(s.later) for s in streams))  # type: ignore[arg-type]
        for a in answers:
            code, doc = error_of(pb.ProcessingResponse.FromString(a))
            assert code == 200 and [m["id"] for m in doc["data"]] == [BASE, PIRATE]
        assert poller.rechecks <= 2  # shared, like the 404 path's
        # a list still unknown after the recheck: the request goes to a replica, as before
        p.datastore.set_addresses([A, B, C])
        p.datastore.update_metrics(C, EndpointMetrics(scraped_at=time.monotonic()))
        stream = StreamContext(99)
        p.handle(get_models_msg(), stream)
        routed = pb.ProcessingResponse.FromString(await stream.later)  # type: ignore[arg-type]
        assert routed.WhichOneof("response") == "request_headers"

    asyncio.run(main())


def test_an_endpoint_that_becomes_ready_again_is_polled_at_once():
    class Poller:
        def __init__(self) -> None:
            self.poked: list[str] = []

        def poke(self, address: str) -> None:
            self.poked.append(address)

    p = EndpointPicker(EppSettings())
    p.models_poller = poller = Poller()  # type: ignore[assignment]
    p.on_endpoints([A])
    p.datastore.update_metrics(A, EndpointMetrics(scraped_at=time.monotonic()))
    p.on_scrape(A, True)
    p.on_scrape(A, True)
    assert poller.poked == [A]  # first ready: once
    p.datastore.mark_failed(A, "restarting")
    p.on_scrape(A, False)
    p.datastore.update_metrics(A, EndpointMetrics(scraped_at=time.monotonic()))
    p.on_scrape(A, True)
    assert poller.poked == [A, A]  # back after a restart, which loses runtime adapters


# --- the LoRA scorer --------------------------------------------------------------------------

def test_lora_scorer_orders_running_then_free_slot_then_waiting_then_none(ctx):
    S = SchedulerSettings()
    running = make_endpoint("a:1", loras=frozenset({PIRATE}), max_loras=1)
    free = make_endpoint("b:1", loras=frozenset({"x"}), max_loras=2)
    waiting = make_endpoint("c:1", loras=frozenset({"x"}), max_loras=1)
    waiting.metrics.waiting_loras = frozenset({PIRATE})
    full = make_endpoint("d:1", loras=frozenset({"x", "y"}), max_loras=2)
    never = make_endpoint("e:1")  # no lora_requests_info yet: no adapter ran, slots are free
    stale = make_endpoint("f:1", loras=frozenset({PIRATE}), max_loras=1, age_s=5)
    eps = [running, free, waiting, full, never, stale]
    for e in eps:
        e.served_models, e.served_adapters = frozenset({BASE, PIRATE}), frozenset({PIRATE})
    scorer = LoraAffinityScorer(NoParams(), S)
    assert scorer.score(ctx, make_request(model=PIRATE), eps) == [1.0, 0.8, 0.6, 0.0, 0.8, 0.0]
    # the base model: neutral, whatever the adapter slots
    assert scorer.score(ctx, make_request(model=BASE), eps) == [1.0] * 6


def test_lora_scorer_picks_the_replica_with_the_adapter_running(ctx):
    sched = Scheduler(SchedulerSettings(scorers=[{"type": "lora", "weight": 1}], fallbacks=0))
    hot = make_endpoint("a:1", loras=frozenset({PIRATE}), max_loras=1)
    cold = make_endpoint("b:1", loras=frozenset({"x"}), max_loras=1)
    for e in (hot, cold):
        e.served_adapters = frozenset({PIRATE})
    assert {sched.schedule(ctx, make_request(model=PIRATE), [cold, hot]).endpoint.address
            for _ in range(10)} == {"a:1"}


# --- the poller -------------------------------------------------------------------------------

def _models_server() -> PageServer:
    return PageServer("/v1/models", page(BASE), b"application/json")


async def _start(srv: PageServer, interval_s: float = 0.02, **kw):
    address = await srv.start()
    ds = Datastore()
    ds.set_addresses([address])
    metrics = EppMetrics(ds, Scheduler(SchedulerSettings()))
    poller = ModelsPoller(ds, interval_s=interval_s, timeout_s=0.5, observer=metrics, **kw)
    poller.sync()
    return srv, address, ds, poller, metrics


def test_poller_reads_the_list_keeps_it_through_trouble_and_follows_changes(caplog):
    async def main() -> None:
        srv = _models_server()
        server, address, ds, poller, metrics = await _start(srv)

        def polls(outcome: str) -> float:
            return metrics.registry.get_sample_value("inferstack_epp_model_polls_total",
                                                     {"endpoint": address, "outcome": outcome}) or 0

        def gauge() -> float | None:
            return metrics.registry.get_sample_value("inferstack_epp_endpoint_served_models", {"endpoint": address})

        await until(lambda: ds.get(address).served_models is not None)
        assert ds.get(address).served_models == {BASE} and gauge() == 1
        srv.body = VLLM_MODELS  # an adapter loaded at runtime
        await until(lambda: ds.get(address).served_models == {BASE, PIRATE})
        assert ds.get(address).served_adapters == {PIRATE} and metrics.model_label(PIRATE) == PIRATE
        for kind, body in MALFORMED.items():
            caplog.clear()
            before = polls("parse_error")
            srv.body = body
            await until(lambda: polls("parse_error") >= before + 3)
            assert ds.get(address).served_models == {BASE, PIRATE}, kind  # kept, not cleared
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "keeping its last known models" in warnings[0].getMessage(), kind
            srv.body = VLLM_MODELS
            n = polls("ok")
            await until(lambda: polls("ok") >= n + 1)
        for status in (404, 500):  # a server without the route, a failing one
            srv.status = status
            before = polls("error")
            await until(lambda: polls("error") >= before + 3)
            assert ds.get(address).served_models == {BASE, PIRATE}
        srv.status = 200
        srv.body = page(BASE)  # the adapter unloaded
        await until(lambda: ds.get(address).served_models == {BASE})
        server.close()
        await server.wait_closed()
        before = polls("error")
        await until(lambda: polls("error") >= before + 3)  # no answer at all: kept too
        assert ds.get(address).served_models == {BASE}
        assert not poller._tasks[address].done()
        await poller.stop()

    with caplog.at_level(logging.INFO, logger="inferstack.gateway.served_models"):
        asyncio.run(main())


def test_poller_polls_at_once_on_add_and_on_poke_then_at_its_interval():
    async def main() -> None:
        srv = _models_server()
        server, address, ds, poller, _ = await _start(srv, interval_s=30.0)
        await until(lambda: srv.served == 1)  # at once when added
        await asyncio.sleep(0.1)
        assert srv.served == 1
        srv.body = VLLM_MODELS
        poller.poke(address)
        await until(lambda: ds.get(address).served_models == {BASE, PIRATE})
        assert srv.served == 2
        srv.body = page(BASE)
        await poller.refresh([address], timeout_s=1.0)  # the EPP's recheck before a 404: now, awaited
        assert ds.get(address).served_models == {BASE} and srv.served == 3
        ds.set_addresses([])
        poller.sync()  # the endpoint left: its task ends
        assert address not in poller._tasks
        poller.poke(address)  # no-op
        await poller.stop()
        server.close()

    asyncio.run(main())


def test_a_runaway_models_answer_is_refused(monkeypatch):
    import inferstack.gateway.served_models as module

    monkeypatch.setattr(module, "MAX_MODELS_BYTES", 1000)

    async def main() -> None:
        srv = _models_server()
        srv.body = page(BASE, *(f"adapter-{i}" for i in range(100)))
        server, address, ds, poller, metrics = await _start(srv)
        await until(lambda: (metrics.registry.get_sample_value(
            "inferstack_epp_model_polls_total", {"endpoint": address, "outcome": "parse_error"}) or 0) >= 2)
        assert ds.get(address).served_models is None
        await poller.stop()
        server.close()

    asyncio.run(main())


def test_models_poll_settings_defaults():
    s = EppSettings()
    assert (s.models_poll, s.models_interval_ms, s.models_timeout_ms) == (True, 2000, 1000)
