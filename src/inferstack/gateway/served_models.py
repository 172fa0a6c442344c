"""Background poll of each endpoint's ``GET /v1/models``: the models (base and LoRA adapters) it serves.

vLLM lists its base model (``parent: null``) and each loaded LoRA adapter (``parent``: the base
model) in OpenAI format: ``{"object": "list", "data": [{"id", "object": "model", "root", "parent"},
...]}``. Adapters are loaded and unloaded at runtime, on some replicas only, and vLLM's
``lora_requests_info`` gauge shows only adapters with requests in flight (and exists only after a
first request), so this list is what tells which replica *holds* an adapter. The EPP routes a
request only to endpoints whose list has its (rewritten) model (``policy.serving``).

Invariants (the loop's own are in ``endpoint_loops``): nothing here runs on the hot path; an
endpoint is polled when added, when ``poke``d (the EPP does when an endpoint becomes ready again:
a restarted vLLM has lost its runtime adapters), every interval, and by ``refresh`` (the EPP,
before it answers 404 for a model or answers ``GET /v1/models``); a poll is bounded by its
timeout and the page by ``MAX_MODELS_BYTES``. A failed poll (no answer, an HTTP error such
as 404 from a server without the route) or an unusable page (not JSON, not the OpenAI list shape)
keeps the endpoint's last known set (an unknown one stays unknown, so the endpoint keeps counting
as able to serve any model); observers count it as outcome ``error`` or ``parse_error``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, NamedTuple, Protocol

import httpx

from inferstack.gateway.datastore import Datastore
from inferstack.gateway.endpoint_loops import EndpointLoops, get_bounded

__all__ = ["MAX_MODELS_BYTES", "ModelList", "ModelsObserver", "ModelsPoller", "UnreadableModels", "parse_models"]

log = logging.getLogger(__name__)

MAX_MODELS_BYTES = 1024 * 1024  # ~300 bytes a model: thousands of adapters; larger is not a model list


class UnreadableModels(ValueError):
    """A /v1/models answer that is not an OpenAI model list; the message says why."""


class ModelsObserver(Protocol):
    """Told the outcome of every poll ("ok", "error" or "parse_error") and the model ids read (empty
    unless "ok"); ``EppMetrics`` is one."""

    def observe_models(self, address: str, outcome: str, models: frozenset[str]) -> None: ...


class ModelList(NamedTuple):
    """One endpoint's ``/v1/models``: every model id, the ids with a parent (LoRA adapters), and the
    entries themselves as served (the gateway's own ``GET /v1/models`` lists their union)."""

    ids: frozenset[str]
    adapters: frozenset[str]
    entries: tuple[dict[str, Any], ...]


def parse_models(body: bytes) -> ModelList:
    """The ``ModelList`` of an OpenAI ``/v1/models`` answer; ``UnreadableModels`` unless it is
    ``{"data": [{"id": "...", ...}, ...]}``. An entry without a string id makes the whole page
    unusable: dropping it could hide a served model."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableModels(f"not JSON: {exc}") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise UnreadableModels('not an OpenAI model list {"object": "list", "data": [...]}')
    ids: set[str] = set()
    adapters: set[str] = set()
    for i, item in enumerate(data):
        mid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(mid, str) or not mid:
            raise UnreadableModels(f"data[{i}] is not a model object with a string 'id'")
        ids.add(mid)
        parent = item.get("parent")
        if isinstance(parent, str) and parent and parent != mid:
            adapters.add(mid)
    return ModelList(frozenset(ids), frozenset(adapters), tuple(data))


class ModelsPoller(EndpointLoops):
    """Keeps one poll loop per endpoint of the datastore; call ``sync()`` after membership changes."""

    what = "models poll"

    def __init__(self, datastore: Datastore, interval_s: float, timeout_s: float,
                 observer: ModelsObserver | None = None) -> None:
        super().__init__(datastore, interval_s, timeout_s, log)
        self._observer = observer

    async def _get(self, url: str) -> bytes | None:
        return await get_bounded(self._client, url, MAX_MODELS_BYTES)

    async def poll_once(self, address: str) -> tuple[str, frozenset[str]]:
        """One poll of ``address``: updates the datastore on success; returns the outcome ("ok",
        "error" or "parse_error") and the model ids read (empty unless "ok")."""
        url = f"http://{address}/v1/models"
        try:
            body = await self._get(url)
        except (httpx.HTTPError, OSError) as exc:
            self.log_trouble(address, "error", "endpoint %s: GET %s failed (%r); keeping its last known models",
                             address, url, exc)
            return "error", frozenset()
        try:
            if body is None:
                raise UnreadableModels(f"answer larger than {MAX_MODELS_BYTES} bytes")
            listed = parse_models(body)
        except UnreadableModels as exc:
            self.log_trouble(address, "parse_error", "endpoint %s: %s unusable (%s); keeping its last known models",
                             address, url, exc)
            return "parse_error", frozenset()
        self._ds.set_served_models(address, listed.ids, listed.adapters, listed.entries)
        self.log_recovered(address, "/v1/models usable again")
        return "ok", listed.ids

    async def refresh(self, addresses: list[str], timeout_s: float) -> None:
        """Poll ``addresses`` now, concurrently, for at most ``timeout_s`` (the EPP's recheck before a
        404); an endpoint that did not answer in time keeps its last known models."""
        try:
            await asyncio.wait_for(asyncio.gather(*(self.iterate(a) for a in addresses), return_exceptions=True),
                                   timeout_s)
        except asyncio.TimeoutError:
            pass

    async def iterate(self, address: str) -> None:
        outcome, models = await self.poll_once(address)
        if self._observer is not None:
            self._observer.observe_models(address, outcome, models)
