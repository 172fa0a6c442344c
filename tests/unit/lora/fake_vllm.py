"""A stand-in for one vLLM 0.32 server's adapter API, answering as the real one does (read from
vllm/entrypoints/openai/models/serving.py, entrypoints/serve/lora/api_router.py,
lora/worker_manager.py, lora/peft_helper.py, entrypoints/serve/exception_handling/):

- ``GET /v1/models``: the base model (parent null), then each adapter (root = its path, parent =
  the base model's served name);
- ``POST /v1/load_lora_adapter``: 400 name of the base model, 400 already loaded (unless
  load_inplace), 404 NotFoundError with the path sanitized to ``<path>`` when the folder has no
  adapter_config.json, 500 when its rank ``r`` exceeds max_lora_rank, else 200 and a text body;
- ``POST /v1/unload_lora_adapter``: 404 NotFoundError when not loaded, else 200;
- without runtime LoRA the two POST routes do not exist: FastAPI's 404 ``Not Found``.

The real server is tested by the integration tests.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class FakeVllm:
    def __init__(self, base: str = "smollm2-135m-instruct", *, max_lora_rank: int = 8,
                 runtime_enabled: bool = True) -> None:
        self.base = base
        self.max_lora_rank = max_lora_rank
        self.runtime_enabled = runtime_enabled
        self.adapters: dict[str, str] = {}  # name -> path, in load order
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.models_status = 200
        # hold_listing(): a GET /v1/models sets listing_arrived, then waits for listing_gate before
        # it reads the adapters (a slow listing, answered with the state after the wait)
        self.listing_arrived = threading.Event()
        self.listing_gate = threading.Event()
        self.listing_gate.set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/v1/models":
                    fake.listing_arrived.set()
                    fake.listing_gate.wait(10)
                if self.path == "/v1/models" and fake.models_status == 200:
                    self._send(200, fake.models())
                elif self.path == "/v1/models":
                    self._send(fake.models_status, _error("Service Unavailable", "Service Unavailable",
                                                          fake.models_status))
                else:
                    self._send(404, _error("Not Found", "Not Found", 404))

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                fake.calls.append((self.path, body))
                routes = {"/v1/load_lora_adapter": fake.load, "/v1/unload_lora_adapter": fake.unload}
                if self.path not in routes or not fake.runtime_enabled:
                    self._send(404, _error("Not Found", "Not Found", 404))
                    return
                self._send(*routes[self.path](body))

            def _send(self, status: int, payload: Any) -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                if not isinstance(payload, str):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeVllm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def hold_listing(self) -> None:
        self.listing_arrived.clear()
        self.listing_gate.clear()

    def restart(self) -> None:
        """A restarted vLLM has lost its runtime adapters."""
        self.adapters.clear()

    def models(self) -> dict[str, Any]:
        cards = [{"id": self.base, "object": "model", "root": f"/models/{self.base}", "parent": None}]
        cards += [{"id": n, "object": "model", "root": p, "parent": self.base} for n, p in self.adapters.items()]
        return {"object": "list", "data": cards}

    def load(self, body: dict[str, Any]) -> tuple[int, Any]:
        name, path = body["lora_name"], body["lora_path"]
        if name == self.base:
            return 400, _error(f"The lora adapter '{name}' conflicts with a served base model.",
                               "InvalidUserInput", 400)
        if name in self.adapters and not body.get("load_inplace"):
            return 400, _error(f"The lora adapter '{name}' has already been loaded. If you want to load the "
                               "adapter in place, set 'load_inplace' to True.", "InvalidUserInput", 400)
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            return 404, _error(f"Loading lora {name} failed: No adapter found for <path>", "NotFoundError", 404)
        rank = json.loads(config.read_text())["r"]
        if rank > self.max_lora_rank:
            return 500, _error(f"Call to add_lora method failed: LoRA rank {rank} is greater than max_lora_rank "
                               f"{self.max_lora_rank}.", "InternalServerError", 500)
        self.adapters[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body["lora_name"]
        if name not in self.adapters:
            return 404, _error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        del self.adapters[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."


def _error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def make_adapter(folder: Path, rank: int = 8) -> str:
    """A folder that passes for a PEFT LoRA adapter (only adapter_config.json is read here)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 2 * rank,
                                                            "target_modules": ["q_proj", "v_proj"]}))
    return str(folder)
