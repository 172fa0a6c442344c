"""Monitoring: a real Prometheus beside the local stack, its rules and alerts, and the Grafana
dashboards (docs/monitoring.md).

Public surface: ``MonitoringSettings`` (the config's ``monitoring:``), ``MonitoringStatus``,
``Prometheus`` (the supervised process) with ``ScrapeTargets`` / ``prometheus_config`` /
``write_replica_targets``, ``find_prometheus``; the rules (``RECORDING_RULES``, ``ALERTS``,
``rules_document``) and dashboards (``DASHBOARDS``, ``DASHBOARDS_DIR``, ``panel_queries``), defined once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferstack.lazy import lazy_attributes
from inferstack.monitoring.settings import MonitoringSettings, MonitoringStatus

# The process side opens lazily (PEP 562): every CLI call reads the stack's status, which needs the
# status model only.
_LAZY = {"Prometheus": "prometheus", "ScrapeTargets": "prometheus", "find_prometheus": "prometheus",
         "prometheus_config": "prometheus", "write_replica_targets": "prometheus",
         "ALERTS": "rules", "RECORDING_RULES": "rules", "rules_document": "rules",
         "DASHBOARDS": "dashboards", "DASHBOARDS_DIR": "dashboards", "panel_queries": "dashboards"}

if TYPE_CHECKING:
    from inferstack.monitoring.dashboards import DASHBOARDS, DASHBOARDS_DIR, panel_queries
    from inferstack.monitoring.prometheus import (Prometheus, ScrapeTargets, find_prometheus, prometheus_config,
                                                  write_replica_targets)
    from inferstack.monitoring.rules import ALERTS, RECORDING_RULES, rules_document

__all__ = ["ALERTS", "DASHBOARDS", "DASHBOARDS_DIR", "RECORDING_RULES", "MonitoringSettings", "MonitoringStatus",
           "Prometheus", "ScrapeTargets", "find_prometheus", "panel_queries", "prometheus_config", "rules_document",
           "write_replica_targets"]

__getattr__ = lazy_attributes(__name__, _LAZY)
