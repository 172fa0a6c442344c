import pytest

from inferstack.gateway.quota import WINDOW_S, QuotaExceeded, Quotas, Standing, format_reset, ratelimit_headers


def admitted(standing) -> bool:
    return isinstance(standing, Standing)


def test_requests_per_minute_refuse_the_next_until_the_oldest_leaves_the_window():
    q = Quotas()
    for t, left in ((0.0, 2), (10.0, 1), (20.0, 0)):
        s = q.admit("a", 3, None, 5, now=t)
        assert admitted(s) and s.requests_remaining == left and s.tokens_limit is None
    e = q.admit("a", 3, None, 5, now=30.0)
    assert isinstance(e, QuotaExceeded) and e.kind == "requests" and (e.limit, e.used, e.requested) == (3, 3, 1)
    assert e.retry_after_s == pytest.approx(30.0) and e.standing.requests_remaining == 0
    assert e.standing.tokens_limit is None
    assert "Limit 3, Used 3, Requested 1" in e.message("team-a") and "try again in 30s" in e.message("team-a")
    assert admitted(q.admit("b", 3, None, 5, now=30.0))  # per tenant
    assert admitted(q.admit("a", 3, None, 5, now=60.0))  # the request of t=0 has left


def test_tokens_per_minute_count_prompt_and_max_tokens_and_say_when_enough_have_left():
    q = Quotas()
    assert admitted(q.admit("a", None, 1000, 400, now=0.0))
    assert q.admit("a", None, 1000, 400, now=5.0).tokens_remaining == 200
    e = q.admit("a", None, 1000, 400, now=6.0)
    assert isinstance(e, QuotaExceeded) and e.kind == "tokens"
    assert (e.used, e.requested, e.standing.tokens_remaining) == (800, 400, 200)
    assert e.retry_after_s == pytest.approx(54.0)  # once the first 400 have left
    assert admitted(q.admit("a", None, 1000, 200, now=6.0))  # a smaller one fits now
    too_big = q.admit("a", None, 1000, 5000, now=7.0)
    assert isinstance(too_big, QuotaExceeded) and "lower max_tokens" in too_big.message("a")


def test_settle_replaces_the_admission_estimate_with_the_tokens_vllm_reported():
    q = Quotas()
    assert admitted(q.admit("a", None, 1000, 600, now=0.0, request_id="r1"))  # prompt + max_tokens
    assert isinstance(q.admit("a", None, 1000, 600, now=1.0, request_id="r2"), QuotaExceeded)
    assert q.settle("r1", 150)  # it stopped early: 150 used
    assert not q.settle("r1", 999)  # once only
    assert not q.settle("unknown", 5)
    s = q.admit("a", None, 1000, 600, now=2.0, request_id="r3")
    assert admitted(s) and s.tokens_remaining == 250
    q.admit("a", None, 1000, 1, now=WINDOW_S + 0.5, request_id="r4")  # r1 has left the window
    assert not q.settle("r1", 1) and q.settle("r3", 10)
    q.forget_idle(now=10 * WINDOW_S)
    assert len(q) == 0 and not q._by_id


def test_a_refused_request_is_not_counted_and_no_limits_means_no_bookkeeping():
    q = Quotas()
    assert admitted(q.admit("a", 1, None, 1, now=0.0))
    for t in range(1, 30):
        assert isinstance(q.admit("a", 1, None, 1, now=float(t)), QuotaExceeded)
    assert admitted(q.admit("a", 1, None, 1, now=WINDOW_S))
    assert q.admit("free", None, None, 10**9, now=0.0) is None and "free" not in q._seen
    q.forget_idle(now=1000.0)
    assert len(q) == 0


def test_openai_ratelimit_headers():
    q = Quotas()
    q.admit("a", 2, 100, 60, now=0.0)
    e = q.admit("a", 2, 100, 60, now=1.0)
    assert isinstance(e, QuotaExceeded) and e.kind == "tokens"
    headers = dict((k, v.decode()) for k, v in ratelimit_headers(e.standing, e.retry_after_s))
    assert headers == {"retry-after": "59", "x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
                       "x-ratelimit-reset-requests": "59s", "x-ratelimit-limit-tokens": "100",
                       "x-ratelimit-remaining-tokens": "40", "x-ratelimit-reset-tokens": "59s"}
    assert [format_reset(x) for x in (0.25, 1.0, 59.2, 360.0)] == ["250ms", "1s", "1m0s", "6m0s"]
    ok = q.admit("a", 2, 1000, 60, now=2.0)  # an admitted request's answer: what is left after it
    assert dict((k, v.decode()) for k, v in ratelimit_headers(ok)) == {
        "x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "880", "x-ratelimit-reset-tokens": "1m0s"}
