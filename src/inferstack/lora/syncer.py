"""Keep one replica at a declared adapter set: the lora-syncer's reconcile, for each replica.

``plan_actions(current, desired)`` is pure: the adapters a replica holds (name -> source, from
/v1/models) and the desired set -> the calls to make. Unloads come first (they free memory
slots), then loads in the file's order. The rules are the lora-syncer's:

- a name in ensureExist that is missing -> ``load``; present from another source -> ``reload``
  (in place: the name keeps serving while its weights are swapped);
- a name in ensureNotExist that is present -> ``unload``;
- any other adapter (a static one, one loaded by hand) is left alone.

Applying a plan and planning again gives no action. ``reconcile(url, desired, client)`` lists,
plans and applies, one outcome per action; one failing adapter does not stop the others. A
replica that cannot be reached raises LoraUnavailable: the caller retries on its next period,
which is also how a restarted replica (it comes back without its runtime adapters) gets them again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from inferstack.errors import AdapterAlreadyLoaded, AdapterError, AdapterNotFound, LoraUnavailable
from inferstack.lora.runtime import LoraClient
from inferstack.lora.syncer_config import DesiredAdapters

__all__ = ["Action", "Outcome", "plan_actions", "reconcile"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Action:
    kind: Literal["load", "reload", "unload"]
    name: str
    source: str = ""  # load/reload: what to load from


@dataclass(frozen=True)
class Outcome:
    action: Action
    error: AdapterError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def plan_actions(current: Mapping[str, str], desired: DesiredAdapters) -> list[Action]:
    """The calls that bring a replica holding ``current`` (name -> source) to ``desired``."""
    actions = [Action("unload", name) for name in sorted(desired.ensure_not_exist) if name in current]
    for name, source in desired.ensure_exist.items():
        if name not in current:
            actions.append(Action("load", name, source))
        elif current[name] != source:
            actions.append(Action("reload", name, source))
    return actions


def reconcile(url: str, desired: DesiredAdapters, client: LoraClient) -> list[Outcome]:
    """Bring the replica at ``url`` to ``desired``; LoraUnavailable if it cannot be reached."""
    current = {adapter.name: adapter.source for adapter in client.list_adapters(url)}
    outcomes = []
    for action in plan_actions(current, desired):
        try:
            _apply(client, url, action)
        except LoraUnavailable:
            raise
        except AdapterError as exc:
            outcomes.append(Outcome(action) if _already_done(action, exc) else _failed(url, action, exc))
            continue
        log.info("replica %s: %s adapter '%s'%s", url, action.kind, action.name,
                 f" from {action.source}" if action.source else "")
        outcomes.append(Outcome(action))
    return outcomes


def _already_done(action: Action, exc: AdapterError) -> bool:
    """Another loader got there first (or the adapter went meanwhile): the replica is as wanted."""
    return isinstance(exc, AdapterAlreadyLoaded) or (action.kind == "unload" and isinstance(exc, AdapterNotFound))


def _apply(client: LoraClient, url: str, action: Action) -> None:
    if action.kind == "unload":
        client.unload(url, action.name)
    else:
        client.load(url, action.name, action.source, replace=action.kind == "reload")


def _failed(url: str, action: Action, exc: AdapterError) -> Outcome:
    log.warning("replica %s: %s adapter '%s' failed: %s", url, action.kind, action.name, exc)
    return Outcome(action, exc)
