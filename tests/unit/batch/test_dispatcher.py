"""The dispatcher against a fake backend on a loopback port: results once each, the objective header,
backoff on 429 (no attempt spent), bounded retries, per-line errors, adaptive concurrency, cancel."""

import asyncio
import json
import time

import pytest
from batchfakes import chat_line, jsonl

from inferstack.batch.dispatcher import AdaptiveLimit, Backoff, Dispatcher, liveness_problem
from inferstack.wire import OBJECTIVE_HEADER
from inferstack.batch.settings import BatchSettings, DispatchSettings
from inferstack.batch.store import BatchStore
from inferstack.process import free_port

EP = "/v1/chat/completions"


def _settings(url: str, tmp_path, **dispatch) -> BatchSettings:
    d = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "request_timeout_s": 10, **dispatch}
    return BatchSettings(gateway_url=url, state_dir=tmp_path, poll_interval_s=0.02, dispatch=DispatchSettings(**d))


def _submit(store: BatchStore, lines: list[dict]) -> str:
    temp = store.temp_path()
    temp.write_bytes(jsonl(lines))
    f = store.add_file(temp, "in.jsonl", "batch")
    return store.create_batch(f["id"], EP, "24h")["id"]


async def _run_until(dispatcher: Dispatcher, batch_id: str, statuses=("completed", "failed", "cancelled"),
                     timeout_s: float = 20.0, during=None) -> dict:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            batch = dispatcher.store.get_batch(batch_id)
            if batch["status"] in statuses:
                return batch
            if during is not None:
                during(batch)
            assert time.monotonic() < deadline, f"batch still {batch['status']}: {batch['request_counts']}"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _lines(store: BatchStore, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in store.file_path(file_id).read_text().splitlines()]


def test_every_line_once_with_the_objective_header(backend, tmp_path):
    store = BatchStore(tmp_path)
    batch_id = _submit(store, [chat_line(f"c{i}", f"p{i}") for i in range(20)])
    d = Dispatcher(store, _settings(backend.url, tmp_path))
    batch = asyncio.run(_run_until(d, batch_id))
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert batch["usage"]["output_tokens"] == 40
    out = _lines(store, batch["output_file_id"])
    assert [x["custom_id"] for x in out] == [f"c{i}" for i in range(20)]
    assert all(x["response"]["status_code"] == 200 and x["error"] is None for x in out)
    assert out[3]["response"]["body"]["choices"][0]["message"]["content"] == "echo: p3"
    assert out[0]["id"].startswith("batch_req_") and out[0]["response"]["request_id"].startswith("req-")
    assert batch["error_file_id"] is None
    assert sorted(backend.contents()) == sorted(f"p{i}" for i in range(20))
    assert {r["headers"][OBJECTIVE_HEADER] for r in backend.requests} == {"batch"}


def test_429_and_503_back_off_without_spending_attempts(backend, tmp_path):
    backend.first_statuses = [429, 503] * 3
    store = BatchStore(tmp_path)
    batch_id = _submit(store, [chat_line(f"c{i}", f"p{i}") for i in range(4)])
    d = Dispatcher(store, _settings(backend.url, tmp_path, max_attempts=1, initial_concurrency=4))
    batch = asyncio.run(_run_until(d, batch_id))
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 4
    assert d.shed == 6 and d.retried == 0
    assert len(backend.requests) == 10


