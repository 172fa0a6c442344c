"""Files and batches belong to a tenant: with API keys, the key's; another tenant gets 404 for them
and does not list them; lines go to the gateway with the service key, naming their tenant."""

import io
import sqlite3
import time

import httpx
import openai
import pytest
from batchfakes import ThreadServer, chat_line, jsonl

from inferstack.batch.api import create_app
from inferstack.batch.settings import BatchSettings, DispatchSettings
from inferstack.batch.store import BatchStore
from inferstack.process import free_port

KEY_A, KEY_B, SERVICE = "sk-team-a-0123456789", "sk-team-b-0123456789", "sk-service-0123456789"


@pytest.fixture
def keyed_service(backend, tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{key: {KEY_A}, tenant: team-a}}\n- {{key: {KEY_B}, tenant: team-b}}\n")
    service_key = tmp_path / "service-key"
    service_key.write_text(SERVICE)
    port = free_port()
    settings = BatchSettings(port=port, gateway_url=backend.url, state_dir=tmp_path / "state", poll_interval_s=0.05,
                             auth_file=keys, gateway_key_file=service_key,
                             dispatch=DispatchSettings(backoff_initial_s=0.01, backoff_max_s=0.05))
    with ThreadServer(create_app(settings), port):
        yield f"http://127.0.0.1:{port}/v1"


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0)


def test_no_key_or_a_wrong_key_is_401_in_openais_shape(keyed_service):
    with pytest.raises(openai.AuthenticationError) as err:
        _client(keyed_service, "sk-wrong-0123456789").files.list()
    assert err.value.code == "invalid_api_key" and "...6789" in err.value.message
    r = httpx.get(f"{keyed_service}/batches")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{keyed_service.removesuffix('/v1')}/health").status_code == 200  # the probe needs no key


def test_a_tenant_sees_reads_cancels_and_deletes_only_its_own(keyed_service, backend):
    a, b = _client(keyed_service, KEY_A), _client(keyed_service, KEY_B)
    f = a.files.create(file=("in.jsonl", io.BytesIO(jsonl([chat_line(f"r{i}", f"p{i}") for i in range(3)]))),
                       purpose="batch")
    batch = a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    for call in (lambda: b.files.retrieve(f.id), lambda: b.files.content(f.id), lambda: b.files.delete(f.id),
                 lambda: b.batches.retrieve(batch.id), lambda: b.batches.cancel(batch.id),
                 lambda: b.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert b.files.list().data == [] and b.batches.list().data == []
    deadline = time.monotonic() + 20
    while (done := a.batches.retrieve(batch.id)).status != "completed":
        assert time.monotonic() < deadline, done
        time.sleep(0.05)
    assert {x.id for x in a.files.list().data} == {f.id, done.output_file_id}  # the output is a's too
    with pytest.raises(openai.NotFoundError):
        b.files.content(done.output_file_id)
    assert [x.id for x in a.batches.list().data] == [batch.id]
    # each line went out with the service key, as team-a, at the batch objective
    sent = [r["headers"] for r in backend.requests]
    assert len(sent) == 3 and all(h["authorization"] == f"Bearer {SERVICE}" for h in sent)
    assert {h["x-gateway-inference-fairness-id"] for h in sent} == {"team-a"}
    assert {h["x-gateway-inference-objective"] for h in sent} == {"batch"}


def test_a_state_dir_from_before_tenants_gains_the_column_and_keeps_its_objects(tmp_path):
    db = tmp_path / "batch.sqlite3"
    (tmp_path / "files").mkdir()
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE files (id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL, "
                      "bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL);"
                      "INSERT INTO files VALUES ('file-old', 'x.jsonl', 'batch', 1, 0, '/nowhere');")
    con.commit()
    con.close()
    store = BatchStore(tmp_path)
    assert store.get_file("file-old", tenant="")["id"] == "file-old"  # no tenant then: ''
    assert store.get_file("file-old", tenant="team-a") is None
    store.close()
