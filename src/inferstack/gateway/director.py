"""The director: what the picker decides for one request, as a typed ``Decision``, no wire format.

Like GIE's director, one request goes through fixed steps:
0. auth (on its headers, before its body is read): with API keys on, no valid
   ``Authorization: Bearer`` key -> 401; the key names the tenant (else GIE's fairness-id header);
1. objective: the target model (``rewrites``) and the priority (``objectives``, by model or the
   objective header);
2. admission: no routable endpoint -> wait (scale from zero, ``Defer``) or 503; with flow control,
   no endpoint with room -> wait; waiting requests go first, in the wait queue's fair order
   (``gateway/waiting.py``); a full queue or an expired wait -> 503 (no endpoint) or 429 with
   Retry-After (saturated); without flow control a sheddable request on a saturated pool -> 429;
3. candidates: the ready endpoints serving the target model (one recheck of the served-models
   lists before a 404, ``Defer``);
4. schedule: filters, scorers and picker choose the endpoint and fallbacks (``Route``), recorded
   in the in-flight ledger.
Body-less requests: ``GET /v1/models`` is answered here (``Respond``: the union of the ready
endpoints' lists, rechecked after arrival), other methods there get 405 as vLLM answers; any
other body-less request is routed on its headers alone.
"""

from __future__ import annotations

import asyncio
import json
import time

from inferstack.auth import SERVICE, KeyFileWatch, KeyRefused, Tenant, hash_key, identify, read_key
from inferstack.errors import ConfigError
from inferstack.gateway.datastore import Datastore, Endpoint
from inferstack.gateway.decision import (Decision, Defer, PeerRouted, Phase, Reject, RequestContext, Respond, Route,
                                         RouteNote)
from inferstack.gateway.envoy_config import CLUSTER_NAME
from inferstack.gateway.epp_metrics import EppMetrics
from inferstack.gateway.fair_queue import ServiceWindow, weighted_tokens
from inferstack.gateway.hold import EnvoyLoadWatch
from inferstack.gateway.inflight import InFlightLedger, Usage
from inferstack.gateway.kv_events import KvBlockIndex, block_keys
from inferstack.gateway.plugins.scorers import PrecisePrefixScorer
from inferstack.gateway.policy import Objectives, Rewrites, has_capacity, is_saturated, serving
from inferstack.gateway.quota import QuotaExceeded, Quotas, ratelimit_headers
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.scheduling import SchedContext, Scheduler
from inferstack.gateway.served_models import ModelsPoller
from inferstack.gateway.settings import EppSettings
from inferstack.gateway.tokenize import Tokenizer
from inferstack.gateway.waiting import Waiting, WaitQueue

__all__ = ["MODELS_METHOD_NOT_ALLOWED", "NO_ENDPOINT", "PREDICTED_CACHED_HEADER", "SHED", "Director"]

_MAX_LISTED_MODELS = 20  # served names a 404 lists
_MAX_ECHOED_NAME = 200  # characters of the client's model name a 404 repeats
_MODELS_RECHECK_MAX_S = 1.0  # bound of the poll before a 404: half Envoy's default message timeout
_MODELS_RECHECK_WAIT_S = 1.5  # and of the wait for it (one started earlier may still run)
_MAX_QUOTA_TENANTS = 1000  # past it, tenants with an empty quota window are forgotten

PREDICTED_CACHED_HEADER = "x-inferstack-predicted-cached-tokens"
NO_ENDPOINT = Reject(503, "no model server endpoint is ready", "service_unavailable")
SHED = Reject(429, "the model servers are saturated and this request is sheddable", "too_many_requests")
_CHALLENGE = (("www-authenticate", b'Bearer realm="inferstack"'),)
# what vLLM answers to any other method on its GET-only /v1/models (the EPP answers that path itself)
MODELS_METHOD_NOT_ALLOWED = Reject(405, "/v1/models answers GET only", "invalid_request_error",
                                   headers=(("allow", b"GET"),))


