"""``inferstack keys add|list``: the API key file of ``up --auth-file`` / ``auth: {file}``.

``keys add`` makes a random key, prints it once on stdout and appends only its SHA-256 (with the
tenant and its limits) to the file, so the file never holds a usable key; a running stack reads
the file again within a second, without a restart.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from inferstack.auth import ApiKeyEntry, hash_key, load_key_file, new_key
from inferstack.configfile import validate
from inferstack.errors import ConfigError

__all__ = ["register"]


def _entries(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    load_key_file(path)  # a broken file is not appended to
    loaded = yaml.safe_load(path.read_text())
    return list(loaded if isinstance(loaded, list) else loaded["keys"])


def _add(args: argparse.Namespace) -> int:
    path = Path(args.file)
    entries = _entries(path)
    key = new_key()
    entry: dict[str, Any] = {"key_sha256": hash_key(key), "tenant": args.tenant}
    for name in ("priority", "requests_per_minute", "tokens_per_minute"):
        if getattr(args, name) is not None:
            entry[name] = getattr(args, name)
    validate(ApiKeyEntry, entry, "keys add")  # names the bad flag's value before the file is touched
    entries.append(entry)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(entries, sort_keys=False))
    os.replace(tmp, path)  # whole: a running stack never reads half a file
    print(key)
    print(f"[keys] added a key for tenant {args.tenant} to {path} (only its SHA-256 is kept: copy the key now)",
          flush=True, file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise ConfigError(f"no API key file at '{path}' (make one with `inferstack keys add --file {path} ...`)")
    for tenant in load_key_file(path).tenants:
        limits = [f"{name}={value}" for name, value in (("priority", tenant.priority),
                  ("requests/min", tenant.requests_per_minute), ("tokens/min", tenant.tokens_per_minute))
                  if value is not None]
        print(f"{tenant.name}\t{' '.join(limits) or '-'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("keys", help="API keys and tenants (the --auth-file of up)")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="make a key for a tenant: prints it once, keeps only its hash in FILE")
    add.add_argument("--file", required=True, help="the key file (created if missing)")
    add.add_argument("--tenant", required=True, help="tenant name (letters, digits, '.', '_', '-')")
    add.add_argument("--priority", type=int, help="priority of the tenant's requests (< 0: sheddable)")
    add.add_argument("--requests-per-minute", type=int, help="quota: requests per minute")
    add.add_argument("--tokens-per-minute", type=int, help="quota: input + output tokens per minute")
    add.set_defaults(func=_add)
    ls = sub.add_parser("list", help="the tenants of a key file and their limits")
    ls.add_argument("--file", required=True)
    ls.set_defaults(func=_list)
