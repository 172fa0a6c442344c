"""Background poll of each endpoint's ``GET /v1/models``: the models (base and LoRA adapters) it serves.

vLLM lists its base model (``parent: null``) and each loaded LoRA adapter (``parent``: the base
model) in OpenAI format: ``{"object": "list", "data": [{"id", "object": "model", "root", "parent"},
...]}``. Adapters are loaded and unloaded at runtime, on some replicas only, and vLLM's
``lora_requests_info`` gauge shows only adapters with requests in flight (and exists only after a
first request), so this list is what tells which replica *holds* an adapter. The EPP routes a
request only to endpoints whose list has its (rewritten) model (``policy.serving``).

Invariants: nothing here runs on the hot path: one task per endpoint, tracked and cancelled on
``stop()``; an endpoint is polled when added, when ``poke``d (the EPP does when an endpoint becomes
ready again: a restarted vLLM has lost its runtime adapters), every interval, and by ``refresh``
(the EPP, before it answers 404 for a model); a poll is bounded
by its timeout and the page by ``MAX_MODELS_BYTES``. A failed poll (no answer, an HTTP error such
as 404 from a server without the route) or an unusable page (not JSON, not the OpenAI list shape)
keeps the endpoint's last known set (an unknown one stays unknown, so the endpoint keeps counting
as able to serve any model); observers count it as outcome ``error`` or ``parse_error``. Trouble
is logged once per endpoint when it starts and once when it ends. A poll task never dies of one
bad iteration.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

import httpx

from inferstack.gateway.datastore import Datastore
from inferstack.gateway.scraper import get_bounded

__all__ = ["MAX_MODELS_BYTES", "ModelsObserver", "ModelsPoller", "UnreadableModels", "parse_models"]

log = logging.getLogger(__name__)

MAX_MODELS_BYTES = 1024 * 1024  # ~300 bytes a model: thousands of adapters; larger is not a model list


class UnreadableModels(ValueError):
    """A /v1/models answer that is not an OpenAI model list; the message says why."""


class ModelsObserver(Protocol):
    """Told the outcome of every poll ("ok", "error" or "parse_error") and the model ids read (empty
    unless "ok"); ``EppMetrics`` is one."""

    def observe_models(self, address: str, outcome: str, models: frozenset[str]) -> None: ...


def parse_models(body: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """(every model id, the ids that have a parent, i.e. LoRA adapters) of an OpenAI ``/v1/models``
    answer; ``UnreadableModels`` unless it is ``{"data": [{"id": "...", ...}, ...]}``. An entry
    without a string id makes the whole page unusable: dropping it could hide a served model."""
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
    return frozenset(ids), frozenset(adapters)


class ModelsPoller:
    """Keeps one poll loop per endpoint of the datastore; call ``sync()`` after membership changes."""

    def __init__(self, datastore: Datastore, interval_s: float, timeout_s: float,
                 observer: ModelsObserver | None = None) -> None:
        self._ds = datastore
        self._interval = interval_s
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._observer = observer
        self._trouble: dict[str, str] = {}  # address -> kind of trouble already logged
        self._broken: set[str] = set()  # addresses whose last iteration raised (already logged)

    def sync(self) -> None:
        addresses = {e.address for e in self._ds.all()}
        for a in list(self._tasks):
            if a not in addresses:
                self._tasks.pop(a).cancel()
                self._wake.pop(a, None)
                self._trouble.pop(a, None)
                self._broken.discard(a)
        for a in addresses - self._tasks.keys():
            self._wake[a] = asyncio.Event()
            self._tasks[a] = asyncio.create_task(self._loop(a), name=f"models {a}")

    def poke(self, address: str) -> None:
        """Poll ``address`` now instead of at the end of its interval."""
        wake = self._wake.get(address)
        if wake is not None:
            wake.set()

    def _log_trouble(self, address: str, kind: str, message: str, *args: object) -> None:
        if self._trouble.get(address) != kind:
            self._trouble[address] = kind
            log.warning(message, *args)

    async def _get(self, url: str) -> bytes | None:
        return await get_bounded(self._client, url, MAX_MODELS_BYTES)

    async def poll_once(self, address: str) -> tuple[str, frozenset[str]]:
        """One poll of ``address``: updates the datastore on success; returns the outcome ("ok",
        "error" or "parse_error") and the model ids read (empty unless "ok")."""
        url = f"http://{address}/v1/models"
        try:
            body = await self._get(url)
        except (httpx.HTTPError, OSError) as exc:
            self._log_trouble(address, "error", "endpoint %s: GET %s failed (%r); keeping its last known models",
                              address, url, exc)
            return "error", frozenset()
        try:
            if body is None:
                raise UnreadableModels(f"answer larger than {MAX_MODELS_BYTES} bytes")
            models, adapters = parse_models(body)
        except UnreadableModels as exc:
            self._log_trouble(address, "parse_error", "endpoint %s: %s unusable (%s); keeping its last known models",
                              address, url, exc)
            return "parse_error", frozenset()
        self._ds.set_served_models(address, models, adapters)
        if self._trouble.pop(address, None) is not None:
            log.info("endpoint %s: /v1/models usable again", address)
        return "ok", models

    async def refresh(self, addresses: list[str], timeout_s: float) -> None:
        """Poll ``addresses`` now, concurrently, for at most ``timeout_s`` (the EPP's recheck before a
        404); an endpoint that did not answer in time keeps its last known models."""
        async def one(address: str) -> None:
            outcome, models = await self.poll_once(address)
            if self._observer is not None:
                self._observer.observe_models(address, outcome, models)

        try:
            await asyncio.wait_for(asyncio.gather(*(one(a) for a in addresses), return_exceptions=True), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def _loop(self, address: str) -> None:
        wake = self._wake[address]
        while True:
            wake.clear()
            try:
                outcome, models = await self.poll_once(address)
                if self._observer is not None:
                    self._observer.observe_models(address, outcome, models)
            except Exception:  # one bad iteration must not end the endpoint's polling
                if address not in self._broken:
                    self._broken.add(address)
                    log.exception("endpoint %s: /v1/models poll failed; polling goes on", address)
            else:
                self._broken.discard(address)
            try:
                await asyncio.wait_for(wake.wait(), self._interval)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._wake.clear()
        await self._client.aclose()
