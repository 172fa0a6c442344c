"""``python -m inferstack.batch --config batch.yaml``: the batch service process (API + dispatcher).

uvicorn serves the Starlette app; SIGTERM/SIGINT stop accepting, stop the dispatcher (lines in
flight are cancelled and stay pending, so they are sent again on the next start) and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from inferstack.batch.api import create_app
from inferstack.batch.settings import BatchSettings, load_batch_settings
from inferstack.errors import ConfigError, InferstackError

__all__ = ["main", "serve"]


def serve(settings: BatchSettings) -> None:
    """Run the service in the foreground until SIGTERM/SIGINT."""
    if settings.state_dir is None or settings.gateway_url is None or settings.port is None:
        raise ConfigError("the batch service config needs 'state_dir', 'gateway_url' and 'port'")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=int(settings.stop_timeout_s))
    logging.getLogger(__name__).info("batch service on http://%s:%d, state %s, lines -> %s", settings.host,
                                     settings.port, settings.state_dir, settings.gateway_url)
    uvicorn.Server(config).run()


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
