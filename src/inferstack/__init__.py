"""inferstack: the online LLM inference stack of the GKE inference reference architecture.

Components, one folder each: ``models`` (catalog, bundled model, sizing), ``engine`` (vLLM
arguments, replicas, supervisor), ``gateway`` (Envoy + our endpoint picker), ``bench``
(inference-perf runs and reports), ``kube`` (manifests and sizing), ``envs`` (the separate
engine and benchmark environments), ``lora`` (adapters: flags, runtime API, syncer).
"""

from inferstack.errors import (
    AdapterAlreadyLoaded,
    AdapterError,
    AdapterLoadError,
    AdapterNotFound,
    ConfigError,
    InferstackError,
    LoraUnavailable,
    ModelNotFoundError,
    PortInUseError,
    ReplicaStartError,
    SetupError,
)

__version__ = "0.1.0"

__all__ = [
    "AdapterAlreadyLoaded",
    "AdapterError",
    "AdapterLoadError",
    "AdapterNotFound",
    "ConfigError",
    "InferstackError",
    "LoraUnavailable",
    "ModelNotFoundError",
    "PortInUseError",
    "ReplicaStartError",
    "SetupError",
    "__version__",
]
