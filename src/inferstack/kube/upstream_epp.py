"""The upstream endpoint picker: its EndpointPickerConfig, built from our scheduler settings, and an
offline checker of the rules its config loader enforces.

Source: kubernetes-sigs/gateway-api-inference-extension v1.5.0 (df9f8909), the last release that
ships the EPP (it moved to llm-d/llm-d-router afterwards): the config types in
``apix/config/v1alpha1/endpointpickerconfig_types.go``, the loader in
``pkg/epp/config/loader/{configloader,validation,defaults}.go``, the plugin registry in
``cmd/epp/runner/runner.go``, the profile rules in ``pkg/epp/scheduling/scheduler_profile.go``.

Invariants: the rendered config names only plugin types that v1.5.0 registers; every scorer in a
profile carries an explicit weight (upstream would default a missing one to 1; we treat a missing
weight as an error so a profile always says what it means); every profile has exactly one picker;
``check_picker_config`` returns every problem (empty list = valid), each naming the key, the
bad value and what would be valid.
"""

from __future__ import annotations

import re
from typing import Any

from inferstack.errors import ConfigError
from inferstack.gateway.settings import FlowControlSettings, SaturationSettings, SchedulerSettings

__all__ = [
    "CONFIG_API_VERSION",
    "CONFIG_KIND",
    "OMITTED_UPSTREAM",
    "PLUGIN_TYPES",
    "check_picker_config",
    "upstream_picker_config",
]

CONFIG_API_VERSION = "inference.networking.x-k8s.io/v1alpha1"
CONFIG_KIND = "EndpointPickerConfig"

# Every plugin type the v1.5.0 EPP registers (runner.go and package init()s), by role. Only
# filters, scorers and pickers act inside a scheduling profile.
_FILTERS = frozenset({"prefix-cache-affinity-filter", "slo-headroom-tier-filter", "header-based-testing-filter"})
_SCORERS = frozenset({
    "queue-scorer", "kv-cache-utilization-scorer", "prefix-cache-scorer", "running-requests-size-scorer",
    "lora-affinity-scorer", "token-load-scorer", "latency-scorer", "predicted-latency-scorer",
})
_PICKERS = frozenset({"max-score-picker", "random-picker", "weighted-random-picker"})
_PROFILE_HANDLERS = frozenset({"single-profile-handler"})
_OTHERS = frozenset({
    # flow control
    "global-strict-fairness-policy", "round-robin-fairness-policy", "fcfs-ordering-policy",
    "edf-ordering-policy", "slo-deadline-ordering-policy", "static-usage-limit-policy",
    "eviction-sheddable-filter", "eviction-priority-then-time-ordering",
    # saturation detectors
    "utilization-detector", "concurrency-detector",
    # request control / data producers
    "approx-prefix-cache-producer", "predicted-latency-producer", "latency-slo-admitter",
    "inflight-load-producer", "request-attribute-reporter", "destination-endpoint-served-verifier",
    # data layer
    "metrics-data-source", "core-metrics-extractor", "k8s-notification-source", "endpoint-notification-source",
    # parsers
    "openai-parser", "vllmgrpc-parser", "passthrough-parser",
})
PLUGIN_TYPES: frozenset[str] = _FILTERS | _SCORERS | _PICKERS | _PROFILE_HANDLERS | _OTHERS
_DETECTORS = frozenset({"utilization-detector", "concurrency-detector"})
_PARSERS = frozenset({"openai-parser", "vllmgrpc-parser", "passthrough-parser"})
_FEATURE_GATES = frozenset({"dataLayer", "enableLegacyMetrics", "flowControl"})

# Strict decoding upstream: these are all the keys each level may have.
_TOP_KEYS = frozenset({"apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles",
                       "saturationDetector", "dataLayer", "flowControl", "parser"})
_PLUGIN_KEYS = frozenset({"name", "type", "parameters"})
_FLOW_KEYS = frozenset({"maxBytes", "maxRequests", "defaultRequestTTL", "defaultPriorityBand", "priorityBands",
                        "usageLimitPolicyPluginRef"})
_BAND_KEYS = frozenset({"priority", "maxBytes", "maxRequests", "fairnessPolicyRef", "orderingPolicyRef"})
_FAIRNESS = frozenset({"global-strict-fairness-policy", "round-robin-fairness-policy"})
_ORDERING = frozenset({"fcfs-ordering-policy", "edf-ordering-policy", "slo-deadline-ordering-policy"})
# the loader adds these three itself when flow control is on (loader/defaults.go)
_FLOW_DEFAULT_PLUGINS = {"global-strict-fairness-policy": "global-strict-fairness-policy",
                         "fcfs-ordering-policy": "fcfs-ordering-policy",
                         "static-usage-limit-policy": "static-usage-limit-policy"}
