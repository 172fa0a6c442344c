"""Errors that must come before any load: interpreter, target, model, dataset, run dir."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferstack.bench.interpreter import bench_python
from inferstack.bench.runner import run_bench
from inferstack.bench.settings import BenchSettings
from inferstack.bench.target import default_tokenizer, probe_target
from inferstack.errors import ConfigError, ModelNotFoundError, SetupError


@pytest.fixture
def models_server() -> Iterator[str]:
    """A real HTTP server answering /v1/models like vLLM (no inference: nothing must be sent)."""
    posts: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/models":
                body = json.dumps({"object": "list", "data": [{"id": "smollm2-135m-instruct"}]}).encode()
                self.send_response(200)
            else:
                body = b"not found"
                self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            posts.append(self.path)
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    t.join()
    assert posts == [], "a pre-flight check sent load"


def test_missing_benchmark_interpreter_says_make_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERSTACK_CACHE", str(tmp_path))
    with pytest.raises(SetupError, match="make setup"):
        bench_python()


def test_unreachable_target() -> None:
    with pytest.raises(ConfigError, match="is unreachable"):
        probe_target("http://127.0.0.1:9", None, timeout_s=1)


def test_model_not_served(models_server: str) -> None:
    with pytest.raises(ModelNotFoundError, match="'llama' is not served .* it serves: smollm2-135m-instruct"):
        probe_target(models_server + "/v1", "llama")
    info = probe_target(models_server + "/v1/", None)
    assert info.model == "smollm2-135m-instruct" and info.base_url == models_server


def test_unknown_model_needs_a_tokenizer() -> None:
    with pytest.raises(ConfigError, match="--tokenizer"):
        default_tokenizer("some-other-model")
    assert default_tokenizer("smollm2-135m-instruct").name.startswith("smollm2-135m-instruct")


def test_empty_dataset_folder_fails_before_load(tmp_path: Path, models_server: str) -> None:
    (tmp_path / "docs").mkdir()
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    s = BenchSettings(profile="constant", rate=1, stages=1, duration_s=1, dataset=str(tmp_path / "docs"),
                      target=models_server, tokenizer=tok)
    with pytest.raises(ConfigError, match="has no text documents"):
        run_bench(s, tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()


def test_non_empty_run_dir_is_refused(tmp_path: Path, models_server: str) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("old")
    s = BenchSettings(profile="constant", rate=1, target=models_server)
    with pytest.raises(ConfigError, match="exists and is not empty"):
        run_bench(s, tmp_path / "run")
