import pytest

from inferstack.gateway.quota import WINDOW_S, Quotas, format_reset, ratelimit_headers


def test_requests_per_minute_refuse_the_next_until_the_oldest_leaves_the_window():
    q = Quotas()
    for t in (0.0, 10.0, 20.0):
        assert q.admit("a", 3, None, 5, now=t) is None
    e = q.admit("a", 3, None, 5, now=30.0)
    assert e is not None and e.kind == "requests" and (e.limit, e.used, e.requested) == (3, 3, 1)
    assert e.retry_after_s == pytest.approx(30.0) and e.requests_remaining == 0 and e.tokens_limit is None
    assert "Limit 3, Used 3, Requested 1" in e.message("team-a") and "try again in 30s" in e.message("team-a")
    assert q.admit("b", 3, None, 5, now=30.0) is None  # per tenant
    assert q.admit("a", 3, None, 5, now=60.0) is None  # the request of t=0 has left


def test_tokens_per_minute_count_prompt_and_max_tokens_and_say_when_enough_have_left():
    q = Quotas()
    assert q.admit("a", None, 1000, 400, now=0.0) is None
    assert q.admit("a", None, 1000, 400, now=5.0) is None
    e = q.admit("a", None, 1000, 400, now=6.0)
    assert e is not None and e.kind == "tokens" and (e.used, e.requested, e.tokens_remaining) == (800, 400, 200)
    assert e.retry_after_s == pytest.approx(54.0)  # once the first 400 have left
    assert q.admit("a", None, 1000, 200, now=6.0) is None  # a smaller one fits now
    too_big = q.admit("a", None, 1000, 5000, now=7.0)
    assert too_big is not None and "lower max_tokens" in too_big.message("a")


def test_a_refused_request_is_not_counted_and_no_limits_means_no_bookkeeping():
    q = Quotas()
    assert q.admit("a", 1, None, 1, now=0.0) is None
    for t in range(1, 30):
        assert q.admit("a", 1, None, 1, now=float(t)) is not None
    assert q.admit("a", 1, None, 1, now=WINDOW_S) is None
    assert q.admit("free", None, None, 10**9, now=0.0) is None and "free" not in q._seen
    q.forget_idle(now=1000.0)
    assert len(q) == 0


def test_openai_ratelimit_headers():
    q = Quotas()
    q.admit("a", 2, 100, 60, now=0.0)
    e = q.admit("a", 2, 100, 60, now=1.0)
    assert e is not None and e.kind == "tokens"
    headers = dict((k, v.decode()) for k, v in ratelimit_headers(e))
    assert headers == {"retry-after": "59", "x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
                       "x-ratelimit-reset-requests": "59s", "x-ratelimit-limit-tokens": "100",
                       "x-ratelimit-remaining-tokens": "40", "x-ratelimit-reset-tokens": "59s"}
    assert [format_reset(x) for x in (0.25, 1.0, 59.2, 360.0)] == ["250ms", "1s", "1m0s", "6m0s"]
