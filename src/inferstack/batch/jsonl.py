"""Validation of a batch input file (JSONL), as the OpenAI Batch API defines it.

Each non-blank line is one request::

    {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": ..., ...}}

``parse_batch_input(data, endpoint, max_lines, max_errors)`` returns the requests and the problems;
a problem is an OpenAI ``BatchError`` (``code``, ``line`` 1-based, ``message``, ``param``). A batch
with any problem fails validation as a whole (status ``failed``, ``errors.data``), as OpenAI does.
Invariants: custom_ids are unique; every line's url equals the batch's endpoint; nothing here
does I/O; no input raises: whatever the bytes (deep nesting, huge numbers, NaN, duplicate keys,
invalid UTF-8), each bad line becomes a ``LineError`` naming it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "LineError", "ParsedLine", "loads_strict", "parse_batch_input"]

# Deepest nesting of arrays/objects a line may have. OpenAI bodies (messages, tools, JSON schemas)
# stay far below; deeper input is refused by name here rather than by a RecursionError later (the
# store and the HTTP client serialise bodies recursively).
MAX_JSON_DEPTH = 64


class _DuplicateKey(ValueError):
    pass


def loads_strict(raw: bytes | str) -> Any:
    """JSON as RFC 8259 means it, safe for anything that serialises it again: ValueError (with a
    message for the client) on invalid JSON or UTF-8, a key twice in one object, NaN/Infinity, a
    number out of float range or beyond Python's integer digit limit, or nesting deeper than
    ``MAX_JSON_DEPTH``. Never another exception (the C scanner's RecursionError included)."""
    try:
        obj = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                         parse_float=_finite_float)
    except _DuplicateKey as exc:
        raise ValueError(f"the key {exc.args[0]!r} appears twice in one object; each key may appear once") from None
    except RecursionError:
        obj = None
    except (ValueError, UnicodeDecodeError) as exc:  # also ints beyond Python's digit limit
        raise ValueError(f"not valid JSON: {str(exc)[:200]}") from None
    else:
        if _depth(obj) <= MAX_JSON_DEPTH:
            return obj
    raise ValueError(f"nested too deeply (at most {MAX_JSON_DEPTH} levels of arrays and objects)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf, which JSON cannot carry on to the engine
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion limit)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        todo.extend((c, depth + 1) for c in children)
    return deepest


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
        obj = loads_strict(raw)
    except ValueError as exc:
        return LineError("invalid_json_line", f"line {number}: {exc}", number)
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
