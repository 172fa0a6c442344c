"""The stack's runtime LoRA adapters: one declared set, kept on every replica.

The declared set is a lora-syncer ``vLLMLoRAConfig`` file in the run dir (``adapters.yaml``):
``inferstack adapters load/unload`` change it through the supervisor, and a user may edit it by
hand. The supervisor's watch thread reconciles every ready replica to it when the file changes and
every ``SYNC_PERIOD_S`` (``lora.syncer.reconcile``), and a starting replica is synced before it
enters the endpoints file: a restarted or added vLLM has lost its runtime adapters, and the picker
must not send an adapter request to a replica without it.

``load`` is all or nothing: the adapter is loaded on every ready replica first, and only added to
the file when all succeeded (else unloaded again from those that took it), so a bad adapter (a
missing folder, a rank above ``max_lora_rank``) is an error with vLLM's reason and changes nothing.
Syncs, loads and unloads take turns (one lock): a sync plans from the declared set and the
replica's list, and a load or unload landing between the two would be undone by that plan.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import yaml

from inferstack.errors import AdapterAlreadyLoaded, AdapterError, AdapterNotFound, ConfigError
from inferstack.lora import (
    DesiredAdapters,
    LoraClient,
    LoraSettings,
    Outcome,
    check_adapter_name,
    load_syncer_config,
    reconcile,
    resolve_adapter_source,
)

__all__ = ["SYNC_PERIOD_S", "StackAdapters"]

log = logging.getLogger(__name__)

SYNC_PERIOD_S = 10.0


class StackAdapters:
    def __init__(self, path: Path, base_model: str, settings: LoraSettings,
                 client: LoraClient | None = None) -> None:
        self.path = path
        self.base_model = base_model
        self.settings = settings
        self.client = client or LoraClient()
        self._lock = threading.Lock()  # syncs, loads and unloads take turns (see above)
        self._mtime: float | None = None
        self._declared = DesiredAdapters({}, frozenset())
        if not path.exists():
            self._write(self._declared)
        self.declared()

    def declared(self) -> DesiredAdapters:
        """The declared set, re-read when the file changed (a hand edit); a file that stops being
        valid keeps the last valid set and logs why."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return self._declared
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self._declared = load_syncer_config(self.path, base_model=self.base_model)
            except ConfigError as exc:
                log.error("ignoring the edited adapters file (the last valid set stays): %s", exc)
        return self._declared

    def changed(self) -> bool:
        try:
            return self.path.stat().st_mtime != self._mtime
        except OSError:
            return False

    def sync(self, url: str) -> list[Outcome]:
        """Bring one replica to the declared set (LoraUnavailable if it does not answer)."""
        with self._lock:
            return reconcile(url, self.declared(), self.client)

    def load(self, name: str, source: str, urls: list[str]) -> str:
        """Load ``name`` on every replica in ``urls``, then declare it; all or nothing."""
        try:
            check_adapter_name(name)
            source = resolve_adapter_source(source)
        except ValueError as exc:
            raise ConfigError(f"adapter '{name}': {exc}") from exc
        if name == self.base_model:
            raise ConfigError(f"adapter name '{name}' is the base model's served name; choose another")
        with self._lock:
            declared = self.declared()
            others = {n for n in declared.ensure_exist if n != name} | set(self.settings.adapters)
            if len(others) + 1 > self.settings.cpu_slots:
                raise ConfigError(
                    f"adapter '{name}': the replicas hold at most {self.settings.cpu_slots} adapters "
                    f"(lora.max_cpu_loras) and {len(others)} are declared ({', '.join(sorted(others))}); "
                    "unload one first or raise lora.max_cpu_loras")
            done: list[str] = []
            try:
                for url in urls:
                    self._load_on(url, name, source, replace=name in declared.ensure_exist)
                    done.append(url)
            except AdapterError:
                for url in done:
                    self._unload_quietly(url, name)
                raise
            exist = dict(declared.ensure_exist)
            exist[name] = source
            self._write(DesiredAdapters(exist, declared.ensure_not_exist - {name}))
        return f"adapter '{name}' loaded on {len(urls)} replica(s) from {source}"

    def unload(self, name: str, urls: list[str]) -> str:
        """Stop serving ``name`` on every replica and declare it absent."""
        with self._lock:
            declared = self.declared()
            if name not in declared.ensure_exist:
                static = " (it is a static adapter of the lora: section)" if name in self.settings.adapters else ""
                raise ConfigError(f"adapter '{name}' is not loaded at runtime{static}; "
                                  f"loaded: {', '.join(declared.ensure_exist) or 'none'}")
            failed = [problem for url in urls if (problem := self._unload_quietly(url, name))]
            exist = {n: s for n, s in declared.ensure_exist.items() if n != name}
            self._write(DesiredAdapters(exist, declared.ensure_not_exist | {name}))
        if failed:
            return (f"adapter '{name}' unloaded from {len(urls) - len(failed)} of {len(urls)} replica(s) and "
                    f"declared absent; the sync retries the others every {SYNC_PERIOD_S:.0f} s: {'; '.join(failed)}")
        return f"adapter '{name}' unloaded from {len(urls)} replica(s)"

    def _load_on(self, url: str, name: str, source: str, *, replace: bool) -> None:
        try:
            self.client.load(url, name, source, replace=replace)
        except AdapterAlreadyLoaded:
            # held but not declared (loaded on the replica by hand): the user asks for this source
            # under this name, so its weights are swapped in place
            self.client.load(url, name, source, replace=True)

    def _unload_quietly(self, url: str, name: str) -> str | None:
        """Unload from one replica; what went wrong, if anything (the declared set makes the sync
        retry)."""
        try:
            self.client.unload(url, name)
        except AdapterNotFound:
            pass
        except AdapterError as exc:
            log.warning("unloading '%s' from %s failed: %s", name, url, exc)
            return str(exc)
        return None

    def _write(self, desired: DesiredAdapters) -> None:
        body: dict[str, Any] = {"name": "inferstack", "defaultBaseModel": self.base_model}
        if desired.ensure_exist:
            body["ensureExist"] = {"models": [{"id": n, "source": s} for n, s in desired.ensure_exist.items()]}
        if desired.ensure_not_exist:
            body["ensureNotExist"] = {"models": [{"id": n, "source": ""} for n in sorted(desired.ensure_not_exist)]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("# The stack's runtime LoRA adapters (lora-syncer format); `inferstack adapters "
                       "load/unload` edit it, hand edits are applied too.\n"
                       + yaml.safe_dump({"vLLMLoRAConfig": body}, sort_keys=False))
        tmp.replace(self.path)
        self._declared = desired
        self._mtime = self.path.stat().st_mtime
