"""``inferstack models list|prepare``."""

from __future__ import annotations

import argparse

from inferstack.envs.environments import ENGINE_ENV, env_python
from inferstack.models.bundled import BUNDLED, prepare_bundled

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    state = "prepared" if BUNDLED.is_prepared() else "not prepared (run `inferstack models prepare`)"
    print(f"{BUNDLED.served_name:28} bundled  {state}")
    print(f"{'':28} {BUNDLED.description}")
    if BUNDLED.is_prepared():
        print(f"{'':28} {BUNDLED.folder}")
    print("Any local Hugging Face folder or hub id (org/name) is also accepted by --model.")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    prepare_bundled(env_python(ENGINE_ENV))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="list or prepare models")
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="models this machine can serve").set_defaults(func=_list)
    sub.add_parser("prepare", help="convert the bundled model (once, cached)").set_defaults(
        func=_prepare
    )
