"""The one exception tree of inferstack.

    InferstackError              anything we report to a user as a clear message (exit code 2)
     +-- ConfigError             a config file or flag has a bad value; says key, value, what is valid
     +-- SetupError              an environment, interpreter or binary is missing or broken
     +-- ModelNotFoundError      a model name/path/id that resolves to nothing usable
     +-- PortInUseError          a port we must bind is taken
     +-- ReplicaStartError       a vLLM replica (or Envoy/EPP) exited or never became ready;
                                 carries the tail of its log
     +-- AdapterError            a LoRA adapter call on one replica failed; names replica and adapter
          +-- AdapterNotFound    the adapter (unload) or its source folder (load) does not exist
          +-- AdapterLoadError   vLLM refused it (rank above max_lora_rank, bad files): its message
          |    +-- AdapterAlreadyLoaded   the replica already serves an adapter of that name
          +-- LoraUnavailable    the replica takes no adapter calls: unreachable, or started
                                 without runtime LoRA (VLLM_ALLOW_RUNTIME_LORA_UPDATING)

Library errors (OSError, pydantic.ValidationError, yaml.YAMLError, httpx errors) are translated
into these once, at the boundary where we know what the user asked for, with ``raise ... from exc``.
"""

from __future__ import annotations

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
]


class InferstackError(Exception):
    """Base of every error inferstack reports to the user as a message, not a traceback."""


class ConfigError(InferstackError):
    """A configuration value is invalid: the message names the key, the value and what is valid."""


class SetupError(InferstackError):
    """A required environment, interpreter or binary is missing; the message says how to get it."""


class ModelNotFoundError(InferstackError):
    """A model reference resolves to nothing usable."""


class PortInUseError(InferstackError):
    """A port we need is already bound by another process."""


class ReplicaStartError(InferstackError):
    """A supervised process failed to start or to become ready."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        if log_tail:
            message = f"{message}\n--- last lines of its log ---\n{log_tail.rstrip()}"
        super().__init__(message)


class AdapterError(InferstackError):
    """A LoRA adapter operation on one replica failed; the message names the replica and adapter."""


class AdapterNotFound(AdapterError):
    """The adapter to unload is not loaded, or the source folder to load from does not exist."""


class AdapterLoadError(AdapterError):
    """vLLM refused to load the adapter; the message carries vLLM's reason."""


class AdapterAlreadyLoaded(AdapterLoadError):
    """The replica already serves an adapter of that name."""


class LoraUnavailable(AdapterError):
    """The replica cannot take adapter calls now (unreachable) or at all (runtime LoRA off)."""
