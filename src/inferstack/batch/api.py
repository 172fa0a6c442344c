"""The HTTP API of the batch service: the OpenAI Files + Batch endpoints (Starlette app).

    POST /v1/files                    multipart: file (JSONL), purpose=batch -> File object
    GET  /v1/files[?purpose=]         {"object": "list", "data": [File, ...]}
    GET  /v1/files/{id}               File object
    GET  /v1/files/{id}/content       the file's bytes (input, output or error JSONL)
    DELETE /v1/files/{id}             {"id", "object": "file", "deleted": true}
    POST /v1/batches                  {input_file_id, endpoint, completion_window: "24h", metadata?} -> Batch
    GET  /v1/batches[?limit=&after=]  cursor page of Batch objects, newest first
    GET  /v1/batches/{id}             Batch object
    POST /v1/batches/{id}/cancel      Batch object (status cancelling)
    GET  /health                      {"status": "ok", dispatcher counters}; 503 {"status": "unhealthy",
                                      "reason"} when the dispatcher's loop ended or stalled
    GET  /metrics                     Prometheus text: batches by status, lines sent/shed/retried,
                                      dispatch in flight and its concurrency limit

Files and batches belong to a tenant: with API keys (``auth_file``) the key's, else the
x-gateway-inference-fairness-id header's ('' without one). A tenant sees, reads, cancels and deletes
its own only: another's is a 404, as an unknown id is, and is not listed.

Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}`` with 400 (bad
value), 401 (no or a wrong API key), 404 (unknown id), 413 (file too large). The dispatcher runs in the same event loop
(started and stopped by the app's lifespan), so a created or cancelled batch wakes it at once.
``app.state.dispatcher_problem()`` says why the dispatcher is not working (None when it is, or
when it is not meant to run): ``/health`` answers with it, and the service process's watchdog
exits on it so that the stack's supervisor restarts the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from inferstack.auth import KeyFileWatch, KeyRefused, identify
from inferstack.batch.dispatcher import Dispatcher, liveness_problem
from inferstack.batch.jsonl import loads_strict
from inferstack.batch.settings import BATCH_ENDPOINTS, BatchSettings
from inferstack.batch.store import BatchStore
from inferstack.wire import FAIRNESS_ID_HEADER, BatchStatus

__all__ = ["create_app", "openai_error"]

log = logging.getLogger(__name__)

# a cancelled or cancelling batch may be cancelled again (idempotent); these may not
_NOT_CANCELLABLE = (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.FINALIZING)
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the purpose field around the file


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


def _not_found(what: str, ident: str, param: str = "id") -> JSONResponse:
    return openai_error(404, f"No such {what} object: {ident}", param, "not_found")


def batch_metrics_page(batches: dict[str, int], dispatcher: Dispatcher | None) -> bytes:
    """The service's /metrics (Prometheus text), from the store's counts and the dispatcher's."""
    registry = CollectorRegistry(auto_describe=False)
    by_status = Gauge("inferstack_batch_batches", "Batches by status.", ["status"], registry=registry)
    for status, n in batches.items():
        by_status.labels(status).set(n)
    if dispatcher is not None:
        lines = Counter("inferstack_batch_lines", "Batch lines sent to the gateway, shed by it (429/503, "
                        "sent again later) and retried after an error.", ["outcome"], registry=registry)
        for outcome, n in (("sent", dispatcher.sent), ("shed", dispatcher.shed), ("retried", dispatcher.retried)):
            lines.labels(outcome).inc(n)
        Gauge("inferstack_batch_dispatch_in_flight", "Lines in flight to the gateway now.",
              registry=registry).set(dispatcher.in_flight)
        Gauge("inferstack_batch_dispatch_concurrency_limit", "The dispatcher's adaptive concurrency limit now.",
              registry=registry).set(dispatcher.limit.limit)
    return generate_latest(registry)


