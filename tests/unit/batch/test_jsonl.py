"""Batch input validation: one table of malformed lines, each with the OpenAI error code and line."""

import json

import pytest
from batchfakes import chat_line, jsonl

from inferstack.batch.jsonl import parse_batch_input

EP = "/v1/chat/completions"


def test_valid_file_keeps_order_and_skips_blank_lines():
    data = jsonl([chat_line("a", "1"), chat_line("b", "2")]) + b"\n  \n" + jsonl([chat_line("c", "3")])
    lines, errors = parse_batch_input(data, EP, max_lines=10)
    assert errors == []
    assert [(ln.index, ln.line, ln.custom_id) for ln in lines] == [(0, 1, "a"), (1, 2, "b"), (2, 5, "c")]


def _with(**changes):
    line = chat_line("x", "hi")
    for key, value in changes.items():
        if value is None:
            line.pop(key)
        else:
            line[key] = value
    return json.dumps(line).encode()


@pytest.mark.parametrize("raw, code, param", [
    (b"{not json", "invalid_json_line", None),
    (b"[1, 2]", "invalid_request", None),
    (_with(custom_id=None), "missing_required_parameter", "custom_id"),
    (_with(custom_id=""), "missing_required_parameter", "custom_id"),
    (_with(method="GET"), "invalid_method", "method"),
    (_with(url="/v1/embeddings"), "invalid_url", "url"),
    (_with(body="text"), "invalid_body", "body"),
    (_with(body={"messages": []}), "missing_required_parameter", "body.model"),
    (_with(body={"model": "m", "stream": True}), "invalid_body", "body.stream"),
    (_with(extra=1), "invalid_request", None),
    (b"[" * 100_000 + b"]" * 100_000, "invalid_json_line", None),  # RecursionError once
    (b"[" * 65 + b"]" * 65, "invalid_json_line", None),  # parses, but deeper than MAX_JSON_DEPTH
    (b'{"custom_id": "a", "custom_id": "b", "method": "POST"}', "invalid_json_line", None),
    (b'{"custom_id": "x", "body": {"temperature": NaN}}', "invalid_json_line", None),
    (b'{"custom_id": "x", "body": {"temperature": 1e999}}', "invalid_json_line", None),
    (b'{"custom_id": "x", "body": {"seed": ' + b"9" * 5000 + b"}}", "invalid_json_line", None),
    (b'{"custom_id": "\xff\xfe"}', "invalid_json_line", None),
])
def test_malformed_line_is_reported_with_code_line_and_param(raw, code, param):
    data = jsonl([chat_line("ok", "fine")]) + raw + b"\n"
    lines, errors = parse_batch_input(data, EP, max_lines=10)
    assert len(errors) == 1
    assert (errors[0].code, errors[0].line, errors[0].param) == (code, 2, param)
    assert errors[0].as_dict()["message"]


def test_duplicate_custom_id():
    _, errors = parse_batch_input(jsonl([chat_line("a", "1"), chat_line("a", "2")]), EP, 10)
    assert [(e.code, e.line) for e in errors] == [("duplicate_custom_id", 2)]


def test_too_many_lines_and_empty_file_and_error_cap():
    _, errors = parse_batch_input(jsonl([chat_line(str(i), "x") for i in range(4)]), EP, max_lines=3)
    assert errors[-1].code == "batch_too_large"
    _, errors = parse_batch_input(b"\n\n", EP, 3)
    assert [e.code for e in errors] == ["empty_file"]
    _, errors = parse_batch_input(b"x\n" * 50, EP, 100, max_errors=5)
    assert len(errors) == 5


def test_the_example_file_is_valid():
    from pathlib import Path

    data = (Path(__file__).parents[3] / "examples" / "batch" / "requests.jsonl").read_bytes()
    lines, errors = parse_batch_input(data, EP, max_lines=100)
    assert errors == [] and len(lines) == 5
