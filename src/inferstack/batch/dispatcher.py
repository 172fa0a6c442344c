"""The dispatcher: sends the lines of running batches through the gateway at the lowest priority.

One asyncio loop (``Dispatcher.run``) owns every batch's life after creation::

    validating --parse + check the input file--> in_progress --all lines have a result--> finalizing
        |  (any problem: failed, errors.data)        |  cancel: cancelling --in-flight lines stopped-->
        v                                            |             cancelled (partial output)
      failed                                          \\--past expires_at--> expired (rest: errors)
                                                  finalizing --files written--> completed

Each line is a POST to ``gateway_url + url`` with the header ``x-gateway-inference-objective:
<objective>`` (a sheddable objective, so the picker refuses it with 429 before it touches online
traffic). Concurrency is AIMD (``AdaptiveLimit``): +1 after ``increase_every`` successes, halved on
a 429 or a transient failure, braked while lines take much longer per token than at best. A 429 (or a 503: no replica ready, picker restarting) pauses all
dispatch (``Backoff``: doubling, capped) and puts the line back without counting an attempt; connect
errors, timeouts and other 5xx count an attempt, and a line out of attempts gets an error line. Any
other answer (2xx or 4xx) is the line's result.
Invariants: a line is in flight at most once in this process; results are recorded by the store
exactly once (``record_result`` only updates pending lines); every task is tracked and cancelled
on shutdown; no exception from one batch or one line ends the loop (a batch whose step raises is
logged with its id and failed: at once while validating, after ``_STEP_FAILURES`` in a row later);
each completed pass stamps ``last_step_at``, which ``liveness_problem`` judges for ``/health``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from typing import Any

import httpx

from inferstack.batch.jsonl import LineError, parse_batch_input
from inferstack.batch.settings import BatchSettings, DispatchSettings
from inferstack.batch.store import BatchStore, PendingLine, new_id
from inferstack.auth import read_key
from inferstack.wire import FAIRNESS_ID_HEADER, OBJECTIVE_HEADER, BatchStatus

__all__ = ["AdaptiveLimit", "Backoff", "Dispatcher", "liveness_problem"]

log = logging.getLogger(__name__)

# "Not now" answers: 429 (the picker shed the line) and 503 (no replica ready, or the picker is
# restarting). They pause dispatch and spend no attempt: a batch has hours, an outage is not a
# property of the line.
_LATER = (429, 503)
_STEP_FAILURES = 3  # passes in a row a running batch may fail before it is failed for good


def liveness_problem(running: bool, last_step_at: float | None, started_at: float, now: float,
                     stall_s: float) -> str | None:
    """Why the dispatcher is not doing its work, or None: its loop ended, or no pass completed for
    ``stall_s`` (a pass normally completes at least every ``backoff_max_s``)."""
    if not running:
        return "the dispatcher loop is not running"
    since = now - (last_step_at if last_step_at is not None else started_at)
    if since > stall_s:
        return f"the dispatcher completed no pass for {since:.0f} s (bound {stall_s:.0f} s)"
    return None


class AdaptiveLimit:
    """The bound on lines in flight: AIMD on push-back, and a latency brake.

    - +1 after ``increase_every`` successes in a row; halved on a 429 or a transient failure;
    - latency brake (``latency_tolerance``): each success reports its seconds per output token
      (the whole request, queueing included). ``best`` is the lowest seen (drifting up 0.1% per
      sample, so it follows a changed workload); ``recent`` an EWMA (alpha 0.2). While ``recent >
      best x latency_tolerance`` the engines are busier than batch alone at its lightest made them,
      i.e. online traffic (or batch itself) is using the capacity: no increase, and -1 once per
      ``limit`` samples. So batch fills a GPU whose decode steps barely slow with batch size, and
      stays small where every extra sequence slows every step (a CPU), leaving room for online.
    """

    def __init__(self, settings: DispatchSettings) -> None:
        self.settings = settings
        self.limit = settings.initial_concurrency
        self._streak = 0
        self.best_s_per_token: float | None = None
        self.recent_s_per_token: float | None = None
        self._since_brake = 0

    def on_success(self, latency_s: float | None = None, tokens: int | None = None) -> None:
        if latency_s is not None and self._braking(latency_s / max(1, tokens or 0)):
            return
        self._streak += 1
        if self._streak >= self.settings.increase_every:
            self._streak = 0
            self.limit = min(self.settings.max_concurrency, self.limit + 1)

    def _braking(self, sample: float) -> bool:
        tolerance = self.settings.latency_tolerance
        if tolerance is None:
            return False
        best = self.best_s_per_token
        self.best_s_per_token = sample if best is None else min(sample, best * 1.001)
        recent = self.recent_s_per_token
        self.recent_s_per_token = sample if recent is None else 0.8 * recent + 0.2 * sample
        if self.recent_s_per_token <= self.best_s_per_token * tolerance:
            return False
        self._streak = 0
        self._since_brake += 1
        if self._since_brake >= self.limit:
            self._since_brake = 0
            self.limit = max(self.settings.min_concurrency, self.limit - 1)
        return True

    def on_pushback(self) -> None:
        """A 429 or a transient failure: the backend has less room than we assumed."""
        self._streak = 0
        self.limit = max(self.settings.min_concurrency, self.limit // 2)


class Backoff:
    """A pause that doubles on every push-back (capped, with jitter) and resets on success."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.delay_s = 0.0
        self.until = 0.0  # monotonic time before which nothing new is sent
        self._rng = rng or random.Random()

    def push_back(self, now: float | None = None) -> float:
        self.delay_s = min(self.max_s, self.delay_s * 2 if self.delay_s else self.initial_s)
        pause = self.delay_s * (0.5 + self._rng.random() / 2)
        now = time.monotonic() if now is None else now
        self.until = max(self.until, now + pause)
        return pause

    def reset(self) -> None:
        self.delay_s = 0.0


