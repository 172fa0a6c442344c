"""API keys and the tenants they name, read from a key file and kept only as SHA-256 hashes.

The key file is a YAML list (or ``{keys: [...]}``); each entry names its key in one of three ways
and the tenant it belongs to::

    - key: sk-team-a-1f3...          # the key itself (hashed on load, never kept or logged)
      tenant: team-a
      priority: 0                    # optional: the priority of its requests (< 0: sheddable)
      requests_per_minute: 600       # optional quotas
      tokens_per_minute: 200000
    - key_sha256: 9f86d081884c7d...  # only its hash (what `inferstack keys add` writes)
      tenant: team-b
    - key_env: TEAM_C_KEY            # taken from this environment variable when the file is read
      tenant: team-c

A request names its key as OpenAI clients send it, ``Authorization: Bearer <key>``. The file is
read again when it changes (``KeyFileWatch``), so keys and limits change without a restart; a
file that became invalid keeps the last good keys and logs why.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inferstack.configfile import format_validation_error
from inferstack.errors import ConfigError

__all__ = ["MISSING_KEY_MESSAGE", "SERVICE", "ApiKeyEntry", "KeyFileWatch", "KeyRefused", "KeyRing", "Tenant",
           "bearer_token", "hash_key", "identify", "load_key_file", "mask_key", "new_key", "read_key",
           "wrong_key_message"]

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # usable as a label and a header value


def hash_key(key: str) -> str:
    """The SHA-256 hex digest a key is kept as."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits), in the ``sk-`` form OpenAI clients expect."""
    return "sk-inferstack-" + secrets.token_urlsafe(32)


def bearer_token(authorization: str) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header value (scheme case-insensitive, as RFC
    6750 reads it); None for any other form."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def mask_key(key: str) -> str:
    """How an error names a key it refused: never more than its last 4 characters."""
    return f"...{key[-4:]}" if len(key) >= 12 else "(too short to be a key)"


