"""Per-tenant quotas: requests and tokens per minute, over a sliding 60 s window. Pure: the clock is
passed in, nothing here does I/O.

``Quotas.admit(tenant, limits, tokens, now, request_id)`` records the request and returns its
``Standing`` (what is left: OpenAI's ``x-ratelimit-*`` headers on the answer), or the
``QuotaExceeded`` that says which limit, how much was used and when enough of the window has passed;
None for a tenant without limits. A refused request is not recorded. At admission a request counts
what the picker knows then: its prompt (estimated, ~4 characters a token) plus its ``max_tokens``
(else the configured output estimate), the most it can use; ``settle`` replaces that with the
tokens vLLM reported once the response has ended (Envoy's access log brings them), so a request
that stopped early gives back what it did not use.
Invariants: a tenant's entries are in time order and none is older than the window after an
``admit``; tenants with nothing in the window are forgotten; a request id is settled at most once
and only while its entry is in the window.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["WINDOW_S", "QuotaExceeded", "Quotas", "Standing", "format_reset", "ratelimit_headers"]

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Standing:
    """A tenant's limits and what is left of them (None: no such limit)."""
    requests_limit: int | None
    requests_remaining: int | None
    tokens_limit: int | None
    tokens_remaining: int | None
    reset_s: float  # until the window is empty again (OpenAI's x-ratelimit-reset-*)


@dataclass(frozen=True, slots=True)
class QuotaExceeded:
    kind: str  # "requests" | "tokens": the limit that refused it
    limit: int
    used: int  # in the window, before this request
    requested: int
    retry_after_s: float  # until the window has room for this request
    standing: Standing

    def message(self, tenant: str) -> str:
        per = "requests per min (RPM)" if self.kind == "requests" else "tokens per min (TPM)"
        head = f"Rate limit reached for tenant {tenant} on {per}: Limit {self.limit}, Used {self.used}, " \
               f"Requested {self.requested}."
        if self.requested > self.limit:  # never fits: only a smaller request can pass
            return f"{head} The request alone is over the limit (its prompt plus max_tokens): lower max_tokens."
        return f"{head} Please try again in {format_reset(self.retry_after_s)}."


def format_reset(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``250ms``."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def ratelimit_headers(standing: Standing, retry_after_s: float | None = None) -> tuple[tuple[str, bytes], ...]:
    """OpenAI's ``x-ratelimit-*`` headers for the limits a tenant has, and ``retry-after`` on a refusal."""
    out = [] if retry_after_s is None else [("retry-after", str(max(1, math.ceil(retry_after_s))).encode())]
    reset = format_reset(standing.reset_s).encode()
    for kind, limit, remaining in (("requests", standing.requests_limit, standing.requests_remaining),
                                   ("tokens", standing.tokens_limit, standing.tokens_remaining)):
        if limit is not None:
            out += [(f"x-ratelimit-limit-{kind}", str(limit).encode()),
                    (f"x-ratelimit-remaining-{kind}", str(remaining).encode()),
                    (f"x-ratelimit-reset-{kind}", reset)]
    return tuple(out)


class _Entry:
    __slots__ = ("at", "request_id", "tokens")

    def __init__(self, at: float, tokens: int, request_id: str) -> None:
        self.at, self.tokens, self.request_id = at, tokens, request_id


class Quotas:
    def __init__(self) -> None:
        self._seen: dict[str, deque[_Entry]] = {}  # tenant -> its requests in the window, oldest first
        self._by_id: dict[str, _Entry] = {}  # request id -> its entry, until settled or out of the window

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, tenant: str, requests_per_minute: int | None, tokens_per_minute: int | None,
              tokens: int, now: float, request_id: str = "") -> Standing | QuotaExceeded | None:
        if requests_per_minute is None and tokens_per_minute is None:
            return None
        seen = self._seen.setdefault(tenant, deque())
        while seen and seen[0].at <= now - WINDOW_S:
            self._by_id.pop(seen.popleft().request_id, None)
        used_requests = len(seen)
        used_tokens = sum(e.tokens for e in seen)
        req_wait = tok_wait = 0.0
        if requests_per_minute is not None and used_requests + 1 > requests_per_minute:
            # room once the oldest (used + 1 - limit) requests have left the window
            req_wait = seen[used_requests - requests_per_minute].at + WINDOW_S - now
        if tokens_per_minute is not None and used_tokens + tokens > tokens_per_minute:
            tok_wait = self._tokens_free_at(seen, used_tokens + tokens - tokens_per_minute, now)
        if req_wait or tok_wait:
            if not seen:
                del self._seen[tenant]
            kind = "requests" if req_wait >= tok_wait else "tokens"
            return QuotaExceeded(
                kind=kind, limit=int(requests_per_minute if kind == "requests" else tokens_per_minute),  # type: ignore[arg-type]
                used=used_requests if kind == "requests" else used_tokens,
                requested=1 if kind == "requests" else tokens, retry_after_s=max(req_wait, tok_wait),
                standing=_standing(requests_per_minute, tokens_per_minute, used_requests, used_tokens,
                                   seen[-1].at + WINDOW_S - now if seen else 0.0))
        entry = _Entry(now, tokens, request_id)
        seen.append(entry)
        if request_id:
            self._by_id[request_id] = entry
        return _standing(requests_per_minute, tokens_per_minute, used_requests + 1, used_tokens + tokens, WINDOW_S)

    def record(self, tenant: str, tokens: int, now: float, request_id: str) -> None:
        """Another picker admitted this request (its note in Envoy's log): count it in the window too,
        without judging it (that picker did)."""
        entry = _Entry(now, tokens, request_id)
        self._seen.setdefault(tenant, deque()).append(entry)
        self._by_id[request_id] = entry

    def settle(self, request_id: str, tokens: int) -> bool:
        """The request used ``tokens`` (as vLLM reported them), not what was counted at admission."""
        entry = self._by_id.pop(request_id, None)
        if entry is None:
            return False  # no limits, already settled, or out of the window
        entry.tokens = tokens
        return True

    def forget_idle(self, now: float) -> None:
        """Drop tenants whose window is empty (call now and then: bounded memory)."""
        for tenant in [t for t, s in self._seen.items() if not s or s[-1].at <= now - WINDOW_S]:
            for entry in self._seen.pop(tenant):
                self._by_id.pop(entry.request_id, None)

    @staticmethod
    def _tokens_free_at(seen: deque[_Entry], excess: int, now: float) -> float:
        """Seconds until entries holding at least ``excess`` tokens have left the window (a request
        larger than the whole limit: a full window)."""
        freed = 0
        for entry in seen:
            freed += entry.tokens
            if freed >= excess:
                return entry.at + WINDOW_S - now
        return WINDOW_S


def _standing(requests_per_minute: int | None, tokens_per_minute: int | None, used_requests: int,
              used_tokens: int, reset_s: float) -> Standing:
    return Standing(
        requests_limit=requests_per_minute,
        requests_remaining=None if requests_per_minute is None else max(0, requests_per_minute - used_requests),
        tokens_limit=tokens_per_minute,
        tokens_remaining=None if tokens_per_minute is None else max(0, tokens_per_minute - used_tokens),
        reset_s=reset_s)
