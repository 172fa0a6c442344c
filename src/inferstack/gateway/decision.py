"""What the picker decides about a request, typed, and what it knows of the request meanwhile.

The director returns a ``Decision``; the codec (``gateway/codec.py``) encodes it once, at the
transport edge, as an ext_proc answer:
- ``Route``: the destination header and metadata (``ip:port[,fallback...]``), with the body
  rewritten when a model rewrite changed the model, and with several pickers a ``RouteNote``;
- ``Reject``: an OpenAI-style JSON error answered by Envoy itself (400, 404, 405, 429, 503);
- ``Respond``: a JSON body answered by Envoy itself (``GET /v1/models``);
- ``Defer``: decided later on the same stream (a held request, a served-models recheck): the
  awaitable's decision follows, and meanwhile Envoy's message timer is extended.
``RequestContext`` is what a request's headers message leaves for its body message (and for a
deferred decision): the request id, the objective header, the path and method, when it arrived, and who sent it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from inferstack.auth import Tenant

__all__ = ["Decision", "Defer", "PeerRouted", "Phase", "Reject", "RequestContext", "Respond", "Route", "RouteNote"]

Phase = Literal["headers", "body"]  # the ext_proc message a decision answers


@dataclass(slots=True)
class RequestContext:
    request_id: str = ""
    objective: str = ""  # x-gateway-inference-objective
    path: str = ""  # only for body-less requests
    method: str = ""
    arrived: float = 0.0  # monotonic
    authorization: str = ""  # the Authorization header, read once by the auth step, then dropped
    tenant: str = ""  # who sent it: the API key's tenant, else x-gateway-inference-fairness-id
    priority: int | None = None  # the API key's priority, over the objective's
    account: Tenant | None = None  # the tenant's entry in the key file (its quotas), with keys on


@dataclass(frozen=True, slots=True)
class Route:
    destination: str  # ip:port[,fallback ip:port...]
    phase: Phase
    new_body: bytes | None = None  # the rewritten body (a model rewrite), else None
    response_headers: tuple[tuple[str, bytes], ...] = ()  # added to the answer by Envoy (x-ratelimit-*)
    note: RouteNote | None = None  # for the other pickers (gateway.pickers > 1)


@dataclass(frozen=True, slots=True)
class RouteNote:
    """What every other picker learns of a request one picker routed (from Envoy's logs): whose it
    is and what it counts, so their in-flight counts, quotas and fair-queuing turns include it."""
    tenant: str
    prompt_tokens: int  # estimated, or the engine's count with KV events on
    quota_tokens: int  # what the tenant's quota admitted it for (0: the tenant has no limits)
    charged: float  # the weighted tokens flow control charged the tenant (0: none)


@dataclass(frozen=True, slots=True)
class PeerRouted:
    """Envoy's upstream log: a request went to ``endpoint`` (``ip:port``), routed by the picker
    whose note it carries."""
    request_id: str
    endpoint: str
    note: RouteNote


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    message: str
    err_type: str
    param: str | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    code: str | None = None  # OpenAI's error code (e.g. invalid_api_key); default: the status


@dataclass(frozen=True, slots=True)
class Respond:
    status: int
    body: bytes  # JSON
    details: str  # Envoy's response-code details


@dataclass(frozen=True, slots=True)
class Defer:
    later: Awaitable[Decision]  # cancelled if the client leaves first


Decision: TypeAlias = "Route | Reject | Respond | Defer"