# the 401 answers' messages (OpenAI's error type invalid_request_error, code invalid_api_key)
MISSING_KEY_MESSAGE = ("You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                       "(Authorization: Bearer YOUR_KEY); the OpenAI clients do so with api_key=YOUR_KEY.")


def wrong_key_message(key: str) -> str:
    return (f"Incorrect API key provided: {mask_key(key)}. Ask the stack's operator for a key "
            "(`inferstack keys add`).")


def read_key(path: Path) -> str:
    """A key kept alone in a file (the stack's service key), without surrounding whitespace."""
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file '{path}': {exc.strerror or exc}") from exc
    if len(key) < 8:
        raise ConfigError(f"the key file '{path}' holds no key (at least 8 characters)")
    return key


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who sent a request, and what their key allows."""
    name: str
    priority: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class ApiKeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(None, min_length=8, description="The key itself (hashed on load).")
    key_sha256: str | None = Field(None, description="The key's SHA-256, 64 lowercase hex digits.")
    key_env: str | None = Field(None, min_length=1, description="Environment variable holding the key.")
    tenant: str = Field(description="Tenant name: letters, digits, '.', '_', '-' (at most 63).")
    priority: int | None = Field(None, description="Priority of this tenant's requests (< 0: sheddable); "
                                 "default: the objective's.")
    requests_per_minute: int | None = Field(None, ge=1, description="Quota: requests per minute.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Quota: input + output tokens per minute.")

    @model_validator(mode="after")
    def _one_key(self) -> ApiKeyEntry:
        given = [name for name in ("key", "key_sha256", "key_env") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of key, key_sha256, key_env (got {', '.join(given) or 'none'})")
        if self.key_sha256 is not None and not _SHA256_HEX.match(self.key_sha256):
            raise ValueError("key_sha256 must be 64 lowercase hex digits (`sha256sum` of the key)")
        if not _TENANT.match(self.tenant):
            raise ValueError(f"tenant {self.tenant!r}: use letters, digits, '.', '_', '-' (at most 63, "
                             "starting with a letter or digit)")
        return self

    def digest(self, environ: dict[str, str]) -> str:
        if self.key_sha256 is not None:
            return self.key_sha256
        if self.key is not None:
            return hash_key(self.key)
        assert self.key_env is not None
        value = environ.get(self.key_env)
        if not value:
            raise ConfigError(f"key_env {self.key_env} (tenant {self.tenant}) is not set in the environment")
        return hash_key(value)

    def tenant_of(self) -> Tenant:
        return Tenant(self.tenant, self.priority, self.requests_per_minute, self.tokens_per_minute)


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[ApiKeyEntry] = Field(min_length=1)


class KeyRing:
    """Key hashes -> tenants. ``lookup`` hashes the presented key: no key is ever kept in memory."""

    def __init__(self, entries: dict[str, Tenant]) -> None:
        self._by_digest = entries
        self._by_name = {t.name: t for t in entries.values()}  # a name with several keys: the last entry's

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, key: str) -> Tenant | None:
        return self._by_digest.get(hash_key(key))

    def lookup_digest(self, digest: str) -> Tenant | None:
        return self._by_digest.get(digest)

    def named(self, tenant: str) -> Tenant | None:
        return self._by_name.get(tenant)

    @property
    def tenants(self) -> list[Tenant]:
        return list(self._by_name.values())


SERVICE = Tenant("")  # the stack's own service key (its batch service): acts for the tenant it names


@dataclass(frozen=True, slots=True)
class KeyRefused:
    """Why a request's key gets 401 (OpenAI's ``invalid_api_key``): the message to answer with."""
    message: str


def identify(ring: KeyRing, authorization: str, service_digest: str | None = None) -> Tenant | KeyRefused:
    """Who holds the key of an ``Authorization`` header value: its tenant, ``SERVICE`` for the key
    hashing to ``service_digest``, or why it is refused. The picker and the batch API both ask this."""
    token = bearer_token(authorization)
    if token is None:
        return KeyRefused(MISSING_KEY_MESSAGE)
    digest = hash_key(token)
    if digest == service_digest:
        return SERVICE
    tenant = ring.lookup_digest(digest)
    return tenant if tenant is not None else KeyRefused(wrong_key_message(token))


def load_key_file(path: Path, environ: dict[str, str] | None = None) -> KeyRing:
    """Read and check a key file; a ConfigError names the file, the entry and what is wrong."""
    try:
        loaded: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file '{path}': {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"the API key file '{path}' is not valid YAML: {exc}") from exc
    data = {"keys": loaded} if isinstance(loaded, list) else loaded
    if not isinstance(data, dict):
        raise ConfigError(f"the API key file '{path}' must be a list of {{key, tenant}} entries")
    try:
        parsed = _KeyFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"API key file {path}")) from exc
    env = dict(os.environ) if environ is None else environ
    ring: dict[str, Tenant] = {}
    for i, entry in enumerate(parsed.keys):
        try:
            digest = entry.digest(env)
        except ConfigError as exc:
            raise ConfigError(f"API key file {path}: entry {i + 1}: {exc}") from exc
        if digest in ring:
            raise ConfigError(f"API key file {path}: entry {i + 1} (tenant {entry.tenant}) repeats the key of "
                              f"tenant {ring[digest].name}; each key names one tenant")
        ring[digest] = entry.tenant_of()
    return KeyRing(ring)


class KeyFileWatch:
    """The key ring of a file, read again when the file changes (checked at most every
    ``check_every_s``, on use). A file that became invalid keeps the last good ring and logs why."""

    def __init__(self, path: Path, check_every_s: float = 1.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._stamp = self._stat()
        self.ring = load_key_file(path)  # invalid at start: fail loudly
        self._checked = time.monotonic()
        self.last_error: str | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def current(self, now: float | None = None) -> KeyRing:
        now = time.monotonic() if now is None else now
        if now - self._checked < self.check_every_s:
            return self.ring
        self._checked = now
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.ring = load_key_file(self.path)
                self.last_error = None
                log.info("API key file %s read again: %d keys", self.path, len(self.ring))
            except ConfigError as exc:
                self.last_error = str(exc)
                log.error("API key file %s: %s; keeping the %d keys read before", self.path, exc, len(self.ring))
        return self.ring
