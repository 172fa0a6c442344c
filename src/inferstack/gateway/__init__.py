"""The inference gateway: Envoy as data plane and our endpoint picker (EPP) as its ext_proc server.

Public surface: ``Gateway`` (start/stop/status of Envoy + EPP), the settings models, and
``write_endpoints_file`` (how a supervisor tells a running EPP about replica changes).
"""

from inferstack.gateway.discovery import write_endpoints_file
from inferstack.gateway.runtime import Gateway
from inferstack.gateway.settings import EppSettings, GatewaySettings, load_epp_settings

__all__ = ["EppSettings", "Gateway", "GatewaySettings", "load_epp_settings", "write_endpoints_file"]
