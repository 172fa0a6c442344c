"""The ``inferstack`` command line.

Each component registers its own subcommands (``register(subparsers)`` in its module under
``inferstack.commands``),
so this file only wires them together and turns ``InferstackError`` into a clear message and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from inferstack.errors import InferstackError

__all__ = ["main", "build_parser"]

# One line per component that contributes commands.
_COMPONENT_CLIS = (
    "inferstack.commands.envs",  # setup
    "inferstack.commands.models",  # models list|prepare
    "inferstack.commands.stack",  # up, status, down
    "inferstack.commands.gateway",  # epp, gateway
    "inferstack.commands.bench",  # bench, report
    "inferstack.commands.kube",  # recommend, render
    "inferstack.commands.autoscale",  # autoscale simulate
    "inferstack.commands.batch",  # batch submit|list|status|cancel|results
    "inferstack.commands.lora",  # adapters train|load|unload|list
    "inferstack.commands.spectune",  # tune-spec
    "inferstack.commands.auth",  # keys add|list
    "inferstack.commands.top",  # top
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferstack",
        description="Online LLM inference on vLLM + Envoy: serve, route, benchmark, render for GKE.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMPONENT_CLIS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # One line per request from the health checker would drown the lifecycle lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except InferstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