class Director:
    def __init__(self, settings: EppSettings, datastore: Datastore) -> None:
        self.settings = settings
        self.datastore = datastore
        self.scheduler = Scheduler(settings.scheduler)
        self.rewrites = Rewrites(settings.rewrites)
        self.objectives = Objectives(settings.objectives)
        self.metrics = EppMetrics(datastore, self.scheduler, settings)
        self.in_flight = InFlightLedger(settings.in_flight_timeout_s, peers=settings.peers)
        self.models_poller: ModelsPoller | None = None  # set by serve() when models_poll is on
        self.keys = KeyFileWatch(settings.auth_file) if settings.auth_file is not None else None
        self.quotas = Quotas()
        self._service_digest = hash_key(read_key(settings.service_key_file)) if settings.service_key_file else None
        self._staleness_s = settings.saturation.metrics_staleness_ms / 1000.0
        self._models_refresh: asyncio.Task[None] | None = None  # the 404 path's recheck, shared
        self._models_refresh_at = 0.0  # monotonic start of that recheck
        hold, flow = settings.hold, settings.flow_control
        self.hold_enabled = hold.enabled
        self.flow = flow if flow.enabled else None
        size = max(hold.max_requests if hold.enabled else 0, flow.max_requests if flow.enabled else 0)
        self.waiting = WaitQueue(size, self.metrics, self._wait_timed_out) if size else None
        self.service = ServiceWindow()  # served weighted tokens per tenant, for the fairness index
        # KV events (precise prefix routing): what each endpoint caches, and the engine's tokens
        kv = settings.kv_events
        self.kv = kv if kv.enabled else None
        self.kv_index = KvBlockIndex(kv.max_blocks_per_endpoint) if kv.enabled else None
        if kv.enabled and kv.tokenizer is None:
            raise ConfigError("kv_events.enabled needs kv_events.tokenizer: the served model's folder (its "
                              "tokenizer.json and chat template; the local stack fills it in)")
        self.tokenizer = Tokenizer(kv.tokenizer) if kv.enabled and kv.tokenizer is not None else None
        for scorer, _ in self.scheduler.scorers:
            if isinstance(scorer, PrecisePrefixScorer):
                scorer.index = self.kv_index
        if self.waiting is not None:
            self.metrics.watch_waiting(self.waiting.order.lengths, self._fairness if self.flow is not None else None)
        self.envoy = EnvoyLoadWatch(settings.envoy_admin_port if hold.enabled else None, CLUSTER_NAME,
                                    self.release_waiting)
        self._hold_full = Reject(
            503, f"the scale-from-zero hold queue is full ({size} requests already wait for a model "
            "server to become ready); retry later", "service_unavailable")
        self._retry_after = (("retry-after", str(flow.retry_after_s).encode()),)
        self._flow_full = Reject(
            429, f"the model servers are saturated and {size} requests already wait in the gateway's queue; "
            f"retry after {flow.retry_after_s} s", "too_many_requests", headers=self._retry_after, code="queue_full")

    # -- auth ----------------------------------------------------------------------------------
    def authenticate(self, ctx: RequestContext) -> Reject | None:
        """Who sent the request (``ctx.tenant``, ``ctx.priority``), or the 401 it gets. Without keys
        the tenant is the fairness-id header as sent. The service key's holder (the stack's batch
        service) names the tenant it acts for in that header."""
        header, ctx.authorization = ctx.authorization, ""  # the key goes no further
        if self.keys is None:
            return None
        who = identify(self.keys.current(), header, self._service_digest)
        if isinstance(who, KeyRefused):
            self.metrics.count("", "", "", "unauthorized")
            return Reject(401, who.message, "invalid_request_error", headers=_CHALLENGE, code="invalid_api_key")
        if who is SERVICE:  # the batch service, running a line of the tenant it names
            ctx.account = self.keys.current().named(ctx.tenant)
        else:
            ctx.tenant, ctx.priority, ctx.account = who.name, who.priority, who
        return None

    # -- requests ------------------------------------------------------------------------------
    def decide(self, req: InferenceRequest, ctx: RequestContext, phase: Phase, body: bytes,
               can_defer: bool) -> Decision:
        """A request with a parsed body (or a body-less one, ``phase`` "headers"); ``can_defer``:
        the transport can answer later on the request's own stream. A request its quota admitted
        but the picker then refused (no endpoint, queue full, shed, unknown model) used no tokens."""
        decision = self._decide(req, ctx, phase, body, can_defer)
        if isinstance(decision, Reject) and decision.code != "rate_limit_exceeded":
            self.quotas.settle(ctx.request_id, 0)
        return decision

    def _decide(self, req: InferenceRequest, ctx: RequestContext, phase: Phase, body: bytes,
                can_defer: bool) -> Decision:
        now = time.monotonic()
        model = req.model
        target = self.rewrites.apply(model) if model else model
        req.target_model = target
        req.priority = self._priority(model, target, ctx)
        req.tenant = ctx.tenant
        if ctx.account is not None and req.kind != "other":
            over = self._over_quota(req, ctx.account, ctx.request_id, now)
            if over is not None:
                return over
        if self.waiting is not None and can_defer:
            ready = self.routable()
            if not ready and not self.hold_enabled:
                self.metrics.count(model, target, "", "unavailable")
                return NO_ENDPOINT
            if self.flow is not None and ready:
                # Room now means room no waiting request of its band or above can use (each end and
                # scrape releases them first): a tenant with nothing running, in the reserve.
                candidates = self._candidates(req, ready, now)
                top = self.waiting.order.highest_priority()
                if candidates is None or (top is not None and req.priority < top):
                    return self._wait(req, phase, body, ctx.request_id, True)
                ready = candidates
            elif not ready or len(self.waiting):  # held requests go first
                return self._wait(req, phase, body, ctx.request_id, False)
        else:
            ready = self.datastore.ready()
            if not ready:
                self.metrics.count(model, target, "", "unavailable")
                return NO_ENDPOINT
        return self._route(req, phase, body, ctx.request_id, ready, now, can_defer)

    def _priority(self, model: str, target: str, ctx: RequestContext) -> int:
        """The objective's priority; a key's own priority replaces it, but an objective the request
        names can only lower it (a tenant may mark its own requests sheddable, never raise them)."""
        objective = self.objectives.priority(model, target, ctx.objective) if model or ctx.objective else 0
        if ctx.priority is None:
            return objective
        return min(ctx.priority, objective) if ctx.objective else ctx.priority

    def decide_body_less(self, ctx: RequestContext, can_defer: bool) -> Decision:
        """A request without a body: ``GET /v1/models`` answered here, other methods there 405,
        anything else routed on its headers alone."""
        if ctx.path.split("?", 1)[0] != "/v1/models":
            return self._routed_on_headers(ctx, can_defer)
        if ctx.method not in ("GET", "HEAD", ""):
            return MODELS_METHOD_NOT_ALLOWED
        if not self.datastore.ready():
            return self._routed_on_headers(ctx, can_defer)
        if can_defer and self.models_poller is not None:  # answered once the lists are polled again
            return Defer(self._models_list_after_refresh(ctx))
        return self._models_list() or self._routed_on_headers(ctx, can_defer)

    def _routed_on_headers(self, ctx: RequestContext, can_defer: bool) -> Decision:
        req = InferenceRequest(model="", prompt="", stream=False, max_tokens=None, kind="other")
        return self.decide(req, ctx, "headers", b"", can_defer)

    # -- admission: quotas ----------------------------------------------------------------------
    def _over_quota(self, req: InferenceRequest, account: Tenant, request_id: str, now: float) -> Reject | None:
        """429 with OpenAI's x-ratelimit-* headers when the tenant's requests or tokens per minute
        would be exceeded (tokens: the prompt as estimated + max_tokens, else the output estimate,
        until vLLM's count settles them: ``settle_usage``); admitted, the same headers go on the answer."""
        tokens = req.prompt_tokens + (req.max_tokens or self.settings.flow_control.output_tokens_estimate)
        standing = self.quotas.admit(account.name, account.requests_per_minute, account.tokens_per_minute,
                                     tokens, now, request_id)
        if len(self.quotas) > _MAX_QUOTA_TENANTS:
            self.quotas.forget_idle(now)
        if not isinstance(standing, QuotaExceeded):
            if standing is not None:
                req.ratelimit = ratelimit_headers(standing)
                req.quota_tokens = tokens
            return None
        self.metrics.count(req.model, req.target_model, "", "rate_limited")
        self.metrics.flow_rejected(account.name, f"quota_{standing.kind}")
        return Reject(429, standing.message(account.name), standing.kind, code="rate_limit_exceeded",
                      headers=ratelimit_headers(standing.standing, standing.retry_after_s))

    def settle_usage(self, request_id: str, usage: Usage) -> None:
        """A response ended and Envoy reported the tokens vLLM counted (or the stream's events, where
        vLLM reported none): its in-flight entry ends, its quota entry and its tenant's fair-queuing
        counter take the real count instead of the estimate made at admission."""
        done = self.in_flight.complete(request_id)
        if done is None or usage.completion_tokens is None:
            return
        prompt = done.prompt_tokens if usage.prompt_tokens is None else usage.prompt_tokens
        self.quotas.settle(request_id, prompt + usage.completion_tokens)
        if not done.peer:  # a peer's request is counted by the picker that routed it
            self.metrics.usage(done.tenant, prompt if usage.prompt_tokens is not None else None,
                               usage.completion_tokens, usage.cached_tokens)
            if done.predicted_cached is not None and usage.cached_tokens is not None:
                self.metrics.kv_prediction(done.predicted_cached, usage.cached_tokens)
        if done.charged and self.flow is not None and self.waiting is not None:
            self.waiting.order.charge(done.tenant, weighted_tokens(prompt, usage.completion_tokens) - done.charged)

    def peer_routed(self, routed: PeerRouted, now: float) -> None:
        """Another picker routed a request (Envoy's upstream log, with that picker's note): it counts
        here as it would had we routed it: in flight on its endpoint, in its tenant's quota window
        and fair-queuing service. Its end arrives like ours (``settle_usage``)."""
        endpoint = self.datastore.get(routed.endpoint)
        note = routed.note
        if endpoint is None or not self.in_flight.start_peer(routed.request_id, endpoint, note.prompt_tokens, now,
                                                             note.tenant, note.charged):
            return
        if note.quota_tokens:
            self.quotas.record(note.tenant, note.quota_tokens, now, routed.request_id)
        if note.charged and self.flow is not None and self.waiting is not None:
            self.waiting.order.charge(note.tenant, note.charged)
            self.service.served(note.tenant, note.charged, now)

    # -- admission: the wait queue (scale from zero, flow control) -----------------------------
    def routable(self) -> list[Endpoint]:
        """Ready endpoints Envoy can route to (it may not have loaded a new one from the EDS file yet)."""
        ready = self.datastore.ready()
        pending = self.envoy.pending
        return [e for e in ready if e.address not in pending] if pending else ready

    def _candidates(self, req: InferenceRequest, ready: list[Endpoint], now: float) -> list[Endpoint] | None:
        """Flow control's saturation detector: the endpoints with room for this request now (None:
        it waits). Room: fresh metrics, vLLM's queue and KV use under the saturation thresholds,
        and fewer outstanding requests than ``max_requests_per_endpoint``, plus the reserve for a
        tenant with nothing running (so a quiet tenant does not wait for a noisy one's requests to
        end). A model no ready endpoint serves goes on to the 404 path at once."""
        flow = self.flow
        assert flow is not None
        target = req.target_model
        if target and not serving(target, ready):
            return ready
        cap = flow.max_requests_per_endpoint
        if cap is not None and not self.in_flight.of_tenant(req.tenant):
            cap += flow.reserve_per_endpoint
        sat = self.settings.saturation
        roomy = [e for e in ready if has_capacity(e, sat, now) and (cap is None or e.load() < cap)]
        if target:
            roomy = serving(target, roomy)
        return roomy or None

    def _wait(self, req: InferenceRequest, phase: Phase, body: bytes, request_id: str, saturated: bool) -> Decision:
        assert self.waiting is not None
        flow = self.flow is not None and saturated
        timeout = self.settings.flow_control.max_wait_s if flow else self.settings.hold.timeout_s
        # keep the body (up to 16 MiB) only if routing will rewrite it
        answer = self.waiting.add(req, phase, body if req.target_model != req.model else b"", request_id, timeout)
        if answer is None:
            if flow:
                self.metrics.count(req.model, req.target_model, "", "queue_full")
                self.metrics.flow_rejected(req.tenant, "queue_full")
                return self._flow_full
            self.metrics.count(req.model, req.target_model, "", "unavailable")
            return self._hold_full
        if flow:
            self.service.waited(req.tenant, time.monotonic())
        return Defer(answer)  # the decision (or 503/429) follows on this stream

    def _fairness(self) -> float:
        now = time.monotonic()
        assert self.waiting is not None
        for tenant in self.waiting.order.lengths():  # still waiting: wanting more now
            self.service.waited(tenant, now)
        return self.service.jain(now)

    def release_waiting(self) -> None:
        """Route waiting requests in the queue's order while the next one has somewhere to go."""
        if self.waiting is None or not len(self.waiting):
            return
        now = time.monotonic()
        ready = self.routable()

        def route(w: Waiting) -> Decision | None:
            candidates = ready if self.flow is None else self._candidates(w.req, ready, now)
            if not candidates:
                return None
            return self._route(w.req, w.phase, w.body, w.request_id, candidates, now, False)

        self.waiting.release(route)

    def _wait_timed_out(self, w: Waiting) -> Decision:
        assert self.waiting is not None
        self.quotas.settle(w.request_id, 0)  # answered 429/503 after its quota admitted it: nothing used
        req = w.req
        known = self.datastore.all()
        ready = sum(e.ready for e in known)
        if self.flow is not None and self.routable():
            self.metrics.count(req.model, req.target_model, "", "wait_expired")
            self.metrics.flow_rejected(req.tenant, "wait_expired")
            return Reject(429, f"the model servers stayed saturated for {self.flow.max_wait_s:g} s while "
                          f"this request waited in the gateway's queue ({len(self.waiting)} still wait; "
                          f"{ready} endpoints ready); retry after {self.flow.retry_after_s} s",
                          "too_many_requests", headers=self._retry_after, code="wait_expired")
        self.metrics.count(req.model, req.target_model, "", "unavailable")
        loading = f" (Envoy has not loaded {len(self.envoy.pending)} of them yet)" if self.envoy.pending else ""
        return Reject(503, f"no model server became ready within {self.settings.hold.timeout_s:g} s "
                      f"(scale-from-zero hold); the pool has {len(known)} endpoints, {ready} ready{loading}; "
                      "retry later", "service_unavailable")

    # -- candidates and schedule ---------------------------------------------------------------
    def _route(self, req: InferenceRequest, phase: Phase, body: bytes, request_id: str, ready: list[Endpoint],
               now: float, can_defer: bool) -> Decision:
        """``can_defer`` (the request's own stream, not a held request's release) allows one
        recheck of the served models before a 404."""
        model, target = req.model, req.target_model
        if target:  # only endpoints serving the (rewritten) model; ``ready`` itself when all do
            able = serving(target, ready)
            if not able and can_defer and self.models_poller is not None:
                return Defer(self._route_after_recheck(req, phase, body, request_id, now))
            ready = able
            if not ready:
                self.metrics.count(model, target, "", "unknown_model")
                return self._unknown_model(model, target)
        sat = self.settings.saturation
        if self.flow is None and req.priority < 0 and is_saturated(ready, sat, now):
            self.metrics.shed.labels(model).inc()
            self.metrics.count(model, target, "", "shed")
            return SHED
        if self.tokenizer is not None and req.block_keys is None:
            self._tokenize(req)
        result = self.scheduler.schedule(SchedContext(now, self._staleness_s, sat), req, ready)
        assert result is not None  # ready is not empty
        served = 0.0
        if self.flow is not None and self.waiting is not None:  # the tenant's service, for fair turns
            served = weighted_tokens(req.prompt_tokens, req.max_tokens or self.flow.output_tokens_estimate)
            self.waiting.order.charge(req.tenant, served)
            self.service.served(req.tenant, served, now)
            self.metrics.flow_served(req.tenant, served)
        predicted = self._predicted_cached(req, result.endpoint)
        self.in_flight.start(request_id, result.endpoint, req.prompt_tokens, now, req.tenant, served, predicted)
        destination = result.endpoint.address
        if result.fallbacks:
            destination = ",".join([destination, *(e.address for e in result.fallbacks)])
        self.metrics.count(model, target, result.endpoint.address, "routed")
        headers = req.ratelimit
        if predicted is not None:
            headers += ((PREDICTED_CACHED_HEADER, str(predicted).encode()),)
        note = RouteNote(req.tenant, req.prompt_tokens, req.quota_tokens, served) if self.settings.peers else None
        new_body = _rewrite_body(body, target) if target != model and phase == "body" else None
        return Route(destination, phase, new_body, headers, note)

    # -- KV events: the engine's tokens, the cache the chosen endpoint holds -----------------------
    def _tokenize(self, req: InferenceRequest) -> None:
        """The request's tokens as the engine makes them: its exact prompt length and its blocks' keys
        (none where the picker cannot tokenize it as the engine would, e.g. a template error)."""
        assert self.tokenizer is not None and self.kv is not None
        ids = self.tokenizer.encode(req) if req.kind != "other" else None
        if ids is None:
            req.block_keys = []
            return
        req.prompt_tokens = len(ids)
        req.block_keys = block_keys(ids, self.kv.block_size)

    def _predicted_cached(self, req: InferenceRequest, endpoint: Endpoint) -> int | None:
        """``x-inferstack-predicted-cached-tokens``: the prompt tokens the chosen endpoint should serve
        from its cache, as vLLM counts them (whole blocks; never the prompt's last token, which it
        always computes); at the end compared with vLLM's ``usage.prompt_tokens_details.cached_tokens``
        (``inferstack_epp_kv_predictions``). The precise-prefix scorer's count where it scored the
        request: blocks its events reported and those of requests sent there before it that no event
        reported yet (the earlier request's prefill runs first, so vLLM finds them: counting reported
        blocks alone under-predicted each request that followed a new prefix within its prefill)."""
        if self.kv_index is None or not req.block_keys:
            return None
        if req.held_blocks is not None and endpoint.address in req.held_blocks:
            blocks = req.held_blocks[endpoint.address]
        else:  # no precise-prefix scorer in the profile
            blocks = self.kv_index.cached_blocks(endpoint.address, req.block_keys)
        assert self.kv is not None
        return min(blocks, (req.prompt_tokens - 1) // self.kv.block_size) * self.kv.block_size

    async def _route_after_recheck(self, req: InferenceRequest, phase: Phase, body: bytes, request_id: str,
                                   arrived: float) -> Decision:
        """The 404 path: poll the ready endpoints' /v1/models (a recheck started after this request
        arrived, shared with other requests), then decide again, without another recheck."""
        await self._refresh_models(arrived)
        ready = self.routable() if self.waiting is not None else self.datastore.ready()
        if not ready:
            self.metrics.count(req.model, req.target_model, "", "unavailable")
            return NO_ENDPOINT
        return self._route(req, phase, body, request_id, ready, time.monotonic(), False)

    # -- served models ---------------------------------------------------------------------------
    async def _refresh_models(self, since: float) -> None:
        """Wait, at most ``_MODELS_RECHECK_WAIT_S``, for a served-models recheck that started at or
        after ``since``: at most one runs and the requests arriving meanwhile share the next one, so
        a flood of unknown names costs one poll per endpoint per recheck, not one per request. After
        the wait the caller decides on what is known: Envoy's message timer must not fire first."""
        try:
            await asyncio.wait_for(self._recheck_started_since(since), _MODELS_RECHECK_WAIT_S)
        except asyncio.TimeoutError:
            pass

    async def _recheck_started_since(self, since: float) -> None:
        assert self.models_poller is not None
        while True:
            task, started = self._models_refresh, self._models_refresh_at
            if task is None or task.done():
                self._models_refresh_at = started = time.monotonic()
                addresses = [e.address for e in self.datastore.ready()]
                task = self._models_refresh = asyncio.ensure_future(
                    self.models_poller.refresh(addresses, _MODELS_RECHECK_MAX_S))
            await asyncio.shield(task)  # one request's cancellation must not cancel the others' recheck
            if started >= since:
                return

    async def _models_list_after_refresh(self, ctx: RequestContext) -> Decision:
        """``GET /v1/models``: the union of lists polled after the request arrived (shared with the
        404 path's rechecks), so an adapter loaded a moment ago is listed; routed to a replica as
        before if a list is still unknown."""
        await self._refresh_models(ctx.arrived)
        return self._models_list() or self._routed_on_headers(ctx, False)

    def _models_list(self) -> Respond | None:
        """``GET /v1/models`` answered by the EPP: the union of the ready endpoints' lists (an
        adapter loaded on one replica only is listed too), base models first; None (the request
        goes to a replica as any other) while an endpoint's list is not known (always, with
        ``models_poll`` off) or none is ready."""
        ready = sorted(self.datastore.ready(), key=lambda e: e.address)
        if not ready or any(e.served_models is None for e in ready):
            return None
        bases: dict[str, dict[str, object]] = {}
        adapters: dict[str, dict[str, object]] = {}
        for ep in ready:
            for entry in ep.model_entries:
                mid = str(entry["id"])
                (adapters if mid in ep.served_adapters else bases).setdefault(mid, entry)
        self.metrics.count("", "", "", "models_list")
        body = json.dumps({"object": "list", "data": [*bases.values(), *adapters.values()]}).encode()
        return Respond(200, body, "models_list")

    def _unknown_model(self, model: str, target: str) -> Reject:
        """404: every ready endpoint's model list is known and none has ``target`` (a rare path)."""
        served = sorted(set().union(*(e.served_models for e in self.datastore.ready() if e.served_models)))
        listed = ", ".join(served[:_MAX_LISTED_MODELS]) or "(none)"
        if len(served) > _MAX_LISTED_MODELS:
            listed += f", ... ({len(served) - _MAX_LISTED_MODELS} more)"

        def shown(name: str) -> str:
            return name if len(name) <= _MAX_ECHOED_NAME else name[:_MAX_ECHOED_NAME] + "..."

        what = f"`{shown(target)}`" if target == model else f"`{shown(target)}` (rewritten from `{shown(model)}`)"
        return Reject(404, f"The model {what} does not exist on any model server; served: {listed}",
                      "NotFoundError", param="model")


def _rewrite_body(body: bytes, target: str) -> bytes:
    # only for rewritten models (rare): re-parse so every other field stays untouched
    data = json.loads(body)
    data["model"] = target
    return json.dumps(data, separators=(",", ":")).encode()
