"""`inferstack batch ...` against a batch service in-process (fake backend): the CLI contract."""

import json

import pytest
from batchfakes import ThreadServer, chat_line, jsonl

from inferstack.batch.api import create_app
from inferstack.commands.batch import _progress
from inferstack.batch.settings import BatchSettings, DispatchSettings
from inferstack.cli import main
from inferstack.process import free_port


@pytest.fixture
def base_url(backend, tmp_path):
    port = free_port()
    settings = BatchSettings(port=port, gateway_url=backend.url, state_dir=tmp_path / "state", poll_interval_s=0.05,
                             dispatch=DispatchSettings(backoff_initial_s=0.01, backoff_max_s=0.05))
    with ThreadServer(create_app(settings), port):
        yield f"http://127.0.0.1:{port}/v1"


def test_submit_wait_results_list_status_cancel(base_url, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl([chat_line(f"c{i}", f"p{i}") for i in range(5)]))
    assert main(["batch", "submit", str(src), "--wait", "--poll-s", "0.05", "--base-url", base_url]) == 0
    captured = capsys.readouterr()
    batch_id = captured.out.strip()
    assert batch_id.startswith("batch_") and "5/5 (5 done, 0 failed)" in captured.err
    out = tmp_path / "out.jsonl"
    assert main(["batch", "results", batch_id, "--output", str(out), "--base-url", base_url]) == 0
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == [f"c{i}" for i in range(5)]
    capsys.readouterr()
    assert main(["batch", "list", "--base-url", base_url]) == 0
    assert batch_id in capsys.readouterr().out
    assert main(["batch", "status", batch_id, "--json", "--base-url", base_url]) == 0
    assert json.loads(capsys.readouterr().out)["request_counts"]["completed"] == 5
    assert main(["batch", "cancel", batch_id, "--base-url", base_url]) == 2  # finished: refused, a message
    assert "cannot be cancelled" in capsys.readouterr().err
    assert main(["batch", "status", "batch_nope", "--base-url", base_url]) == 2
    assert "No such Batch object" in capsys.readouterr().err


def test_failed_batch_exits_1_and_prints_the_line_errors(base_url, tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(jsonl([chat_line("a", "1")]) + b"{nope\n")
    assert main(["batch", "submit", str(src), "--wait", "--poll-s", "0.05", "--base-url", base_url]) == 1
    assert "error line 2: [invalid_json_line]" in capsys.readouterr().err


def test_no_running_stack_is_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INFERSTACK_STATE", str(tmp_path))
    assert main(["batch", "list"]) == 2
    assert "no stack is running" in capsys.readouterr().err


def test_progress_line():
    batch = {"status": "in_progress", "request_counts": {"total": 10, "completed": 4, "failed": 1}}
    line = _progress(batch, 10.0, width=10)
    assert line.startswith("[#####.....] 5/10 (4 done, 1 failed) in_progress") and "ETA 10s" in line
