"""``python -m inferstack.gateway --config FILE``: the EPP process as the local Gateway starts it.

Same as ``inferstack epp --config FILE`` but imports only the gateway package, so the EPP does not
depend on the other components' CLIs and starts faster.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inferstack.errors import InferstackError
from inferstack.gateway.epp import run_epp
from inferstack.gateway.settings import load_epp_settings


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m inferstack.gateway", description="run the endpoint picker")
    ap.add_argument("--config", required=True)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return run_epp(load_epp_settings(Path(args.config)))
    except InferstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