def test_transient_failures_are_retried_a_bounded_number_of_times(backend, tmp_path):
    backend.fail_content = {"boom": 500, "bad": 400}
    store = BatchStore(tmp_path)
    batch_id = _submit(store, [chat_line("ok", "fine"), chat_line("x", "boom"), chat_line("y", "bad")])
    d = Dispatcher(store, _settings(backend.url, tmp_path, max_attempts=3))
    batch = asyncio.run(_run_until(d, batch_id))
    assert batch["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    assert backend.contents().count("boom") == 3  # bounded
    assert backend.contents().count("bad") == 1  # a 4xx is an answer, not retried
    errors = {x["custom_id"]: x for x in _lines(store, batch["error_file_id"])}
    assert errors["x"]["error"]["code"] == "server_error" and errors["x"]["response"]["status_code"] == 500
    assert errors["y"]["error"] is None and errors["y"]["response"]["status_code"] == 400
    assert [x["custom_id"] for x in _lines(store, batch["output_file_id"])] == ["ok"]


def test_unreachable_gateway_gives_connection_errors(tmp_path):
    store = BatchStore(tmp_path)
    batch_id = _submit(store, [chat_line("a", "1"), chat_line("b", "2")])
    d = Dispatcher(store, _settings(f"http://127.0.0.1:{free_port()}", tmp_path, max_attempts=2))
    batch = asyncio.run(_run_until(d, batch_id))
    assert batch["status"] == "completed" and batch["request_counts"]["failed"] == 2
    errors = _lines(store, batch["error_file_id"])
    assert {x["error"]["code"] for x in errors} == {"connection_error"}
    assert all(x["response"] is None for x in errors)


def test_concurrency_grows_and_never_passes_the_bound(backend, tmp_path):
    """End to end against a real (fake) backend: concurrency grows from 1 and stays within the bound.
    How far it grows depends on the latencies this machine gives that minute (the brake reads them),
    so the exact value is checked with given latencies below, not here."""
    backend.delay_s = 0.05
    store = BatchStore(tmp_path)
    batch_id = _submit(store, [chat_line(f"c{i}", f"p{i}") for i in range(60)])
    d = Dispatcher(store, _settings(backend.url, tmp_path, initial_concurrency=1, max_concurrency=5,
                                    increase_every=2))
    batch = asyncio.run(_run_until(d, batch_id))
    assert batch["request_counts"]["completed"] == 60
    assert 2 <= backend.max_concurrent <= 5 and 1 <= d.limit.limit <= 5


def test_steady_latencies_grow_the_limit_to_the_bound_exactly():
    limit = AdaptiveLimit(DispatchSettings(initial_concurrency=1, max_concurrency=5, increase_every=2,
                                           latency_tolerance=1.5))
    for i in range(60):  # 2 ms per token, +-10 %: well within the brake's tolerance
        limit.on_success(latency_s=0.02 * (1.1 if i % 2 else 0.9), tokens=10)
    assert limit.limit == 5
    for _ in range(20):  # lines now 3x slower per token: no growth, and steps down
        limit.on_success(latency_s=0.06, tokens=10)
    assert limit.limit < 5


def test_cancel_mid_run_keeps_done_lines_once(backend, tmp_path):
    backend.delay_s = 0.05
    store = BatchStore(tmp_path)
    batch_id = _submit(store, [chat_line(f"c{i}", f"p{i}") for i in range(200)])
    d = Dispatcher(store, _settings(backend.url, tmp_path, initial_concurrency=2, max_concurrency=2))

    def cancel_after_some(batch):
        if batch["request_counts"]["completed"] >= 5 and batch["status"] == "in_progress":
            store.request_cancel(batch_id)
            d.wake()

    batch = asyncio.run(_run_until(d, batch_id, statuses=("cancelled",), during=cancel_after_some))
    done = batch["request_counts"]["completed"]
    assert 5 <= done < 200 and batch["cancelled_at"]
    out = [x["custom_id"] for x in _lines(store, batch["output_file_id"])]
    assert len(out) == len(set(out)) == done


def test_invalid_input_fails_the_batch_with_line_errors(backend, tmp_path):
    store = BatchStore(tmp_path)
    batch_id = _submit(store, [chat_line("a", "1"), chat_line("b", "2", url="/v1/completions")])
    batch = asyncio.run(_run_until(Dispatcher(store, _settings(backend.url, tmp_path)), batch_id))
    assert batch["status"] == "failed" and batch["failed_at"]
    assert [(e["code"], e["line"]) for e in batch["errors"]["data"]] == [("invalid_url", 2)]
    assert backend.requests == []


def test_a_malformed_file_fails_its_own_batch_and_the_next_batch_completes(backend, tmp_path):
    """100,000 '[' then as many ']' once raised RecursionError out of step() and ended the loop:
    every later batch stayed 'validating' for ever."""
    store = BatchStore(tmp_path)
    temp = store.temp_path()
    temp.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    bad = store.create_batch(store.add_file(temp, "bad.jsonl", "batch")["id"], EP, "24h")["id"]
    good = _submit(store, [chat_line(f"c{i}", f"p{i}") for i in range(3)])
    d = Dispatcher(store, _settings(backend.url, tmp_path))
    batch = asyncio.run(_run_until(d, good))
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 3
    failed = store.get_batch(bad)
    assert failed["status"] == "failed"
    assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [("invalid_json_line", 1)]
    assert "nested too deeply" in failed["errors"]["data"][0]["message"]


def test_an_exception_in_one_batch_fails_that_batch_and_the_loop_goes_on(backend, tmp_path, monkeypatch):
    store = BatchStore(tmp_path)
    doomed = _submit(store, [chat_line("a", "1")])
    good = _submit(store, [chat_line("b", "2")])
    d = Dispatcher(store, _settings(backend.url, tmp_path))
    real_validate = d._validate

    def validate(batch):  # a bug that only this batch's input triggers
        if batch["id"] == doomed:
            raise KeyError("surprise")
        real_validate(batch)

    monkeypatch.setattr(d, "_validate", validate)
    batch = asyncio.run(_run_until(d, good))
    assert batch["status"] == "completed"
    failed = store.get_batch(doomed)
    assert failed["status"] == "failed" and failed["errors"]["data"][0]["code"] == "internal_error"
    assert "KeyError" in failed["errors"]["data"][0]["message"]
    assert d.last_step_at is not None


def test_liveness_problem_names_an_ended_or_stalled_loop():
    assert liveness_problem(True, None, started_at=100.0, now=150.0, stall_s=120) is None
    assert liveness_problem(True, 200.0, started_at=100.0, now=319.0, stall_s=120) is None
    assert "no pass for 121 s" in liveness_problem(True, 200.0, started_at=100.0, now=321.0, stall_s=120)
    assert "no pass for 130 s" in liveness_problem(True, None, started_at=100.0, now=230.0, stall_s=120)
    assert "not running" in liveness_problem(False, 200.0, started_at=100.0, now=201.0, stall_s=120)


def test_the_watchdog_reports_the_first_problem_and_stops():
    import threading

    from inferstack.batch.__main__ import watch_dispatcher

    answers = iter([None, None, "the dispatcher loop is not running"])
    seen: list[str] = []
    watch_dispatcher(lambda: next(answers), seen.append, threading.Event(), interval_s=0.001)
    assert seen == ["the dispatcher loop is not running"]
    stop = threading.Event()
    stop.set()
    watch_dispatcher(lambda: "never asked", seen.append, stop, interval_s=0.001)
    assert len(seen) == 1


def test_aimd_and_backoff_arithmetic():
    limit = AdaptiveLimit(DispatchSettings(min_concurrency=1, initial_concurrency=4, max_concurrency=6,
                                           increase_every=2))
    for _ in range(10):
        limit.on_success()
    assert limit.limit == 6
    limit.on_pushback()
    assert limit.limit == 3
    for _ in range(5):
        limit.on_pushback()
    assert limit.limit == 1
    b = Backoff(0.1, 0.4)
    pauses = [b.push_back(now=0.0) for _ in range(4)]
    assert b.delay_s == 0.4 and all(0.05 <= p <= 0.4 for p in pauses)
    b.reset()
    assert b.delay_s == 0.0


def test_settings_reject_unordered_bounds():
    with pytest.raises(ValueError, match="min_concurrency"):
        DispatchSettings(min_concurrency=3, initial_concurrency=2)


def test_latency_brake_holds_and_steps_down_when_lines_slow():
    limit = AdaptiveLimit(DispatchSettings(initial_concurrency=4, max_concurrency=8, increase_every=1,
                                           latency_tolerance=1.5))
    for _ in range(3):
        limit.on_success(latency_s=1.0, tokens=100)  # 10 ms/token: the best, grows
    assert limit.limit == 7 and limit.best_s_per_token == pytest.approx(0.01)
    for _ in range(30):
        limit.on_success(latency_s=4.0, tokens=100)  # 4x slower per token: online traffic took the engines
    assert limit.limit < 7
    slowest = limit.limit
    for _ in range(60):
        limit.on_success(latency_s=1.0, tokens=100)  # fast again: grows back
    assert limit.limit > slowest
    off = AdaptiveLimit(DispatchSettings(initial_concurrency=2, increase_every=1, latency_tolerance=None))
    for _ in range(5):
        off.on_success(latency_s=float(_ + 1), tokens=1)
    assert off.limit == 7
