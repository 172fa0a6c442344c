"""Per-tenant quotas: requests and tokens per minute, over a sliding 60 s window. Pure: the clock is
passed in, nothing here does I/O.

``Quotas.admit(tenant, limits, tokens, now)`` records the request and returns None, or returns the
``QuotaExceeded`` that says which limit, how much was used and when enough of the window has passed
(OpenAI's ``x-ratelimit-*`` headers are made from it). A refused request is not recorded. Tokens are
what the picker knows when the request arrives: its prompt (estimated, ~4 characters a token) plus
its ``max_tokens`` (else the configured output estimate): the most it can use, never what vLLM
reports afterwards (the picker does not see responses).
Invariants: a tenant's entries are in time order and none is older than the window after an
``admit``; tenants with nothing in the window are forgotten.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["WINDOW_S", "QuotaExceeded", "Quotas", "format_reset", "ratelimit_headers"]

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class QuotaExceeded:
    kind: str  # "requests" | "tokens": the limit that refused it
    limit: int
    used: int  # in the window, before this request
    requested: int
    retry_after_s: float  # until the window has room for this request
    requests_limit: int | None
    requests_remaining: int | None
    requests_reset_s: float
    tokens_limit: int | None
    tokens_remaining: int | None
    tokens_reset_s: float

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


def ratelimit_headers(e: QuotaExceeded) -> tuple[tuple[str, bytes], ...]:
    """OpenAI's ``x-ratelimit-*`` headers for the limits a tenant has, and ``retry-after``."""
    out = [("retry-after", str(max(1, math.ceil(e.retry_after_s))).encode())]
    for kind, limit, remaining, reset in (("requests", e.requests_limit, e.requests_remaining, e.requests_reset_s),
                                          ("tokens", e.tokens_limit, e.tokens_remaining, e.tokens_reset_s)):
        if limit is not None:
            out += [(f"x-ratelimit-limit-{kind}", str(limit).encode()),
                    (f"x-ratelimit-remaining-{kind}", str(remaining).encode()),
                    (f"x-ratelimit-reset-{kind}", format_reset(reset).encode())]
    return tuple(out)


class Quotas:
    def __init__(self) -> None:
        self._seen: dict[str, deque[tuple[float, int]]] = {}  # tenant -> (arrival, tokens), oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, tenant: str, requests_per_minute: int | None, tokens_per_minute: int | None,
              tokens: int, now: float) -> QuotaExceeded | None:
        if requests_per_minute is None and tokens_per_minute is None:
            return None
        seen = self._seen.setdefault(tenant, deque())
        while seen and seen[0][0] <= now - WINDOW_S:
            seen.popleft()
        used_requests = len(seen)
        used_tokens = sum(t for _, t in seen)
        req_wait = tok_wait = 0.0
        if requests_per_minute is not None and used_requests + 1 > requests_per_minute:
            # room once the oldest (used + 1 - limit) requests have left the window
            req_wait = seen[used_requests - requests_per_minute][0] + WINDOW_S - now
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
                requests_limit=requests_per_minute,
                requests_remaining=None if requests_per_minute is None else max(0, requests_per_minute - used_requests),
                requests_reset_s=self._window_clears(seen, now),
                tokens_limit=tokens_per_minute,
                tokens_remaining=None if tokens_per_minute is None else max(0, tokens_per_minute - used_tokens),
                tokens_reset_s=self._window_clears(seen, now))
        seen.append((now, tokens))
        return None

    def forget_idle(self, now: float) -> None:
        """Drop tenants whose window is empty (call now and then: bounded memory)."""
        for tenant in [t for t, s in self._seen.items() if not s or s[-1][0] <= now - WINDOW_S]:
            del self._seen[tenant]

    @staticmethod
    def _tokens_free_at(seen: deque[tuple[float, int]], excess: int, now: float) -> float:
        """Seconds until entries holding at least ``excess`` tokens have left the window (a request
        larger than the whole limit: a full window)."""
        freed = 0
        for at, tokens in seen:
            freed += tokens
            if freed >= excess:
                return at + WINDOW_S - now
        return WINDOW_S

    @staticmethod
    def _window_clears(seen: deque[tuple[float, int]], now: float) -> float:
        """Seconds until the limits are back to their initial state (OpenAI's x-ratelimit-reset-*)."""
        return seen[-1][0] + WINDOW_S - now if seen else 0.0
