"""The EPP's own metrics: the client-controlled ``model`` label stays bounded."""

from __future__ import annotations

import random
import string

from inferstack.gateway.datastore import Datastore
from inferstack.gateway.epp_metrics import OTHER_MODEL, EppMetrics, configured_models
from inferstack.gateway.scheduling import Scheduler
from inferstack.gateway.settings import (EppSettings, ObjectiveSettings, RewriteSettings, RewriteTarget,
                                         SchedulerSettings)

SETTINGS = EppSettings(objectives=[ObjectiveSettings(model="batch", priority=-1),
                                   ObjectiveSettings(name="by-header", priority=-1)],
                       rewrites=[RewriteSettings(model="chat", targets=[RewriteTarget(model="base"),
                                                                        RewriteTarget(model="lora-a")])])


def _metrics(settings: EppSettings | None = SETTINGS) -> EppMetrics:
    return EppMetrics(Datastore(), Scheduler(SchedulerSettings()), settings)


def _label_sets(m: EppMetrics, family: str) -> list[dict[str, str]]:
    return [dict(s.labels) for f in m.registry.collect() if f.name == family
            for s in f.samples if s.name == family + "_total"]


def test_configured_models_are_objectives_rewrites_and_targets():
    assert configured_models(SETTINGS) == {"batch", "chat", "base", "lora-a"}


def test_ten_thousand_random_model_names_keep_few_label_sets():
    m = _metrics()
    rng = random.Random(8)
    for _ in range(10_000):
        name = "".join(rng.choices(string.printable, k=rng.randint(0, 40)))
        target = name if rng.random() < 0.5 else "base"
        m.count(name, target, "10.0.0.1:8000", "routed")
        m.shed.labels(name).inc()
    m.count("chat", "base", "10.0.0.1:8000", "routed")
    sets = _label_sets(m, "inferstack_epp_requests")
    models = {s["model"] for s in sets} | {s["target_model"] for s in sets}
    assert models <= {OTHER_MODEL, "base", "chat", ""}
    assert len(sets) <= 6
    assert {s["model"] for s in _label_sets(m, "inferstack_epp_shed_requests")} <= {OTHER_MODEL, "chat", "base", ""}
    assert len(m._children) == len(sets)  # the hot-path cache is bounded too
    total = sum(s.value for f in m.registry.collect() if f.name == "inferstack_epp_requests"
                for s in f.samples if s.name.endswith("_total"))
    assert total == 10_001  # nothing lost, only folded


def test_known_models_keep_their_names():
    m = _metrics()
    m.count("batch", "batch", "e:1", "shed")
    m.count("chat", "lora-a", "e:1", "routed")
    m.count("", "", "", "bad_request")
    m.count("unknown", "unknown", "e:1", "routed")
    got = {(s["model"], s["target_model"], s["outcome"]) for s in _label_sets(m, "inferstack_epp_requests")}
    assert got == {("batch", "batch", "shed"), ("chat", "lora-a", "routed"), ("", "", "bad_request"),
                   (OTHER_MODEL, OTHER_MODEL, "routed")}


def test_served_models_are_learned_from_scrapes_and_outcomes_counted():
    m = _metrics(None)
    assert m.model_label("smollm2") == OTHER_MODEL
    m.observe_scrape("e:1", "ok", frozenset({"smollm2", "my-adapter"}))
    m.observe_scrape("e:1", "parse_error", frozenset())
    assert m.model_label("smollm2") == "smollm2" and m.model_label("my-adapter") == "my-adapter"
    m.set_known_models({"alias"})  # configured names replace configured names, not learned ones
    assert m.model_label("alias") == "alias" and m.model_label("smollm2") == "smollm2"
    get = m.registry.get_sample_value
    assert get("inferstack_epp_scrapes_total", {"endpoint": "e:1", "outcome": "ok"}) == 1.0
    assert get("inferstack_epp_scrapes_total", {"endpoint": "e:1", "outcome": "parse_error"}) == 1.0


def test_a_server_cannot_flood_the_known_set():
    from inferstack.gateway.epp_metrics import MAX_SERVED_MODELS

    m = _metrics(None)
    m.observe_scrape("e:1", "ok", frozenset(f"m{i}" for i in range(MAX_SERVED_MODELS * 3)))
    assert len(m._served) == MAX_SERVED_MODELS


def test_pool_gauges_sum_the_ready_endpoints_and_hold_series_exist_from_the_start():
    import time

    from inferstack.gateway.datastore import EndpointMetrics

    ds = Datastore()
    ds.set_addresses(["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"])
    ds.update_metrics("10.0.0.1:8000", EndpointMetrics(waiting=3, scraped_at=time.monotonic()))
    ds.update_metrics("10.0.0.2:8000", EndpointMetrics(waiting=4, scraped_at=time.monotonic()))
    m = EppMetrics(ds, Scheduler(SchedulerSettings()), SETTINGS)
    get = m.registry.get_sample_value
    assert get("inferstack_epp_pool_ready_endpoints") == 2.0  # the third is not scraped yet
    assert get("inferstack_epp_pool_queue_requests") == 7.0
    assert get("inferstack_epp_held_requests") == 0.0
    for outcome in ("routed", "timeout", "full", "cancelled"):
        assert get("inferstack_epp_hold_outcomes_total", {"outcome": outcome}) == 0.0
