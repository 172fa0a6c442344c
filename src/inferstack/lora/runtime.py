"""Runtime LoRA adapters on one vLLM replica, through its HTTP API (as vLLM 0.32 answers it).

- list:   ``GET /v1/models``; adapters are the entries with a ``parent`` (the base model's served
  name); ``root`` is the path they were loaded from.
- load:   ``POST /v1/load_lora_adapter {"lora_name", "lora_path", "load_inplace"}`` -> 200, text.
- unload: ``POST /v1/unload_lora_adapter {"lora_name"}`` -> 200, text.

vLLM's errors (``{"error": {"message", "type", "code"}}``) become typed errors, translated here:

    400 "... has already been loaded ..."                 -> AdapterAlreadyLoaded
    400 other ("conflicts with a served base model")      -> AdapterLoadError
    404 NotFoundError, load ("No adapter found for ...")  -> AdapterNotFound (source missing)
    404 NotFoundError, unload ("cannot be found")         -> AdapterNotFound
    404 "Not Found": no such route, runtime LoRA is off   -> LoraUnavailable
    500 "Call to add_lora method failed: LoRA rank 16 is greater than max_lora_rank 8." -> AdapterLoadError
    connection refused, timeout                           -> LoraUnavailable

vLLM replaces file paths in its messages with ``<path>``, so ours name the source we sent. The
source is sent as given: resolve local folders first (``resolve_adapter_source``), since the
replica runs in another directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from inferstack.errors import (
    AdapterAlreadyLoaded,
    AdapterError,
    AdapterLoadError,
    AdapterNotFound,
    LoraUnavailable,
)
from inferstack.lora.settings import check_adapter_name

__all__ = ["Adapter", "LoraClient"]

_VLLM_PREFIX = "Call to add_lora method failed: "  # the engine core's wrapper, noise to a user


@dataclass(frozen=True)
class Adapter:
    name: str
    source: str  # the path or hub id vLLM loaded it from (/v1/models "root")
    parent: str  # the base model it applies to


class LoraClient:
    """Adapter calls on replicas given by base URL (``http://127.0.0.1:8101``). Thread-safe."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 2.0,
        request_timeout_s: float = 10.0,
        load_timeout_s: float = 120.0,
    ) -> None:
        # A load reads the weights inside the engine loop, between batches (or downloads a hub
        # id), so it gets longer than a listing.
        self._load_timeout = httpx.Timeout(load_timeout_s, connect=connect_timeout_s)
        self._client = httpx.Client(timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LoraClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_adapters(self, url: str) -> list[Adapter]:
        resp = self._call(url, "GET", "/v1/models", "list adapters")
        if resp.status_code != 200:
            raise LoraUnavailable(f"replica {url}: /v1/models answered {resp.status_code}: {_message(resp)}")
        return [
            Adapter(card["id"], card.get("root") or "", card["parent"])
            for card in resp.json().get("data", [])
            if card.get("parent")
        ]

    def load(self, url: str, name: str, source: str, *, replace: bool = False) -> None:
        """Load ``source`` as ``name``; ``replace`` swaps the weights of a loaded ``name`` in place
        (it keeps serving throughout) instead of failing with AdapterAlreadyLoaded."""
        try:
            check_adapter_name(name)
        except ValueError as exc:
            raise AdapterLoadError(f"replica {url}: {exc}") from exc
        body = {"lora_name": name, "lora_path": source, "load_inplace": replace}
        resp = self._call(url, "POST", "/v1/load_lora_adapter", f"load adapter '{name}'", body, self._load_timeout)
        if resp.status_code == 200:
            return
        message, kind = _message(resp), _error_type(resp)
        where = f"replica {url}: adapter '{name}' from '{source}'"
        if resp.status_code == 404 and kind == "NotFoundError":
            raise AdapterNotFound(f"{where}: no adapter there ({message})")
        self._raise_if_no_runtime_api(url, resp, kind)
        if resp.status_code == 400 and "already been loaded" in message:
            raise AdapterAlreadyLoaded(f"replica {url}: adapter '{name}' is already loaded")
        raise AdapterLoadError(f"{where} refused ({resp.status_code}): {message.removeprefix(_VLLM_PREFIX)}")

    def unload(self, url: str, name: str) -> None:
        """Stop serving ``name`` (vLLM drops it from its registry; the weights leave memory when
        its LRU cache evicts them)."""
        resp = self._call(url, "POST", "/v1/unload_lora_adapter", f"unload adapter '{name}'", {"lora_name": name})
        if resp.status_code == 200:
            return
        kind = _error_type(resp)
        if resp.status_code == 404 and kind == "NotFoundError":
            raise AdapterNotFound(f"replica {url}: adapter '{name}' is not loaded")
        self._raise_if_no_runtime_api(url, resp, kind)
        raise AdapterError(f"replica {url}: unloading adapter '{name}' failed ({resp.status_code}): {_message(resp)}")

    def _call(
        self, url: str, method: str, path: str, what: str,
        body: dict[str, Any] | None = None, timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        try:
            return self._client.request(
                method, url.rstrip("/") + path, json=body, timeout=timeout or self._client.timeout
            )
        except httpx.HTTPError as exc:
            raise LoraUnavailable(f"replica {url}: cannot {what}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _raise_if_no_runtime_api(url: str, resp: httpx.Response, kind: str) -> None:
        # The load/unload routes exist only with VLLM_ALLOW_RUNTIME_LORA_UPDATING; without them
        # FastAPI's plain 404 (type "Not Found") or 405 answers.
        if resp.status_code == 405 or (resp.status_code == 404 and kind != "NotFoundError"):
            raise LoraUnavailable(
                f"replica {url} has no runtime adapter API: start it with lora.enabled "
                f"(VLLM_ALLOW_RUNTIME_LORA_UPDATING=true)"
            )


def _error(resp: httpx.Response) -> dict[str, Any]:
    try:
        error = resp.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _message(resp: httpx.Response) -> str:
    return str(_error(resp).get("message") or resp.text.strip() or resp.reason_phrase)


def _error_type(resp: httpx.Response) -> str:
    return str(_error(resp).get("type") or "")
