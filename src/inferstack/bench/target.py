"""Check a benchmark target before any load is sent: reachable, serving the model, has metrics.

Invariants: every failure is an :class:`InferstackError` naming the URL and what to do; nothing
here sends inference requests (only ``GET /v1/models``, ``/version``, ``/metrics``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field

from inferstack.errors import ConfigError, ModelNotFoundError

__all__ = ["TargetInfo", "default_tokenizer", "probe_target", "probe_metrics"]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0


class TargetInfo(BaseModel):
    """What the target told us."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Target base URL without /v1.")
    model: str = Field(description="The served model name we will request.")
    served_models: list[str] = Field(description="All model names /v1/models lists.")
    server_version: str | None = Field(default=None, description="vLLM version (GET /version), if any.")


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def probe_target(url: str, model: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> TargetInfo:
    """GET /v1/models; the model to use (``model`` if served, else the only one served)."""
    base = _base(url)
    try:
        resp = httpx.get(f"{base}/v1/models", timeout=timeout_s)
        resp.raise_for_status()
        served = [m["id"] for m in resp.json().get("data", [])]
    except httpx.HTTPStatusError as exc:
        raise ConfigError(
            f"target '{base}' answered GET /v1/models with HTTP {exc.response.status_code}; "
            "is it an OpenAI-compatible server?"
        ) from exc
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"target '{base}' is unreachable ({type(exc).__name__}: {exc}); start the stack "
            "(`inferstack up`) or pass --target URL of a running server"
        ) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"target '{base}' returned a /v1/models body that is not OpenAI's list") from exc
    if model is None:
        if len(served) != 1:
            raise ConfigError(f"target '{base}' serves {served or 'no models'}; choose one with --model")
        model = served[0]
    elif model not in served:
        raise ModelNotFoundError(f"model '{model}' is not served by '{base}'; it serves: {', '.join(served) or 'none'}")
    version = None
    try:
        v = httpx.get(f"{base}/version", timeout=timeout_s)
        if v.status_code == 200:
            version = str(v.json().get("version"))
    except (httpx.HTTPError, ValueError, AttributeError):
        logger.debug("target %s has no /version", base)
    return TargetInfo(base_url=base, model=model, served_models=served, server_version=version)


def probe_metrics(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """The /metrics text of ``url`` if it exposes vLLM metrics, else None."""
    try:
        resp = httpx.get(f"{_base(url)}/metrics", timeout=timeout_s)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200 or "vllm:" not in resp.text:
        return None
    return resp.text


def default_tokenizer(model: str) -> Path:
    """The local folder of the bundled model when ``model`` is its served name."""
    from inferstack.models.bundled import BUNDLED  # local import: models is a sibling component

    if model == BUNDLED.served_name:
        return BUNDLED.folder
    raise ConfigError(
        f"no local tokenizer known for model '{model}'; pass --tokenizer PATH (the model's local folder)"
    )
