"""Hypothesis against the batch input parser and the Files + Batch API, as the picker's HTTP/2 layer
is fuzzed: random bytes, deep nesting, huge numbers, odd Unicode, duplicate keys and custom_ids,
every endpoint name, multipart edge cases. Every case ends in a clear per-batch or per-request
error (OpenAI-shaped 4xx JSON, or a failed batch naming its line); the service keeps serving and a
good batch submitted after all of it completes."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from batchfakes import ThreadServer, chat_line, jsonl, running_backend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstack.batch.api import create_app
from inferstack.batch.jsonl import parse_batch_input
from inferstack.batch.settings import BATCH_ENDPOINTS, BatchSettings, DispatchSettings
from inferstack.batch.store import TERMINAL_STATUSES
from inferstack.process import free_port

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.text(max_size=8), kids, max_size=4), max_leaves=20)
odd_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30)
line_obj = st.fixed_dictionaries({}, optional={
    "custom_id": st.one_of(odd_text, st.sampled_from(["a", "a", "b"]), json_value),
    "method": st.sampled_from(["POST", "GET", "post", None]),
    "url": st.one_of(st.sampled_from([*BATCH_ENDPOINTS, "/v1/embeddings", "", "/v1/chat/completions/"]), odd_text),
    "body": st.one_of(json_value, st.fixed_dictionaries({"model": st.one_of(odd_text, json_value)},
                                                        optional={"stream": json_value, "messages": json_value})),
    "extra": json_value,
})
raw_line = st.one_of(
    line_obj.map(lambda o: json.dumps(o).encode()),
    st.binary(max_size=200),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 6000).map(lambda n: b'{"custom_id": "x", "n": ' + b"7" * n + b"}"),
    st.sampled_from([b'{"a": 1, "a": 2}', b"NaN", b"[1e400]", b'"\\ud800"', b"\xef\xbb\xbf{}", b"\x00"]),
)
input_file = st.lists(raw_line, max_size=6).map(lambda lines: b"\n".join(lines))


@FUZZ
@given(data=input_file, endpoint=st.sampled_from(BATCH_ENDPOINTS), max_lines=st.integers(1, 5))
def test_the_parser_never_raises_and_names_each_bad_line(data, endpoint, max_lines):
    lines, errors = parse_batch_input(data, endpoint, max_lines=max_lines, max_errors=10)
    n_lines = data.count(b"\n") + 1
    for e in errors:
        assert e.code and e.message
        assert e.line is None or 1 <= e.line <= n_lines
    ids = [ln.custom_id for ln in lines]
    assert len(ids) == len(set(ids))
    for ln in lines:  # what passed is what the store and the HTTP client can carry
        json.dumps(ln.body, allow_nan=False)
        assert ln.url == endpoint and isinstance(ln.body.get("model"), str)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with running_backend() as backend:
        port = free_port()
        settings_ = BatchSettings(port=port, gateway_url=backend.url, state_dir=tmp_path_factory.mktemp("fuzz"),
                                  poll_interval_s=0.02, max_file_bytes=200_000,
                                  dispatch=DispatchSettings(backoff_initial_s=0.01, backoff_max_s=0.05))
        with ThreadServer(create_app(settings_), port), httpx.Client(base_url=f"http://127.0.0.1:{port}",
                                                                     timeout=10) as client:
            yield client


def assert_openai_error(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and "type" in err


CREATED: list[str] = []  # batches the fuzz created: each must end


@FUZZ
@given(data=input_file, endpoint=st.one_of(st.sampled_from(BATCH_ENDPOINTS), odd_text, json_value),
       window=st.sampled_from(["24h", "1h", None, 24]), filename=odd_text)
def test_any_upload_and_batch_request_gets_an_answer(service, data, endpoint, window, filename):
    r = service.post("/v1/files", files={"file": (filename or "f.jsonl", io.BytesIO(data))},
                     data={"purpose": "batch"})
    if len(data) > 200_000:
        assert r.status_code == 413
        return
    assert r.status_code == 200, r.text
    r = service.post("/v1/batches", json={"input_file_id": r.json()["id"], "endpoint": endpoint,
                                          "completion_window": window})
    if endpoint in BATCH_ENDPOINTS and window == "24h":
        assert r.status_code == 200, r.text
        CREATED.append(r.json()["id"])
    else:
        assert_openai_error(r)


multipart_body = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda b, parts: b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + b + b"--\r\n",
              st.sampled_from([b"B", b"xyz", b""]), st.lists(st.binary(max_size=80), max_size=4)),
)
content_type = st.one_of(st.sampled_from(["multipart/form-data; boundary=B", "multipart/form-data",
                                          "multipart/form-data; boundary=", "application/json", "text/plain",
                                          "multipart/form-data; boundary=\"x\"; charset=utf-8"]), odd_text)


@FUZZ
@given(body=multipart_body, ctype=content_type)
def test_malformed_multipart_is_a_4xx_json(service, body, ctype):
    try:
        r = service.post("/v1/files", content=body, headers={"content-type": ctype.encode()})
    except httpx.LocalProtocolError:  # a header value httpx itself refuses to send (e.g. a newline)
        return
    assert_openai_error(r)


ROUTES = [(m, p) for p in ("/v1/batches", "/v1/batches/x", "/v1/batches/x/cancel", "/v1/files/x",
                            "/v1/files/x/content", "/v1/files", "/v1/nothing")
          for m in ("GET", "POST", "DELETE", "PUT")]
any_body = st.one_of(json_value.map(lambda v: json.dumps(v).encode()), st.binary(max_size=100),
                     st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
                     st.sampled_from([b'{"a": 1, "a": 2}', b'{"limit": NaN}', b'{"x": 1e400}', b""]),
                     st.fixed_dictionaries({}, optional={"input_file_id": json_value, "endpoint": json_value,
                                                         "completion_window": json_value,
                                                         "metadata": json_value}).map(
                                                             lambda d: json.dumps(d).encode()))


@pytest.mark.parametrize(("method", "path"), ROUTES)
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=any_body, query=st.sampled_from(["", "?limit=0", "?limit=x", "?limit=" + "9" * 5000, "?after=zz",
                                             "?purpose=%00"]))
def test_any_body_on_any_route_gets_an_answer(service, method, path, body, query):
    r = service.request(method, path + query, content=body, headers={"content-type": "application/json"})
    if r.status_code != 200:
        assert_openai_error(r)


def test_after_the_fuzz_every_batch_ended_and_a_good_batch_completes(service):
    good = service.post("/v1/files", files={"file": ("ok.jsonl", io.BytesIO(jsonl(
        [chat_line(f"c{i}", f"p{i}") for i in range(3)])))}, data={"purpose": "batch"}).json()["id"]
    CREATED.append(service.post("/v1/batches", json={"input_file_id": good, "endpoint": "/v1/chat/completions",
                                                     "completion_window": "24h"}).json()["id"])
    deadline = time.monotonic() + 60
    while True:
        statuses = {b: service.get(f"/v1/batches/{b}").json()["status"] for b in CREATED}
        if all(s in TERMINAL_STATUSES for s in statuses.values()):
            break
        assert time.monotonic() < deadline, {b: s for b, s in statuses.items() if s not in TERMINAL_STATUSES}
        time.sleep(0.05)
    assert statuses[CREATED[-1]] == "completed"
    for b in CREATED[:-1]:
        batch = service.get(f"/v1/batches/{b}").json()
        if batch["status"] == "failed":
            assert all(e["message"] for e in batch["errors"]["data"])
    health = service.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
