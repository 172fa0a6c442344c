"""Batch inference on the same stack: the OpenAI Files + Batch API, durable, at the lowest priority.

Public surface: ``BatchSettings`` (and ``DispatchSettings``) for the service, ``BatchService`` (the
supervised process), ``create_app`` (the Starlette app, for embedding and tests), ``BatchStore``
(SQLite state + files), ``Dispatcher`` (lines through the gateway), ``parse_batch_input`` (input
validation) and ``batch_objective`` (the picker objective the stack declares for batch lines).
Commands live in ``inferstack.commands.batch`` (``inferstack batch ...``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferstack.lazy import lazy_attributes

from inferstack.batch.jsonl import LineError, ParsedLine, parse_batch_input
from inferstack.batch.runtime import BatchService, BatchServiceStatus
from inferstack.batch.settings import BATCH_ENDPOINTS, BatchSettings, DispatchSettings, load_batch_settings

# The server's side opens lazily (PEP 562): the stack's status (every CLI call) needs the service's
# status model, not the Starlette app, the dispatcher or the store.
_SERVER = {"create_app": "api", "Dispatcher": "dispatcher", "BatchStore": "store"}

if TYPE_CHECKING:
    from inferstack.batch.api import create_app
    from inferstack.batch.dispatcher import Dispatcher
    from inferstack.batch.store import BatchStore

__all__ = [
    "BATCH_ENDPOINTS",
    "BatchService",
    "BatchServiceStatus",
    "BatchSettings",
    "BatchStore",
    "DispatchSettings",
    "Dispatcher",
    "LineError",
    "ParsedLine",
    "batch_objective",
    "create_app",
    "load_batch_settings",
    "parse_batch_input",
]


def batch_objective(settings: DispatchSettings) -> dict[str, object]:
    """The picker objective for batch lines: ``{"name": "batch", "priority": -1}`` by default."""
    return {"name": settings.objective, "priority": settings.priority}


__getattr__ = lazy_attributes(__name__, _SERVER)