_PROFILE_KEYS = frozenset({"name", "plugins"})
_PROFILE_PLUGIN_KEYS = frozenset({"pluginRef", "weight"})

# Our scheduler's plugin names -> the upstream plugin with the same role.
_SCORER_MAP = {
    "queue": "queue-scorer",
    "kv-cache": "kv-cache-utilization-scorer",
    "prefix": "prefix-cache-scorer",
    "running": "running-requests-size-scorer",
    "lora": "lora-affinity-scorer",
}
_PICKER_MAP = {"max-score": "max-score-picker", "random": "random-picker"}
# Ours without a v1.5.0 counterpart that only refine the choice (never its correctness): left out
# of the upstream profile. llm-d's scheduler has a no-hit LRU scorer; GIE v1.5.0 does not.
OMITTED_UPSTREAM = {"no-hit-lru": "spreads new prefixes over replicas; no GIE v1.5.0 equivalent"}


def upstream_picker_config(scheduler: SchedulerSettings | None = None,
                           saturation: SaturationSettings | None = None,
                           flow: FlowControlSettings | None = None) -> dict[str, Any]:
    """The EndpointPickerConfig equivalent to our scheduler: the same scorers with the same
    weights, the same picker, our shedding thresholds for the saturation detector, and the data
    layer that scrapes vLLM's /metrics; with ``flow`` enabled, upstream's flow control (feature
    gate ``flowControl``): the queue bound and request TTL, round-robin turns between tenants."""
    scheduler = scheduler or SchedulerSettings()
    saturation = saturation or SaturationSettings()
    if scheduler.filters:
        raise ConfigError(
            f"scheduler filters {scheduler.filters} have no upstream equivalent in the rendered "
            f"EndpointPickerConfig; use --epp inferstack, or no filters"
        )
    scorers = []
    for scorer in scheduler.scorers:
        if scorer.type in OMITTED_UPSTREAM:
            continue
        if scorer.type not in _SCORER_MAP:
            raise ConfigError(
                f"scheduler scorer '{scorer.type}' has no upstream equivalent; upstream-mapped scorers: "
                f"{', '.join(sorted(_SCORER_MAP))} (or use --epp inferstack)"
            )
        scorers.append((_SCORER_MAP[scorer.type], scorer.weight))
    if scheduler.picker not in _PICKER_MAP:
        raise ConfigError(
            f"scheduler picker '{scheduler.picker}' has no upstream equivalent; valid: "
            f"{', '.join(sorted(_PICKER_MAP))} (or use --epp inferstack)"
        )
    picker = _PICKER_MAP[scheduler.picker]
    staleness = f"{saturation.metrics_staleness_ms}ms"
    plugins: list[dict[str, Any]] = [{"type": t} for t, _ in scorers]
    plugins += [
        {"type": picker},
        {"type": "single-profile-handler"},
        {"type": "utilization-detector", "parameters": {
            "queueDepthThreshold": saturation.queue_depth_threshold,
            "kvCacheUtilThreshold": saturation.kv_cache_util_threshold,
            "metricsStalenessThreshold": staleness,
        }},
        {"type": "metrics-data-source", "parameters": {"scheme": "http", "path": "/metrics",
                                                       "insecureSkipVerify": True}},
        {"type": "core-metrics-extractor"},
    ]
    profile = [{"pluginRef": t, "weight": _number(w)} for t, w in scorers] + [{"pluginRef": picker}]
    config: dict[str, Any] = {
        "apiVersion": CONFIG_API_VERSION,
        "kind": CONFIG_KIND,
        "plugins": plugins,
        "schedulingProfiles": [{"name": "default", "plugins": profile}],
        "saturationDetector": {"pluginRef": "utilization-detector"},
        "dataLayer": {"sources": [{"pluginRef": "metrics-data-source",
                                   "extractors": [{"pluginRef": "core-metrics-extractor"}]}]},
    }
    if flow is not None and flow.enabled:
        plugins.append({"type": "round-robin-fairness-policy"})
        config["featureGates"] = ["flowControl"]
        config["flowControl"] = {
            "maxRequests": flow.max_requests,
            "defaultRequestTTL": f"{flow.max_wait_s:g}s",
            "defaultPriorityBand": {"fairnessPolicyRef": "round-robin-fairness-policy",
                                    "orderingPolicyRef": "fcfs-ordering-policy"},
        }
    return config


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _unknown_keys(where: str, obj: dict[str, Any], allowed: frozenset[str]) -> list[str]:
    return [f"{where}: unknown key '{k}'; valid keys: {', '.join(sorted(allowed))}"
            for k in obj if k not in allowed]


