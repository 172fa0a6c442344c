"""A stand-in for one vLLM server in the supervisor's unit tests: /health and a /metrics page.

Argument: the port. Environment: FAKE_IN_FLIGHT_FILE (its content, if present, is the running
request count the page reports), FAKE_EXIT (exit with this code at once), FAKE_HEALTH_HANG (seconds
/health takes to answer), FAKE_START_DELAY (seconds before it listens), FAKE_WARM_UP_FILE (each
POST /v1/completions, the warm-up, appends a line to it). The supervisor's logic is tested against it; real vLLM is started by the
integration tests.
"""

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

if os.environ.get("FAKE_EXIT"):
    print("fake replica: failing on purpose", flush=True)
    sys.exit(int(os.environ["FAKE_EXIT"]))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/health":
            time.sleep(float(os.environ.get("FAKE_HEALTH_HANG", "0")))
            body = b""
        elif self.path == "/metrics":
            path = os.environ.get("FAKE_IN_FLIGHT_FILE")
            running = Path(path).read_text().strip() if path and Path(path).exists() else "0"
            body = (f'vllm:num_requests_running{{model_name="m"}} {running}\n'
                    'vllm:num_requests_waiting{model_name="m"} 0\n'
                    'vllm:kv_cache_usage_perc{model_name="m"} 0.1\n').encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 (http.server's name)
        if self.path != "/v1/completions":  # the supervisor's warm-up request
            self.send_error(404)
            return
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        marker = os.environ.get("FAKE_WARM_UP_FILE")
        if marker:
            with open(marker, "a") as f:
                f.write("warm-up\n")
        body = b'{"choices": [{"text": "ok"}]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


time.sleep(float(os.environ.get("FAKE_START_DELAY", "0")))
print("fake replica up", flush=True)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
