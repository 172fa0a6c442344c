"""Helpers shared by the gateway unit tests: endpoints with given metrics."""

from __future__ import annotations

import time

import pytest

from inferstack.gateway.datastore import Endpoint, EndpointMetrics
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.scheduling import SchedContext
from inferstack.gateway.settings import SaturationSettings


def make_endpoint(address: str, waiting: float = 0, running: float = 0, kv: float = 0.0, in_flight: int = 0,
                  age_s: float = 0.0, loras: frozenset[str] = frozenset(), max_loras: int = 0,
                  ready: bool = True) -> Endpoint:
    m = EndpointMetrics(waiting=waiting, running=running, kv_usage=kv, active_loras=loras,
                        max_loras=max_loras, scraped_at=time.monotonic() - age_s)
    return Endpoint(address, ready=ready, metrics=m, in_flight=in_flight)


def make_request(prompt: str = "hello", model: str = "m") -> InferenceRequest:
    return InferenceRequest(model=model, prompt=prompt, stream=False, max_tokens=None, kind="chat",
                            target_model=model)


@pytest.fixture
def ctx() -> SchedContext:
    return SchedContext(now=time.monotonic(), staleness_s=0.2, saturation=SaturationSettings())
