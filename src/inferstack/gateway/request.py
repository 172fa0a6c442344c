"""Parse an OpenAI ``/v1/chat/completions`` or ``/v1/completions`` body into what the EPP needs.

Invariants: the parse never raises anything but ``BadRequest`` (-> HTTP 400); the prompt text used
for prefix hashing is the concatenation of message roles and text contents in order, so two chat
requests that share their first messages share a text prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["BadRequest", "InferenceRequest", "parse_body"]

_loads = json.loads


class BadRequest(ValueError):
    """The body is not an OpenAI completion/chat request; the message says why (sent to the client)."""


@dataclass(slots=True)
class InferenceRequest:
    model: str
    prompt: str
    stream: bool
    max_tokens: int | None
    kind: str  # "chat" | "completion"
    target_model: str = ""
    priority: int = 0
    tenant: str = ""  # who sent it (the API key's tenant, else the fairness-id header)
    prompt_tokens: int = 0  # estimated (~4 characters a token): the load this request adds
    prefix_hashes: list[int] | None = None  # filled once by the prefix scorer
    prefix_best_match: float | None = None  # best match over the endpoints, set by the prefix scorer
    quota_tokens: int = 0  # what the tenant's quota admitted it for (0: no limits)
    ratelimit: tuple[tuple[str, bytes], ...] = ()  # x-ratelimit-* headers for the answer (a tenant with quotas)
    messages: list[object] | None = None  # a chat request's messages as sent (the engine's tokens need them)
    block_keys: list[int] | None = None  # its full blocks' keys (gateway/kv_events.py), with KV events on
    held_blocks: dict[str, int] | None = None  # endpoint -> its blocks held there (reported or pending), by precise-prefix


def _message_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def parse_body(body: bytes) -> InferenceRequest:
    """Return the parsed request; raise ``BadRequest`` on malformed JSON or a missing field."""
    try:
        data = _loads(body)
    except RecursionError:  # the C scanner's answer to deep nesting (e.g. 100,000 '[')
        raise BadRequest("request body is nested too deeply to be a chat or completion request") from None
    except (ValueError, UnicodeDecodeError) as exc:  # also integers beyond Python's digit limit
        raise BadRequest(f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("request body needs a string 'model'")
    messages = data.get("messages")
    if messages is not None:
        if not isinstance(messages, list):
            raise BadRequest("'messages' must be a list")
        parts = []
        for m in messages:
            if not isinstance(m, dict):
                raise BadRequest("each item of 'messages' must be an object")
            parts.append(f"{m.get('role', '')}:{_message_text(m.get('content'))}\n")
        prompt, kind = "".join(parts), "chat"
    else:
        raw = data.get("prompt")
        if isinstance(raw, str):
            prompt = raw
        elif isinstance(raw, list) and raw:
            prompt = raw[0] if isinstance(raw[0], str) else " ".join(str(t) for t in raw)
        else:
            raise BadRequest("request body needs 'messages' (chat) or 'prompt' (completions)")
        kind = "completion"
    max_tokens = data.get("max_tokens", data.get("max_completion_tokens"))
    if max_tokens is not None and not isinstance(max_tokens, int):
        raise BadRequest("'max_tokens' must be an integer")
    return InferenceRequest(model=model, prompt=prompt, stream=bool(data.get("stream", False)),
                            max_tokens=max_tokens, kind=kind, target_model=model,
                            prompt_tokens=len(prompt) // 4 + 1, messages=messages if kind == "chat" else None)