def create_app(settings: BatchSettings, store: BatchStore | None = None, *, dispatch: bool = True) -> Starlette:
    """The app; with ``dispatch`` its lifespan runs a ``Dispatcher`` sending lines to the gateway."""
    state_dir = settings.state_dir
    if store is None and state_dir is None:
        raise ValueError("create_app needs a store or settings.state_dir")
    box: dict[str, Any] = {}
    keys = KeyFileWatch(settings.auth_file) if settings.auth_file is not None else None

    def as_tenant(handler):  # type: ignore[no-untyped-def]
        """The endpoint: who calls (401 if keys are on and theirs is missing or wrong), then ``handler``."""
        async def endpoint(request: Request) -> Response:
            if keys is None:
                return await handler(request, request.headers.get(FAIRNESS_ID_HEADER, ""))
            who = identify(keys.current(), request.headers.get("authorization", ""))
            if isinstance(who, KeyRefused):
                return openai_error(401, who.message, code="invalid_api_key")
            return await handler(request, who.name)
        return endpoint

    def get_store() -> BatchStore:
        return box["store"]

    def wake() -> None:
        dispatcher = box.get("dispatcher")
        if dispatcher is not None:
            dispatcher.wake()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        own = store is None
        box["store"] = store if store is not None else BatchStore(Path(state_dir))  # type: ignore[arg-type]
        stop = asyncio.Event()
        task = None
        if dispatch:
            box["dispatcher"] = Dispatcher(box["store"], settings)
            box["started_at"] = time.monotonic()
            task = box["task"] = asyncio.create_task(box["dispatcher"].run(stop), name="batch-dispatcher")
            task.add_done_callback(_report_end)
        try:
            yield
        finally:
            box["stopping"] = True
            stop.set()
            if task is not None:
                try:
                    await asyncio.wait_for(task, settings.stop_timeout_s)
                except asyncio.TimeoutError:
                    log.warning("dispatcher did not stop in %.1fs; cancelled", settings.stop_timeout_s)
                except Exception:  # the loop had already ended with an error: reported by _report_end
                    pass
            if own:
                box["store"].close()

    def _report_end(task: asyncio.Task[None]) -> None:
        if not box.get("stopping"):
            exc = None if task.cancelled() else task.exception()
            log.critical("the batch dispatcher's loop ended (%r); no batch advances until a restart", exc,
                         exc_info=exc)

    def dispatcher_problem() -> str | None:
        dispatcher: Dispatcher | None = box.get("dispatcher")
        if dispatcher is None or box.get("stopping"):
            return None
        return liveness_problem(not box["task"].done(), dispatcher.last_step_at, box["started_at"],
                                time.monotonic(), settings.dispatcher_stall_s)

    async def health(_request: Request) -> Response:
        dispatcher: Dispatcher | None = box.get("dispatcher")
        problem = dispatcher_problem()
        info: dict[str, Any] = {"status": "ok"} if problem is None else {"status": "unhealthy", "reason": problem}
        if dispatcher is not None:
            info.update(in_flight=dispatcher.in_flight, concurrency_limit=dispatcher.limit.limit,
                        sent=dispatcher.sent, shed=dispatcher.shed, retried=dispatcher.retried)
        return JSONResponse(info, status_code=200 if problem is None else 503)

    async def metrics(_request: Request) -> Response:
        dispatcher: Dispatcher | None = box.get("dispatcher")
        return Response(batch_metrics_page(box["store"].count_by_status(), dispatcher),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    # ----- files ----------------------------------------------------------------------------
    async def create_file(request: Request, tenant: str) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_file_bytes + _FORM_OVERHEAD:
            # Read (and drop) the body first: an answer before the upload ends makes some clients and
            # proxies report a reset connection instead of the 413.
            async for _chunk in request.stream():
                pass
            return _too_large(int(length))
        try:
            form = await request.form(max_files=1, max_fields=16)
        except (HTTPException, MultiPartException) as exc:
            return openai_error(400, f"the body must be multipart/form-data with 'file' and 'purpose': "
                                f"{getattr(exc, 'detail', None) or getattr(exc, 'message', exc)}")
        try:
            purpose = form.get("purpose")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return openai_error(400, "missing required parameter 'file' (a JSONL file)", "file",
                                    "missing_required_parameter")
            if purpose != "batch":
                return openai_error(400, f"'purpose' has value {purpose!r}; this server accepts only 'batch'",
                                    "purpose", "invalid_value")
            st = get_store()
            temp = st.temp_path()
            size = 0
            try:
                with open(temp, "wb") as out:
                    while chunk := await upload.read(1024 * 1024):
                        size += len(chunk)
                        if size > settings.max_file_bytes:
                            break
                        out.write(chunk)
                if size > settings.max_file_bytes:
                    return _too_large(size)
                obj = st.add_file(temp, upload.filename or "upload.jsonl", "batch", tenant)
            finally:
                temp.unlink(missing_ok=True)
        finally:
            await form.close()
        log.info("file %s uploaded: %d bytes", obj["id"], obj["bytes"])
        return JSONResponse(obj)

    def _too_large(size: int) -> JSONResponse:
        return openai_error(413, f"the file is too large ({size} bytes); the most this server accepts is "
                            f"{settings.max_file_bytes} bytes (batch.max_file_bytes)", "file", "file_too_large")

    async def list_files(request: Request, tenant: str) -> Response:
        data = get_store().list_files(request.query_params.get("purpose") or None, tenant=tenant)
        return JSONResponse({"object": "list", "data": data, "has_more": False,
                             "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    async def get_file(request: Request, tenant: str) -> Response:
        file_id = request.path_params["file_id"]
        obj = get_store().get_file(file_id, tenant)
        return JSONResponse(obj) if obj else _not_found("File", file_id)

    async def file_content(request: Request, tenant: str) -> Response:
        file_id = request.path_params["file_id"]
        path = get_store().file_path(file_id, tenant)
        if path is None or not path.is_file():
            return _not_found("File", file_id)
        return FileResponse(path, media_type="application/jsonl")

    async def delete_file(request: Request, tenant: str) -> Response:
        file_id = request.path_params["file_id"]
        if not get_store().delete_file(file_id, tenant):
            return _not_found("File", file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    # ----- batches --------------------------------------------------------------------------
    async def create_batch(request: Request, tenant: str) -> Response:
        try:
            body = loads_strict(await request.body())
        except ValueError as exc:
            return openai_error(400, f"the body must be a JSON object: {exc}")
        if not isinstance(body, dict):
            return openai_error(400, "the body must be a JSON object")
        input_file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        window = body.get("completion_window")
        metadata = body.get("metadata")
        if not isinstance(input_file_id, str):
            return openai_error(400, "missing required parameter 'input_file_id'", "input_file_id",
                                "missing_required_parameter")
        if endpoint not in BATCH_ENDPOINTS:
            return openai_error(400, f"'endpoint' has value {endpoint!r}; supported: {', '.join(BATCH_ENDPOINTS)}",
                                "endpoint", "invalid_value")
        if window != "24h":
            return openai_error(400, f"'completion_window' has value {window!r}; only '24h' is supported",
                                "completion_window", "invalid_value")
        if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items())):
            return openai_error(400, "'metadata' must map at most 16 string keys (<= 64 chars) to string "
                                "values (<= 512 chars)", "metadata", "invalid_value")
        st = get_store()
        file_obj = st.get_file(input_file_id, tenant)
        if file_obj is None:
            return _not_found("File", input_file_id, "input_file_id")
        if file_obj["purpose"] != "batch":
            return openai_error(400, f"file {input_file_id} has purpose {file_obj['purpose']!r}; a batch "
                                "needs a file uploaded with purpose 'batch'", "input_file_id", "invalid_value")
        batch = st.create_batch(input_file_id, endpoint, window, metadata, tenant=tenant)
        log.info("batch %s created from %s for %s", batch["id"], input_file_id, endpoint)
        wake()
        return JSONResponse(batch)

    async def list_batches(request: Request, tenant: str) -> Response:
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            return openai_error(400, "'limit' must be an integer in 1..100", "limit", "invalid_value")
        if not 1 <= limit <= 100:
            return openai_error(400, f"'limit' has value {limit}; must be in 1..100", "limit", "invalid_value")
        data, more = get_store().list_batches(limit, request.query_params.get("after"), tenant)
        return JSONResponse({"object": "list", "data": data, "has_more": more,
                             "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    async def get_batch(request: Request, tenant: str) -> Response:
        batch_id = request.path_params["batch_id"]
        obj = get_store().get_batch(batch_id, tenant)
        return JSONResponse(obj) if obj else _not_found("Batch", batch_id)

    async def cancel_batch(request: Request, tenant: str) -> Response:
        batch_id = request.path_params["batch_id"]
        st = get_store()
        obj = st.get_batch(batch_id, tenant)
        if obj is None:
            return _not_found("Batch", batch_id)
        if obj["status"] in _NOT_CANCELLABLE:
            return openai_error(409, f"batch {batch_id} has status {obj['status']!r} and cannot be cancelled",
                                "batch_id", "batch_not_cancellable")
        obj = st.request_cancel(batch_id)
        wake()
        return JSONResponse(obj)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/files", as_tenant(create_file), methods=["POST"]),
        Route("/v1/files", as_tenant(list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", as_tenant(get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", as_tenant(delete_file), methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", as_tenant(file_content), methods=["GET"]),
        Route("/v1/batches", as_tenant(create_batch), methods=["POST"]),
        Route("/v1/batches", as_tenant(list_batches), methods=["GET"]),
        Route("/v1/batches/{batch_id}", as_tenant(get_batch), methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", as_tenant(cancel_batch), methods=["POST"]),
    ]

    async def not_found(request: Request, _exc: Exception) -> Response:
        return openai_error(404, f"unknown path {request.method} {request.url.path}", code="not_found")

    async def method_not_allowed(request: Request, _exc: Exception) -> Response:
        return openai_error(405, f"method {request.method} not allowed on {request.url.path}")

    async def internal_error(request: Request, exc: Exception) -> Response:  # a bug: still OpenAI-shaped
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return openai_error(500, f"internal error ({type(exc).__name__}); see the batch service's log",
                            kind="server_error")

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: method_not_allowed,
                                        Exception: internal_error})
    app.state.dispatcher_problem = dispatcher_problem
    return app
