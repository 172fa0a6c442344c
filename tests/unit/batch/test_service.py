"""The batch service as a process (``BatchService``): start, SIGKILL mid-run, heal -> the batch
completes with each line exactly once; stop leaves no process."""

import io
import json
import os
import signal
import time

import openai
import pytest
from batchfakes import chat_line, jsonl

from inferstack.batch.runtime import BatchService
from inferstack.batch.settings import BatchSettings, DispatchSettings
from inferstack.errors import PortInUseError
from inferstack.process import free_port, pid_alive


def _wait_for(predicate, timeout_s=30.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigkill_mid_run_then_restart_gives_each_line_once(backend, tmp_path):
    backend.delay_s = 0.05
    settings = BatchSettings(port=free_port(), gateway_url=backend.url, state_dir=tmp_path / "state",
                             poll_interval_s=0.05, dispatch=DispatchSettings(
                                 initial_concurrency=4, max_concurrency=4, backoff_initial_s=0.01,
                                 backoff_max_s=0.05))
    svc = BatchService(settings, run_dir=tmp_path / "run")
    svc.start()
    try:
        client = openai.OpenAI(base_url=f"{svc.url}/v1", api_key="none")
        f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([chat_line(f"c{i}", f"p{i}")
                                                                    for i in range(120)]))), purpose="batch")
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        _wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 20, what="20 lines")
        old_pid = svc.pid
        os.kill(old_pid, signal.SIGKILL)  # mid-run: lines in flight are lost with the process
        # a killed multithreaded leader shows as a zombie before its threads are gone and it can be
        # reaped: wait for the service's own view, not /proc's
        _wait_for(lambda: svc.status().state.startswith("exited"), what="the kill")
        _wait_for(lambda: svc.heal() == ["batch"], what="heal")
        assert svc.restarts == 1 and svc.pid != old_pid
        _wait_for(svc.healthy, what="the restarted service")
        _wait_for(lambda: client.batches.retrieve(batch.id).status == "completed", what="completion")
        done = client.batches.retrieve(batch.id)
        assert done.request_counts.completed == 120 and done.request_counts.failed == 0
        out = [json.loads(x)["custom_id"] for x in client.files.content(done.output_file_id).text.splitlines()]
        assert out == [f"c{i}" for i in range(120)]  # each once, in input order
        sent = backend.contents()
        assert set(sent) == {f"p{i}" for i in range(120)}
        assert len(sent) - 120 <= 4  # only the lines in flight at the kill were sent twice
    finally:
        pid = svc.pid
        svc.stop()
    assert svc.pid is None and not pid_alive(pid)
    assert svc.heal() == []  # a stopped service is not restarted


def test_busy_port_and_bad_config(tmp_path, backend):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        svc = BatchService(BatchSettings(port=port, gateway_url=backend.url, state_dir=tmp_path),
                           run_dir=tmp_path / "run")
        with pytest.raises(PortInUseError, match=str(port)):
            svc.start()
    with pytest.raises(ValueError):
        BatchService(BatchSettings(port=1234), run_dir=tmp_path)


def test_stop_mid_run_then_a_new_service_on_the_same_state_dir_finishes_it(backend, tmp_path):
    """What `down` then `up` does: SIGTERM (lines in flight are cancelled, stay pending), a new process
    on the same database resumes the batch; each line once."""
    backend.delay_s = 0.05
    settings = BatchSettings(port=free_port(), gateway_url=backend.url, state_dir=tmp_path / "state",
                             poll_interval_s=0.05, dispatch=DispatchSettings(
                                 initial_concurrency=4, max_concurrency=4, backoff_initial_s=0.01))
    first = BatchService(settings, run_dir=tmp_path / "run")
    first.start()
    try:
        client = openai.OpenAI(base_url=f"{first.url}/v1", api_key="none")
        f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([chat_line(f"c{i}", f"p{i}")
                                                                    for i in range(60)]))), purpose="batch")
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        _wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 10, what="10 lines")
    finally:
        first.stop()
    second = BatchService(settings.model_copy(update={"port": free_port()}), run_dir=tmp_path / "run")
    second.start()
    try:
        client = openai.OpenAI(base_url=f"{second.url}/v1", api_key="none")
        _wait_for(lambda: client.batches.retrieve(batch.id).status == "completed", what="completion")
        out = [json.loads(x)["custom_id"] for x in
               client.files.content(client.batches.retrieve(batch.id).output_file_id).text.splitlines()]
        assert out == [f"c{i}" for i in range(60)]
    finally:
        second.stop()
