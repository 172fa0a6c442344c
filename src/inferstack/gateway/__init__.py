"""The inference gateway: Envoy as data plane and our endpoint picker (EPP) as its ext_proc server.

Public surface: ``Gateway`` (start/stop/status of Envoy + EPP; ``GatewayStatus``), the settings models (with
``HoldSettings``, scale from zero: ``GatewaySettings(hold=HoldSettings(enabled=True))``), and
``write_endpoints_file`` (how a supervisor tells a running EPP about replica changes), and how to read the
picker's own metrics (``epp_metrics_pages``, ``HELD_REQUESTS_METRIC``, ``REQUESTS_METRIC``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferstack.lazy import lazy_attributes

from inferstack.gateway.settings import EppSettings, GatewaySettings, HoldSettings, check_exposure, load_epp_settings
from inferstack.gateway.status import HELD_REQUESTS_METRIC, REQUESTS_METRIC, GatewayStatus, epp_metrics_pages

__all__ = ["HELD_REQUESTS_METRIC", "REQUESTS_METRIC", "EppSettings", "Gateway", "GatewaySettings", "GatewayStatus",
           "HoldSettings", "check_exposure", "epp_metrics_pages", "load_epp_settings", "write_endpoints_file"]

# The processes' side opens lazily (PEP 562): configs that only read the settings (the stack's,
# every CLI call) do not import grpc and the picker.
_RUNTIME = {"Gateway": "runtime", "write_endpoints_file": "discovery"}

if TYPE_CHECKING:
    from inferstack.gateway.discovery import write_endpoints_file
    from inferstack.gateway.runtime import Gateway

__getattr__ = lazy_attributes(__name__, _RUNTIME)