def _ref_problem(where: str, ref: Any, types: dict[str, str], want: frozenset[str], role: str) -> str | None:
    if not isinstance(ref, str) or not ref:
        return f"{where}.pluginRef has value {ref!r}; must name a plugin defined in 'plugins'"
    if ref not in types:
        return f"{where}.pluginRef '{ref}' names no plugin; defined: {', '.join(sorted(types)) or '(none)'}"
    if types[ref] not in want:
        return f"{where}.pluginRef '{ref}' is a {types[ref]}, not a {role}"
    return None


def check_picker_config(config: Any) -> list[str]:
    """Every rule of the upstream loader we can check offline, plus ours (explicit weights, one
    picker per profile). Returns the problems; an empty list means the config is valid."""
    if not isinstance(config, dict):
        return [f"the config must be a mapping, not {type(config).__name__}"]
    problems = _unknown_keys("(top level)", config, _TOP_KEYS)
    if config.get("apiVersion") != CONFIG_API_VERSION:
        problems.append(f"apiVersion has value {config.get('apiVersion')!r}; must be '{CONFIG_API_VERSION}'")
    if config.get("kind") != CONFIG_KIND:
        problems.append(f"kind has value {config.get('kind')!r}; must be '{CONFIG_KIND}'")
    gates = config.get("featureGates") or []
    for gate in gates if isinstance(gates, list) else [gates]:
        if gate not in _FEATURE_GATES:
            problems.append(f"featureGates: '{gate}' is unknown; registered: {', '.join(sorted(_FEATURE_GATES))}")

    types: dict[str, str] = {}  # plugin name -> type
    plugins = config.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        problems.append("plugins must be a non-empty list")
        plugins = []
    for i, plugin in enumerate(plugins):
        where = f"plugins[{i}]"
        if not isinstance(plugin, dict):
            problems.append(f"{where} must be a mapping with 'type' (and optional 'name', 'parameters')")
            continue
        problems += _unknown_keys(where, plugin, _PLUGIN_KEYS)
        kind = plugin.get("type")
        if not isinstance(kind, str) or not kind:
            problems.append(f"{where}.type is missing; every plugin needs a registered type")
            continue
        if kind not in PLUGIN_TYPES:
            problems.append(f"{where}.type '{kind}' is not registered upstream (v1.5.0); known scorers: "
                            f"{', '.join(sorted(_SCORERS))}; pickers: {', '.join(sorted(_PICKERS))}")
        name = plugin.get("name") or kind  # the loader defaults a missing name to the type
        if name in types:
            problems.append(f"{where}: duplicate plugin name '{name}'; give one of them a 'name'")
        types[name] = kind
        params = plugin.get("parameters")
        if params is not None and not isinstance(params, dict):
            problems.append(f"{where}.parameters must be a mapping, not {type(params).__name__}")

    profiles = config.get("schedulingProfiles")
    if not isinstance(profiles, list) or not profiles:
        problems.append("schedulingProfiles must be a non-empty list (we do not rely on the loader's "
                        "auto-built profile)")
        profiles = []
    seen: set[str] = set()
    for i, profile in enumerate(profiles):
        where = f"schedulingProfiles[{i}]"
        if not isinstance(profile, dict):
            problems.append(f"{where} must be a mapping with 'name' and 'plugins'")
            continue
        problems += _unknown_keys(where, profile, _PROFILE_KEYS)
        name = profile.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where} is missing a name")
        elif name in seen:
            problems.append(f"{where} has duplicate name '{name}'")
        else:
            seen.add(name)
            where = f"schedulingProfiles[{name}]"
        entries = profile.get("plugins")
        if not isinstance(entries, list) or not entries:
            problems.append(f"{where}.plugins must be a non-empty list of {{pluginRef, weight}}")
            continue
        pickers = 0
        for j, entry in enumerate(entries):
            at = f"{where}.plugins[{j}]"
            if not isinstance(entry, dict):
                problems.append(f"{at} must be a mapping with 'pluginRef' (and 'weight' for scorers)")
                continue
            problems += _unknown_keys(at, entry, _PROFILE_PLUGIN_KEYS)
            ref = entry.get("pluginRef")
            problem = _ref_problem(at, ref, types, _FILTERS | _SCORERS | _PICKERS,
                                   "filter, scorer or picker (the only plugins a profile runs)")
            if problem:
                problems.append(problem)
                continue
            kind = types[str(ref)]
            weight = entry.get("weight")
            if kind in _SCORERS:
                if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                    problems.append(f"{at}: scorer '{ref}' has weight {weight!r}; give a number > 0")
                elif weight <= 0:
                    problems.append(f"{at}: scorer '{ref}' has weight {weight}; must be > 0")
            elif weight is not None:
                problems.append(f"{at}: '{ref}' is a {kind}, not a scorer; a weight there is ignored "
                                f"upstream, remove it")
            pickers += kind in _PICKERS
        if pickers != 1:
            problems.append(f"{where} has {pickers} pickers; must have exactly one of "
                            f"{', '.join(sorted(_PICKERS))}")

    handlers = [n for n, t in types.items() if t in _PROFILE_HANDLERS]
    if len(handlers) > 1:
        problems.append(f"plugins define {len(handlers)} profile handlers ({', '.join(handlers)}); at most one")
    if len(profiles) > 1 and not handlers:
        problems.append("more than one scheduling profile needs a profile handler other than the "
                        "default single-profile-handler")
    if len(profiles) > 1 and handlers and types[handlers[0]] == "single-profile-handler":
        problems.append("single-profile-handler cannot serve more than one scheduling profile")

    for key, want, role in (("saturationDetector", _DETECTORS, "saturation detector"),
                            ("parser", _PARSERS, "parser")):
        section = config.get(key)
        if section is None:
            continue
        if not isinstance(section, dict):
            problems.append(f"{key} must be a mapping with 'pluginRef'")
            continue
        problems += _unknown_keys(key, section, frozenset({"pluginRef"}))
        problem = _ref_problem(key, section.get("pluginRef"), types, want, role)
        if problem:
            problems.append(problem)

    problems += _flow_control_problems(config, types)

    data_layer = config.get("dataLayer")
    if data_layer is not None:
        sources = data_layer.get("sources") if isinstance(data_layer, dict) else None
        if not isinstance(sources, list):
            problems.append("dataLayer.sources must be a list of {pluginRef, extractors}")
            sources = []
        for i, source in enumerate(sources):
            at = f"dataLayer.sources[{i}]"
            if not isinstance(source, dict):
                problems.append(f"{at} must be a mapping")
                continue
            problems += _unknown_keys(at, source, frozenset({"pluginRef", "extractors"}))
            problem = _ref_problem(at, source.get("pluginRef"), types,
                                   frozenset({"metrics-data-source", "k8s-notification-source",
                                              "endpoint-notification-source"}), "data source")
            if problem:
                problems.append(problem)
            extractors = source.get("extractors")
            if not isinstance(extractors, list):
                problems.append(f"{at}.extractors must be a list of {{pluginRef}}")
                continue
            for j, extractor in enumerate(extractors):
                ref = extractor.get("pluginRef") if isinstance(extractor, dict) else None
                problem = _ref_problem(f"{at}.extractors[{j}]", ref, types,
                                       frozenset({"core-metrics-extractor"}), "metrics extractor")
                if problem:
                    problems.append(problem)
    return problems


