import json

import pytest
from hypothesis import given, strategies as st

from inferstack.gateway.request import BadRequest, parse_body


def test_chat_body():
    body = json.dumps({"model": "m", "stream": True, "max_tokens": 7, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}]}).encode()
    req = parse_body(body)
    assert (req.model, req.stream, req.max_tokens, req.kind) == ("m", True, 7, "chat")
    assert req.prompt == "system:be brief\nuser:hi\n"
    assert req.target_model == "m"


def test_completion_body_string_and_list():
    assert parse_body(b'{"model":"m","prompt":"abc"}').prompt == "abc"
    assert parse_body(b'{"model":"m","prompt":["abc","d"]}').prompt == "abc"
    req = parse_body(b'{"model":"m","prompt":[1,2,3],"max_completion_tokens":3}')
    assert (req.prompt, req.kind, req.max_tokens, req.stream) == ("1 2 3", "completion", 3, False)


def test_chat_prefixes_are_text_prefixes():
    a = parse_body(json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 100}]}).encode())
    b = parse_body(json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 100},
                                                          {"role": "user", "content": "more"}]}).encode())
    assert b.prompt.startswith(a.prompt)


@pytest.mark.parametrize(("body", "reason"), [
    (b"{bad json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1,2]", "JSON object"),
    (b'{"prompt":"x"}', "'model'"),
    (b'{"model":5,"prompt":"x"}', "'model'"),
    (b'{"model":"m"}', "'messages'"),
    (b'{"model":"m","messages":"hi"}', "must be a list"),
    (b'{"model":"m","messages":["hi"]}', "must be an object"),
    (b'{"model":"m","prompt":"x","max_tokens":"9"}', "integer"),
    (b"", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # RecursionError once: INTERNAL, not 400
    (b'{"model":"m","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"model":"m","prompt":"x","max_tokens":' + b"9" * 5000 + b"}", "not valid JSON"),  # digit limit
])
def test_malformed_bodies(body, reason):
    with pytest.raises(BadRequest, match=reason):
        parse_body(body)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data):
    try:
        parse_body(data)
    except BadRequest:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=10))
def test_arbitrary_json_never_crashes(doc):
    for extra in ({}, {"model": "m"}, {"model": "m", "messages": doc}, {"model": "m", "prompt": doc}):
        payload = dict(extra) if isinstance(doc, dict) is False else {**doc, **extra}
        try:
            parse_body(json.dumps(payload).encode())
        except BadRequest:
            pass


@given(st.integers(1, 200_000), st.sampled_from([b"[", b'{"a":']))
def test_any_nesting_depth_is_a_bad_request_or_parses(depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    body = b'{"model":"m","prompt":"x","extra":' + opener * depth + b"1" + closer * depth + b"}"
    try:
        assert parse_body(body).model == "m"
    except BadRequest as exc:
        assert "nested too deeply" in str(exc)


def test_duplicate_keys_take_the_last_as_vllm_does():
    """vLLM's server parses with the same rule (last wins), so the picker routes the model the
    engine will serve."""
    assert parse_body(b'{"model":"a","model":"b","prompt":"x"}').model == "b"
