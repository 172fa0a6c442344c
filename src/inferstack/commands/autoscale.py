"""``inferstack autoscale simulate``: compare autoscaling policies on a request-rate trace.

``autoscale simulate --trace bursty|diurnal|FILE [--policy P ...] --output DIR`` writes
``index.html`` + PNGs into DIR and prints one line per policy (replica-seconds, SLO attainment).
A policy is a YAML file (an ``autoscaling:`` section) or the inline form ``waiting:3``
(``METRIC:TARGET[,METRIC:TARGET][,min=N][,max=N]``); without ``--policy`` the simulator compares
waiting:3, waiting:5 and waiting:10 (GKE's guidance is to start at 3-5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inferstack.autoscale.policy import load_policy
from inferstack.autoscale.simulate import BUILTIN_TRACES, SimSettings, compare, load_trace

__all__ = ["DEFAULT_POLICIES", "register"]

DEFAULT_POLICIES = ("waiting:3", "waiting:5", "waiting:10")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    auto = subparsers.add_parser("autoscale", help="autoscaling policies: simulate them on a trace")
    sub = auto.add_subparsers(dest="autoscale_command", metavar="ACTION", required=True)
    sim = sub.add_parser(
        "simulate",
        help="replay a request-rate trace through the HPA algorithm for one or more policies",
        description="Replay a request-rate trace through the Kubernetes HPA algorithm with a replica "
        "start-up delay, a per-replica capacity and a queue; plot replicas, queue and SLO attainment.",
    )
    sim.add_argument("--trace", required=True,
                     help=f"{' | '.join(BUILTIN_TRACES)} | CSV file of time_s,rate_rps rows")
    sim.add_argument("--policy", action="append", dest="policies", metavar="P",
                     help="policy YAML file (autoscaling: section) or inline METRIC:TARGET[,min=N][,max=N] "
                     f"(repeat; default: {' '.join(DEFAULT_POLICIES)})")
    sim.add_argument("--output", type=Path, required=True, help="directory for index.html and PNGs")
    defaults = SimSettings()
    sim.add_argument("--startup-s", type=float, default=defaults.startup_s,
                     help=f"replica time-to-ready in s (default {defaults.startup_s:g}: README, eager 22-37 s)")
    sim.add_argument("--capacity-rps", type=float, default=defaults.capacity_rps,
                     help=f"req/s one ready replica serves (default {defaults.capacity_rps:g}: docs/example-report)")
    sim.add_argument("--service-s", type=float, default=defaults.service_s,
                     help=f"mean request service time in s, for running/kv (default {defaults.service_s:g})")
    sim.add_argument("--slo-wait-s", type=float, default=defaults.slo_wait_s,
                     help=f"queue wait that meets the SLO in s (default {defaults.slo_wait_s:g})")
    sim.add_argument("--seed", type=int, default=defaults.seed,
                     help=f"seed of the Poisson arrivals (default {defaults.seed}); --fluid for none")
    sim.add_argument("--fluid", action="store_true", help="arrivals exactly at the trace's rate, no noise")
    sim.add_argument("--initial-replicas", type=int, help="replicas ready at t=0 (default: the policy's min)")
    sim.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    trace = load_trace(args.trace)
    settings = SimSettings(startup_s=args.startup_s, capacity_rps=args.capacity_rps, service_s=args.service_s,
                           slo_wait_s=args.slo_wait_s, initial_replicas=args.initial_replicas,
                           seed=None if args.fluid else args.seed)
    specs = args.policies or list(DEFAULT_POLICIES)
    policies = []
    for spec in specs:
        policy = load_policy(spec)
        label = Path(spec).stem if Path(spec).suffix in (".yaml", ".yml") else spec
        policies.append((label, policy))
    results = compare(trace, policies, settings)
    from inferstack.autoscale.report import write_report  # matplotlib: only when plotting
    files = write_report(trace, settings, results, args.output)
    print(f"trace {trace.name} ({trace.duration_s:.0f} s); replica ready after {settings.startup_s:g} s, "
          f"{settings.capacity_rps:g} req/s per replica, SLO: queue wait <= {settings.slo_wait_s:g} s")
    for result in results:
        print(result.summary())
    print(f"wrote {', '.join(str(p) for p in files)}")
    return 0
