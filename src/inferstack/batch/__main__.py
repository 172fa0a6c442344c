"""``python -m inferstack.batch --config batch.yaml``: the batch service process (API + dispatcher).

uvicorn serves the Starlette app; SIGTERM/SIGINT stop accepting, stop the dispatcher (lines in
flight are cancelled and stay pending, so they are sent again on the next start) and exit 0.
A watchdog thread (it runs even if the event loop is stuck) exits the process with code 3 when the
app reports a dispatcher problem (loop ended or stalled): the stack's supervisor restarts a service
that exited, and a restart resumes every batch from SQLite.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn

from inferstack.batch.api import create_app
from inferstack.batch.settings import BatchSettings, load_batch_settings
from inferstack.errors import ConfigError, InferstackError

__all__ = ["WATCHDOG_EXIT_CODE", "main", "serve", "watch_dispatcher"]

WATCHDOG_EXIT_CODE = 3
log = logging.getLogger(__name__)


def watch_dispatcher(problem: Callable[[], str | None], on_problem: Callable[[str], None],
                     stop: threading.Event, interval_s: float = 1.0) -> None:
    """Poll ``problem()`` every ``interval_s`` until ``stop``; the first problem goes to
    ``on_problem`` (the service's: log and exit) and ends the watch."""
    while not stop.wait(interval_s):
        reason = problem()
        if reason is not None:
            on_problem(reason)
            return


def _exit_for(reason: str) -> None:
    log.critical("%s; exiting (code %d) so that the supervisor restarts the service", reason,
                 WATCHDOG_EXIT_CODE)
    logging.shutdown()
    os._exit(WATCHDOG_EXIT_CODE)  # from a thread: sys.exit would end only the thread


def serve(settings: BatchSettings) -> None:
    """Run the service in the foreground until SIGTERM/SIGINT."""
    if settings.state_dir is None or settings.gateway_url is None or settings.port is None:
        raise ConfigError("the batch service config needs 'state_dir', 'gateway_url' and 'port'")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=int(settings.stop_timeout_s))
    log.info("batch service on http://%s:%d, state %s, lines -> %s", settings.host, settings.port,
             settings.state_dir, settings.gateway_url)
    stop = threading.Event()
    watchdog = threading.Thread(target=watch_dispatcher, args=(app.state.dispatcher_problem, _exit_for, stop),
                                name="dispatcher-watchdog", daemon=True)
    watchdog.start()
    try:
        uvicorn.Server(config).run()
    finally:
        stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferstack.batch", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="batch service YAML (BatchSettings)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        serve(load_batch_settings(args.config))
    except InferstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