def _flow_control_problems(config: dict[str, Any], types: dict[str, str]) -> list[str]:
    """The ``flowControl`` section: strict keys, quantities >= 0, policy refs naming fairness /
    ordering plugins, and the feature gate without which upstream ignores the section."""
    flow = config.get("flowControl")
    if flow is None:
        return []
    if not isinstance(flow, dict):
        return ["flowControl must be a mapping"]
    gates = config.get("featureGates") or []
    problems = _unknown_keys("flowControl", flow, _FLOW_KEYS)
    if "flowControl" not in (gates if isinstance(gates, list) else [gates]):
        problems.append("flowControl is set but featureGates lacks 'flowControl': upstream ignores the section")
    known = {**_FLOW_DEFAULT_PLUGINS, **types}
    bands = [("flowControl.defaultPriorityBand", flow.get("defaultPriorityBand") or {})]
    bands += [(f"flowControl.priorityBands[{i}]", b) for i, b in enumerate(flow.get("priorityBands") or [])]
    for where, band in bands:
        if not isinstance(band, dict):
            problems.append(f"{where} must be a mapping")
            continue
        problems += _unknown_keys(where, band, _BAND_KEYS)
        for key, want, role in (("fairnessPolicyRef", _FAIRNESS, "a fairness policy"),
                                ("orderingPolicyRef", _ORDERING, "an ordering policy")):
            ref = band.get(key)
            if ref is None:
                continue
            if ref not in known:
                problems.append(f"{where}.{key} '{ref}' names no plugin; declare it under plugins")
            elif known[ref] not in want:
                problems.append(f"{where}.{key} '{ref}' is a {known[ref]}, not {role}")
    for where, section in [("flowControl", flow), *bands]:
        if not isinstance(section, dict):
            continue
        for key in ("maxBytes", "maxRequests"):
            value = section.get(key)
            if isinstance(value, (int, float)) and value < 0:
                problems.append(f"{where}.{key} has value {value}; must be >= 0 (0: no limit)")
    ttl = flow.get("defaultRequestTTL")
    if ttl is not None and (not isinstance(ttl, str) or not re.fullmatch(r"[0-9.]+(ms|s|m|h)", ttl)):
        problems.append(f"flowControl.defaultRequestTTL has value {ttl!r}; a duration like '30s'")
    return problems
