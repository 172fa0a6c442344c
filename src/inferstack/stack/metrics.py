"""The supervisor's own /metrics (with monitoring on): replicas desired and ready, each replica's
restarts, scaling events by source, and the autoscaler's last inputs and decision. Read from the
supervisor at scrape time (``SupervisorFigures``: a typed snapshot), so nothing here can drift
from what ``status`` says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["SCALING_SOURCES", "SupervisorFigures", "serve_supervisor_metrics"]

SCALING_SOURCES = ("scale", "autoscaler", "scale-from-zero")  # who changed the desired count


@dataclass(frozen=True, slots=True)
class SupervisorFigures:
    desired_replicas: int
    ready_replicas: int
    restarts: dict[str, int]  # replica name -> restarts of its process
    scaling_events: dict[str, int]  # source -> times it changed the desired count
    autoscaler_desired: int | None = None  # the autoscaler's last computed count (None: none yet)


class _Collector(Collector):
    def __init__(self, figures: Callable[[], SupervisorFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self._figures()
        yield GaugeMetricFamily("inferstack_stack_desired_replicas", "Replicas the stack wants now.",
                                value=f.desired_replicas)
        yield GaugeMetricFamily("inferstack_stack_ready_replicas", "Replicas ready to serve.", value=f.ready_replicas)
        restarts = GaugeMetricFamily("inferstack_stack_replica_restarts", "Restarts of each replica's process "
                                     "since it was added.", labels=["replica"])
        for name, n in sorted(f.restarts.items()):
            restarts.add_metric([name], n)
        yield restarts
        events = CounterMetricFamily("inferstack_stack_scaling_events", "Changes of the desired replica count, "
                                     "by who made them.", labels=["source"])
        for source, n in sorted(f.scaling_events.items()):
            events.add_metric([source], n)
        yield events
        if f.autoscaler_desired is not None:
            yield GaugeMetricFamily("inferstack_stack_autoscaler_desired_replicas",
                                    "The autoscaler's last computed replica count.", value=f.autoscaler_desired)


def serve_supervisor_metrics(figures: Callable[[], SupervisorFigures], port: int,
                             host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve /metrics on ``host:port`` in a thread; returns the function that stops it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(figures))
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
