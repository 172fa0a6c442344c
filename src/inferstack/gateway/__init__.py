"""The inference gateway: Envoy as data plane and our endpoint picker (EPP) as its ext_proc server.

Public surface: ``Gateway`` (start/stop/status of Envoy + EPP; ``GatewayStatus``), the settings models (with
``HoldSettings``, scale from zero: ``GatewaySettings(hold=HoldSettings(enabled=True))``), and
``write_endpoints_file`` (how a supervisor tells a running EPP about replica changes).
"""

from inferstack.gateway.discovery import write_endpoints_file
from inferstack.gateway.runtime import Gateway, GatewayStatus
from inferstack.gateway.settings import EppSettings, GatewaySettings, HoldSettings, check_exposure, load_epp_settings

__all__ = ["EppSettings", "Gateway", "GatewaySettings", "GatewayStatus", "HoldSettings", "check_exposure",
           "load_epp_settings", "write_endpoints_file"]
