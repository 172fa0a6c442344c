"""The SQLite store: files, batch lifecycle, exactly-once results, resuming after a reopen."""

import json

from batchfakes import chat_line, jsonl

from inferstack.batch.jsonl import LineError, parse_batch_input
from inferstack.batch.store import BatchStore

EP = "/v1/chat/completions"


def _upload(store: BatchStore, data: bytes) -> dict:
    temp = store.temp_path()
    temp.write_bytes(data)
    return store.add_file(temp, "in.jsonl", "batch")


def _started(store: BatchStore, n: int = 3) -> str:
    data = jsonl([chat_line(f"c{i}", str(i)) for i in range(n)])
    f = _upload(store, data)
    batch = store.create_batch(f["id"], EP, "24h", {"k": "v"})
    lines, errors = parse_batch_input(data, EP, 100)
    assert not errors and store.start_batch(batch["id"], lines)
    return batch["id"]


def test_file_is_registered_with_openai_fields(tmp_path):
    store = BatchStore(tmp_path)
    obj = _upload(store, b"abc\n")
    assert obj["object"] == "file" and obj["id"].startswith("file-") and obj["bytes"] == 4
    assert obj["purpose"] == "batch" and obj["filename"] == "in.jsonl"
    assert store.file_path(obj["id"]).read_bytes() == b"abc\n"
    assert [f["id"] for f in store.list_files()] == [obj["id"]]
    assert not list(tmp_path.glob("files/.tmp-*"))
    assert store.delete_file(obj["id"]) and store.get_file(obj["id"]) is None


def test_batch_object_shape_and_lifecycle(tmp_path):
    store = BatchStore(tmp_path)
    batch_id = _started(store)
    b = store.get_batch(batch_id)
    assert b["object"] == "batch" and b["status"] == "in_progress" and b["metadata"] == {"k": "v"}
    assert b["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert b["expires_at"] - b["created_at"] == 24 * 3600 and b["model"] == "m"
    assert [ln.idx for ln in store.next_lines(10, set())] == [0, 1, 2]
    assert [ln.idx for ln in store.next_lines(10, {(batch_id, 0)})] == [1, 2]


def test_a_line_gets_one_result_only(tmp_path):
    store = BatchStore(tmp_path)
    batch_id = _started(store)
    result = {"id": "r", "custom_id": "c0", "response": {"status_code": 200}, "error": None}
    usage = {"prompt_tokens": 7, "completion_tokens": 3}
    assert store.record_result(batch_id, 0, result, ok=True, usage=usage)
    assert not store.record_result(batch_id, 0, result, ok=True, usage=usage)  # a duplicate send
    assert not store.record_result(batch_id, 0, result, ok=False)
    b = store.get_batch(batch_id)
    assert b["request_counts"] == {"total": 3, "completed": 1, "failed": 0}
    assert b["usage"]["input_tokens"] == 7 and b["usage"]["total_tokens"] == 10
    assert [ln.idx for ln in store.next_lines(10, set())] == [1, 2]


def test_state_survives_a_reopen_and_finalize_writes_files_once(tmp_path):
    store = BatchStore(tmp_path)
    batch_id = _started(store)
    store.record_result(batch_id, 2, {"custom_id": "c2"}, ok=True)
    store.record_result(batch_id, 0, {"custom_id": "c0"}, ok=False)
    store.close()
    store = BatchStore(tmp_path)  # as after a SIGKILL: pending lines are pending again
    assert [ln.custom_id for ln in store.next_lines(10, set())] == ["c1"]
    store.record_result(batch_id, 1, {"custom_id": "c1"}, ok=True)
    store.mark_finalizing(batch_id)
    store.finalize(batch_id, "completed")
    store.finalize(batch_id, "completed")  # a repeated finalize changes nothing
    b = store.get_batch(batch_id)
    assert b["status"] == "completed" and b["completed_at"] and b["finalizing_at"]
    out = store.file_path(b["output_file_id"]).read_text().splitlines()
    assert [json.loads(x)["custom_id"] for x in out] == ["c1", "c2"]  # input order
    err = store.file_path(b["error_file_id"]).read_text().splitlines()
    assert [json.loads(x)["custom_id"] for x in err] == ["c0"]
    assert store.get_file(b["output_file_id"])["purpose"] == "batch_output"


def test_cancel_and_expire_and_fail(tmp_path):
    store = BatchStore(tmp_path)
    batch_id = _started(store)
    store.record_result(batch_id, 0, {"custom_id": "c0"}, ok=True)
    assert store.request_cancel(batch_id)["status"] == "cancelling"
    assert store.next_lines(10, set()) == []  # nothing of a cancelling batch is sent
    store.finalize(batch_id, "cancelled")
    b = store.get_batch(batch_id)
    assert b["status"] == "cancelled" and b["cancelled_at"] and b["error_file_id"] is None
    assert store.request_cancel(batch_id)["status"] == "cancelled"

    expiring = _started(store, 2)
    store.finalize(expiring, "expired", expired_error={"code": "batch_expired", "message": "late"})
    b = store.get_batch(expiring)
    assert b["status"] == "expired" and b["request_counts"]["failed"] == 2 and b["output_file_id"] is None

    f = _upload(store, b"{}\n")
    bad = store.create_batch(f["id"], EP, "24h")
    store.fail_batch(bad["id"], [LineError("invalid_url", "wrong", 1, "url")])
    b = store.get_batch(bad["id"])
    assert b["status"] == "failed" and b["errors"]["data"][0] == {
        "code": "invalid_url", "message": "wrong", "line": 1, "param": "url"}


def test_list_batches_pages_newest_first(tmp_path):
    store = BatchStore(tmp_path)
    f = _upload(store, b"x\n")
    ids = [store.create_batch(f["id"], EP, "24h")["id"] for _ in range(5)]
    page, more = store.list_batches(limit=2)
    assert [b["id"] for b in page] == ids[::-1][:2] and more
    page, more = store.list_batches(limit=10, after=page[-1]["id"])
    assert [b["id"] for b in page] == ids[::-1][2:] and not more
