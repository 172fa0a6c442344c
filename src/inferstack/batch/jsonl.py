"""Validation of a batch input file (JSONL), as the OpenAI Batch API defines it.

Each non-blank line is one request::

    {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": ..., ...}}

``parse_batch_input(data, endpoint, max_lines, max_errors)`` returns the requests and the problems;
a problem is an OpenAI ``BatchError`` (``code``, ``line`` 1-based, ``message``, ``param``). A batch
with any problem fails validation as a whole (status ``failed``, ``errors.data``), as OpenAI does.
Invariants: custom_ids are unique; every line's url equals the batch's endpoint; nothing here
does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["LineError", "ParsedLine", "parse_batch_input"]


@dataclass(frozen=True)
class ParsedLine:
    index: int  # 0-based position among the requests (the output order)
    line: int  # 1-based line number in the file
    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class LineError:
    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": self.line, "param": self.param}


def parse_batch_input(data: bytes, endpoint: str, max_lines: int,
                      max_errors: int = 100) -> tuple[list[ParsedLine], list[LineError]]:
    """The requests of ``data`` and at most ``max_errors`` problems (stops looking after that)."""
    lines: list[ParsedLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if len(errors) >= max_errors:
            break
        if not raw.strip():
            continue
        error = _check_line(raw, number, endpoint, seen, lines)
        if error is not None:
            errors.append(error)
        if len(lines) > max_lines:
            errors.append(LineError("batch_too_large", f"the input file has more than {max_lines} "
                                    f"requests (the most one batch may hold)", number))
            break
    if not lines and not errors:
        errors.append(LineError("empty_file", "the input file has no requests"))
    return lines, errors


def _check_line(raw: bytes, number: int, endpoint: str, seen: set[str],
                out: list[ParsedLine]) -> LineError | None:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return LineError("invalid_json_line", f"line {number} is not valid JSON: {exc}", number)
    if not isinstance(obj, dict):
        return LineError("invalid_request", f"line {number} must be a JSON object, not "
                         f"{type(obj).__name__}", number)
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError("missing_required_parameter", f"line {number} needs a non-empty string "
                         "'custom_id'", number, "custom_id")
    if custom_id in seen:
        return LineError("duplicate_custom_id", f"line {number}: custom_id {custom_id!r} appears more "
                         "than once; each request needs its own", number, "custom_id")
    method = obj.get("method")
    if method != "POST":
        return LineError("invalid_method", f"line {number} has method {method!r}; must be 'POST'",
                         number, "method")
    url = obj.get("url")
    if url != endpoint:
        return LineError("invalid_url", f"line {number} has url {url!r}; this batch's endpoint is "
                         f"{endpoint!r} and every line must use it", number, "url")
    body = obj.get("body")
    if not isinstance(body, dict):
        return LineError("invalid_body", f"line {number} needs a JSON object 'body'", number, "body")
    if not isinstance(body.get("model"), str):
        return LineError("missing_required_parameter", f"line {number}: the body needs a string 'model'",
                         number, "body.model")
    if body.get("stream"):
        return LineError("invalid_body", f"line {number}: 'stream' is not supported in a batch", number,
                         "body.stream")
    extra = set(obj) - {"custom_id", "method", "url", "body"}
    if extra:
        return LineError("invalid_request", f"line {number} has unknown keys {sorted(extra)}; allowed: "
                         "custom_id, method, url, body", number)
    seen.add(custom_id)
    out.append(ParsedLine(len(out), number, custom_id, url, body))
    return None