class Dispatcher:
    def __init__(self, store: BatchStore, settings: BatchSettings, client: httpx.AsyncClient | None = None) -> None:
        if not settings.gateway_url:
            raise ValueError("the dispatcher needs settings.gateway_url")
        self.store = store
        self.settings = settings
        self.dispatch = settings.dispatch
        self.limit = AdaptiveLimit(settings.dispatch)
        self.backoff = Backoff(settings.dispatch.backoff_initial_s, settings.dispatch.backoff_max_s)
        self._client = client
        self._own_client = client is None
        # every line: the batch objective, its batch's tenant, and the service key when keys are on
        self._headers = {OBJECTIVE_HEADER: settings.dispatch.objective}
        if settings.gateway_key_file is not None:
            self._headers["authorization"] = f"Bearer {read_key(settings.gateway_key_file)}"
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._step_failures: dict[str, int] = {}  # batch id -> passes in a row that raised
        self.last_step_at: float | None = None  # monotonic end of the last completed pass
        # counters for /health and tests
        self.sent = 0
        self.shed = 0
        self.retried = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def wake(self) -> None:
        """Look for work now (a batch was created or cancelled)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        d = self.dispatch
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.settings.gateway_url or "",
                timeout=httpx.Timeout(d.request_timeout_s, connect=d.connect_timeout_s),
                limits=httpx.Limits(max_connections=d.max_concurrency, max_keepalive_connections=d.max_concurrency))
        log.info("dispatcher started: gateway %s, objective %r, concurrency %d..%d", self.settings.gateway_url,
                 d.objective, d.min_concurrency, d.max_concurrency)
        try:
            while not stop.is_set():
                try:
                    wait_s = await self.step()
                except sqlite3.Error as exc:  # e.g. a full disk: keep serving the API, try again later
                    log.error("dispatcher step failed: %s; retrying in %.1fs", exc, self.dispatch.backoff_max_s)
                    wait_s = self.dispatch.backoff_max_s
                except Exception:  # a bug outside any one batch: the loop must go on serving the others
                    log.exception("dispatcher step failed; retrying in %.1fs", self.dispatch.backoff_max_s)
                    wait_s = self.dispatch.backoff_max_s
                self.last_step_at = time.monotonic()
                self._wake.clear()
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({stopper, waker}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    waker.cancel()
        finally:
            await self.close()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def step(self) -> float:
        """One pass: advance every active batch, then fill free slots; returns how long to idle."""
        now_wall = time.time()
        for batch in self.store.active_batches():
            try:
                await self._advance(batch, now_wall)
                self._step_failures.pop(batch["id"], None)
            except Exception as exc:
                self._advance_failed(batch, exc)
        pause = self.backoff.until - time.monotonic()
        if pause > 0:
            return pause
        free = self.limit.limit - len(self._tasks)
        for line in self.store.next_lines(free, set(self._tasks)):
            self._tasks[line.key] = asyncio.create_task(self._send(line), name=f"batch-line-{line.key}")
        return self.settings.poll_interval_s

    async def _advance(self, batch: dict[str, Any], now_wall: float) -> None:
        status, batch_id = batch["status"], batch["id"]
        if status == BatchStatus.VALIDATING:
            self._validate(batch)
        elif status == BatchStatus.CANCELLING:
            await self._cancel_in_flight(batch_id)
            self.store.finalize(batch_id, BatchStatus.CANCELLED)
            log.info("batch %s cancelled", batch_id)
        elif status == BatchStatus.FINALIZING:
            self.store.finalize(batch_id, BatchStatus.COMPLETED)
        elif status == BatchStatus.IN_PROGRESS:
            if batch["expires_at"] and now_wall > batch["expires_at"]:
                await self._cancel_in_flight(batch_id)
                self.store.finalize(batch_id, BatchStatus.EXPIRED, expired_error={
                    "code": "batch_expired", "message": "the batch's completion window ended before "
                    "this request was processed"})
                log.info("batch %s expired", batch_id)
            elif not self._busy(batch_id) and self.store.pending_count(batch_id) == 0:
                self.store.mark_finalizing(batch_id)
                self.store.finalize(batch_id, BatchStatus.COMPLETED)
                counts = self.store.get_batch(batch_id)["request_counts"]  # type: ignore[index]
                log.info("batch %s completed: %d done, %d failed", batch_id, counts["completed"],
                         counts["failed"])

    def _advance_failed(self, batch: dict[str, Any], exc: Exception) -> None:
        """One batch's pass raised: log it with the batch id; fail the batch (at once while validating:
        its input is the cause and would raise again after every restart)."""
        batch_id, status = batch["id"], batch["status"]
        failures = self._step_failures[batch_id] = self._step_failures.get(batch_id, 0) + 1
        log.error("batch %s (%s): pass failed (%d in a row): %s: %s", batch_id, status, failures,
                  type(exc).__name__, exc, exc_info=exc)
        if status != BatchStatus.VALIDATING and failures < _STEP_FAILURES:
            return
        try:
            self.store.fail_batch(batch_id, [LineError("internal_error", f"the batch could not be processed "
                                                       f"({type(exc).__name__}: {str(exc)[:300]})")])
            self._step_failures.pop(batch_id, None)
            log.error("batch %s failed after an internal error", batch_id)
        except Exception:  # the store itself is failing: the next pass tries again
            log.exception("batch %s: could not be marked failed", batch_id)

    def _busy(self, batch_id: str) -> bool:
        return any(key[0] == batch_id for key in self._tasks)

    async def _cancel_in_flight(self, batch_id: str) -> None:
        tasks = [t for key, t in self._tasks.items() if key[0] == batch_id]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _validate(self, batch: dict[str, Any]) -> None:
        path = self.store.file_path(batch["input_file_id"])
        try:
            data = path.read_bytes() if path is not None else None
        except OSError as exc:
            data = None
            log.error("batch %s: cannot read input file %s: %s", batch["id"], path, exc)
        if data is None:
            self.store.fail_batch(batch["id"], [LineError("invalid_file", f"input file {batch['input_file_id']} "
                                                          "cannot be read", param="input_file_id")])
            return
        lines, errors = parse_batch_input(data, batch["endpoint"], self.settings.max_lines,
                                          self.settings.max_line_errors)
        if errors:
            self.store.fail_batch(batch["id"], errors)
            log.info("batch %s failed validation: %d problem(s), first: %s", batch["id"], len(errors),
                     errors[0].message)
            return
        if self.store.start_batch(batch["id"], lines):
            log.info("batch %s in progress: %d lines", batch["id"], len(lines))

    async def _send(self, line: PendingLine) -> None:
        try:
            await self._attempt(line)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not kill the loop; the line stays pending and is retried
            log.exception("line %s of batch %s: unexpected error", line.idx, line.batch_id)
            self.backoff.push_back()
        finally:
            self._tasks.pop(line.key, None)
            self._wake.set()

    async def _attempt(self, line: PendingLine) -> None:
        assert self._client is not None
        self.sent += 1
        begun = time.monotonic()
        try:
            resp = await self._client.post(line.url, json=line.body,
                                           headers={**self._headers, FAIRNESS_ID_HEADER: line.tenant})
        except httpx.HTTPError as exc:
            await self._transient(line, "connection_error", f"{type(exc).__name__}: {exc}", None)
            return
        if resp.status_code in _LATER:
            self.shed += 1
            self.limit.on_pushback()
            pause = self.backoff.push_back()
            log.debug("line %s: HTTP %d; limit %d, pausing %.2fs", line.key, resp.status_code, self.limit.limit,
                      pause)
            return  # still pending, attempts untouched: it is sent again after the pause
        body = _json_body(resp)
        if resp.status_code >= 500:
            await self._transient(line, "server_error", f"HTTP {resp.status_code}", resp, body)
            return
        self.backoff.reset()
        ok = 200 <= resp.status_code < 300
        usage = body.get("usage") if ok and isinstance(body, dict) else None
        usage = usage if isinstance(usage, dict) else None
        if usage and isinstance(usage.get("completion_tokens"), int):
            self.limit.on_success(time.monotonic() - begun, usage["completion_tokens"])
        else:
            self.limit.on_success()
        result = {"id": new_id("batch_req_"), "custom_id": line.custom_id,
                  "response": {"status_code": resp.status_code, "request_id": _request_id(resp), "body": body},
                  "error": None}
        self.store.record_result(line.batch_id, line.idx, result, ok, usage)

    async def _transient(self, line: PendingLine, code: str, message: str, resp: httpx.Response | None,
                         body: Any = None) -> None:
        self.limit.on_pushback()
        self.backoff.push_back()
        attempts = self.store.add_attempt(line.batch_id, line.idx)
        if attempts < self.dispatch.max_attempts:
            self.retried += 1
            log.info("line %s of batch %s: %s (attempt %d/%d); will retry", line.idx, line.batch_id, message,
                     attempts, self.dispatch.max_attempts)
            return
        response = None
        if resp is not None:
            response = {"status_code": resp.status_code, "request_id": _request_id(resp), "body": body}
        result = {"id": new_id("batch_req_"), "custom_id": line.custom_id, "response": response,
                  "error": {"code": code, "message": f"{message} after {attempts} attempts"}}
        self.store.record_result(line.batch_id, line.idx, result, ok=False)


def _json_body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return {"error": {"message": resp.text[:2000], "type": "invalid_response", "code": resp.status_code}}


def _request_id(resp: httpx.Response) -> str:
    return resp.headers.get("x-request-id") or new_id("req_")

