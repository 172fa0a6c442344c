"""``inferstack batch submit|list|status|cancel|results|serve``: the Batch API of the running stack.

The base URL is the running stack's (the state file `inferstack status` reads) unless
``--base-url`` names another OpenAI-compatible server. Contract: ``batch submit FILE.jsonl --wait``
prints the batch id and exits 0 when the batch completes (1 if it failed, expired or was
cancelled); ``batch results ID --output FILE`` writes the OpenAI-format output file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from inferstack.stack.state import StateFile
from inferstack.errors import InferstackError
from inferstack.wire import BATCH_TERMINAL_STATUSES

__all__ = ["register"]

_TERMINAL = BATCH_TERMINAL_STATUSES


class _Api:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InferstackError(f"cannot reach the batch API at {self.base_url}{path}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:500]
            raise InferstackError(f"{method} {path}: HTTP {resp.status_code}: {message}")
        return resp

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.call(method, path, **kwargs).json()


def _api(args: argparse.Namespace) -> _Api:
    base = args.base_url
    if not base:
        data = StateFile().live()
        if data is None:
            raise InferstackError("no stack is running (start one with `inferstack up --detach`) and no "
                                  "--base-url was given")
        if data.batch is None:
            raise InferstackError("the running stack has no batch service (it was started with --no-batch, "
                                  "batch.enabled: false or without the gateway)")
        base = data.base_url
    return _Api(base, args.api_key or os.environ.get("OPENAI_API_KEY"))


def _first_url(path: Path) -> str | None:
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    url = json.loads(raw).get("url")
                except (ValueError, AttributeError):
                    return None
                return url if isinstance(url, str) else None
    return None


def _submit(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise InferstackError(f"batch input file '{path}' does not exist")
    endpoint = args.endpoint or _first_url(path) or "/v1/chat/completions"
    api = _api(args)
    with open(path, "rb") as fh:
        file_obj = api.json("POST", "/files", files={"file": (path.name, fh, "application/jsonl")},
                            data={"purpose": "batch"})
    metadata = dict(kv.split("=", 1) for kv in args.metadata) if args.metadata else None
    batch = api.json("POST", "/batches", json={"input_file_id": file_obj["id"], "endpoint": endpoint,
                                               "completion_window": "24h", "metadata": metadata})
    print(batch["id"], flush=True)
    if not args.wait:
        return 0
    batch = _wait(api, batch["id"], args.poll_s)
    _print_batch(batch, sys.stderr)
    if args.output and batch.get("output_file_id"):
        _download(api, batch["output_file_id"], args.output)
        print(f"output written to {args.output}", file=sys.stderr)
    return 0 if batch["status"] == "completed" else 1


def _wait(api: _Api, batch_id: str, poll_s: float) -> dict[str, Any]:
    tty = sys.stderr.isatty()
    begun = time.monotonic()
    last_line = 0.0
    while True:
        batch = api.json("GET", f"/batches/{batch_id}")
        line = _progress(batch, time.monotonic() - begun)
        if tty:
            print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
        elif time.monotonic() - last_line >= 5.0 or batch["status"] in _TERMINAL:
            print(line, file=sys.stderr, flush=True)
            last_line = time.monotonic()
        if batch["status"] in _TERMINAL:
            if tty:
                print(file=sys.stderr)
            return batch
        time.sleep(poll_s)


def _progress(batch: dict[str, Any], elapsed_s: float, width: int = 30) -> str:
    counts = batch.get("request_counts") or {}
    total, done, failed = counts.get("total", 0), counts.get("completed", 0), counts.get("failed", 0)
    finished = done + failed
    filled = int(width * finished / total) if total else 0
    eta = "-"
    if total and 0 < finished < total:
        eta = f"{elapsed_s * (total - finished) / finished:.0f}s"
    elif total and finished == total:
        eta = "0s"
    return (f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{total} ({done} done, {failed} failed) "
            f"{batch['status']}  elapsed {elapsed_s:.0f}s  ETA {eta}")


def _print_batch(batch: dict[str, Any], out: Any = sys.stdout) -> None:
    counts = batch.get("request_counts") or {}
    print(f"{batch['id']}  status {batch['status']}  endpoint {batch['endpoint']}  "
          f"total {counts.get('total', 0)}  completed {counts.get('completed', 0)}  failed {counts.get('failed', 0)}",
          file=out)
    print(f"  input {batch['input_file_id']}  output {batch.get('output_file_id') or '-'}  "
          f"errors {batch.get('error_file_id') or '-'}", file=out)
    for err in ((batch.get("errors") or {}).get("data") or [])[:10]:
        print(f"  error line {err.get('line')}: [{err.get('code')}] {err.get('message')}", file=out)


def _list(args: argparse.Namespace) -> int:
    page = _api(args).json("GET", "/batches", params={"limit": args.limit})
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    print(f"{'ID':32} {'STATUS':12} {'TOTAL':>6} {'DONE':>6} {'FAILED':>6} CREATED")
    for b in page["data"]:
        c = b.get("request_counts") or {}
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b["created_at"]))
        print(f"{b['id']:32} {b['status']:12} {c.get('total', 0):>6} {c.get('completed', 0):>6} "
              f"{c.get('failed', 0):>6} {created}")
    return 0


def _status(args: argparse.Namespace) -> int:
    batch = _api(args).json("GET", f"/batches/{args.id}")
    if args.json:
        print(json.dumps(batch, indent=2))
    else:
        _print_batch(batch)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    batch = _api(args).json("POST", f"/batches/{args.id}/cancel")
    print(f"{batch['id']}: {batch['status']}")
    return 0


def _download(api: _Api, file_id: str, output: Path) -> None:
    resp = api.call("GET", f"/files/{file_id}/content")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(resp.content)


def _results(args: argparse.Namespace) -> int:
    api = _api(args)
    batch = api.json("GET", f"/batches/{args.id}")
    if batch["status"] not in _TERMINAL:
        raise InferstackError(f"batch {args.id} is {batch['status']}; results exist once it is completed, "
                              "cancelled or expired (`inferstack batch submit --wait` or `batch status`)")
    if not batch.get("output_file_id") and not batch.get("error_file_id"):
        raise InferstackError(f"batch {args.id} ({batch['status']}) has no output file")
    if batch.get("output_file_id"):
        _download(api, batch["output_file_id"], args.output)
        print(f"output ({batch['request_counts']['completed']} lines) written to {args.output}")
    else:
        args.output.write_bytes(b"")
    if args.errors and batch.get("error_file_id"):
        _download(api, batch["error_file_id"], args.errors)
        print(f"errors ({batch['request_counts']['failed']} lines) written to {args.errors}")
    elif batch.get("error_file_id"):
        print(f"{batch['request_counts']['failed']} line(s) failed; write them with --errors FILE")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """The service itself in the foreground (what the Kubernetes Deployment runs)."""
    from inferstack.batch.__main__ import serve
    from inferstack.batch.settings import load_batch_settings

    settings = load_batch_settings(args.config)
    if args.gateway_from_kubernetes:
        from inferstack.batch.kube import resolve_gateway_url

        settings = settings.model_copy(update={"gateway_url": resolve_gateway_url(args.gateway_from_kubernetes,
                                                                                  args.namespace)})
    serve(settings)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    batch = subparsers.add_parser("batch", help="OpenAI Batch API of the running stack: submit, list, status, "
                                  "cancel, results")
    sub = batch.add_subparsers(dest="batch_command", metavar="SUBCOMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--base-url", help="OpenAI base URL (default: the running stack's, e.g. "
                       "http://127.0.0.1:8080/v1)")
        p.add_argument("--api-key", help="API key when the stack has keys on (default: $OPENAI_API_KEY)")

    submit = sub.add_parser("submit", help="upload a JSONL file and create a batch; prints the batch id")
    submit.add_argument("file", type=Path, help="JSONL: one {custom_id, method, url, body} per line")
    submit.add_argument("--endpoint", choices=("/v1/chat/completions", "/v1/completions"),
                        help="default: the url of the first line")
    submit.add_argument("--wait", action="store_true", help="follow progress until the batch ends")
    submit.add_argument("--output", type=Path, help="with --wait: write the output file here")
    submit.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="batch metadata (repeatable)")
    submit.add_argument("--poll-s", type=float, default=1.0, help="seconds between progress polls")
    common(submit)
    submit.set_defaults(func=_submit)

    lst = sub.add_parser("list", help="batches, newest first")
    lst.add_argument("--limit", type=int, default=20, help="how many (1..100)")
    lst.add_argument("--json", action="store_true", help="the API's JSON page")
    common(lst)
    lst.set_defaults(func=_list)

    status = sub.add_parser("status", help="one batch: status, request counts, files, errors")
    status.add_argument("id")
    status.add_argument("--json", action="store_true", help="the Batch object as JSON")
    common(status)
    status.set_defaults(func=_status)

    cancel = sub.add_parser("cancel", help="cancel a batch (lines done so far stay in its output)")
    cancel.add_argument("id")
    common(cancel)
    cancel.set_defaults(func=_cancel)

    results = sub.add_parser("results", help="write a finished batch's output file")
    results.add_argument("id")
    results.add_argument("--output", type=Path, required=True, help="where to write the output JSONL")
    results.add_argument("--errors", type=Path, help="where to write the error JSONL (if any line failed)")
    common(results)
    results.set_defaults(func=_results)

    serve = sub.add_parser("serve", help="run the batch service in the foreground (what `up` and the "
                           "Kubernetes Deployment start)")
    serve.add_argument("--config", type=Path, required=True, help="batch service YAML (BatchSettings)")
    serve.add_argument("--gateway-from-kubernetes", metavar="GATEWAY",
                       help="in a pod: send lines to this Gateway's address (read from its status)")
    serve.add_argument("--namespace", help="namespace of that Gateway (default: the pod's)")
    serve.set_defaults(func=_serve)
