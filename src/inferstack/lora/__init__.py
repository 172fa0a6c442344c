"""LoRA adapters on the replicas: settings -> vLLM flags, the runtime API, and a syncer.

Public surface: ``LoraSettings`` (the ``lora:`` config section: ``to_vllm_args`` / ``vllm_env``),
``resolve_adapter_source`` and ``check_adapter_name`` (what a source and a name may be),
``LoraClient`` and ``Adapter`` (list/load/unload on one replica over HTTP, vLLM's errors turned
into ``inferstack.errors.AdapterError`` subclasses), ``load_syncer_config`` /
``parse_syncer_config`` -> ``DesiredAdapters`` (the lora-syncer's ``vLLMLoRAConfig`` YAML), and
``plan_actions`` / ``reconcile`` -> ``Action`` / ``Outcome`` (keep one replica at that set);
``TrainRecipe`` / ``train_adapter`` (a LoRA trained with PEFT on CPU by the engine interpreter),
``bundled_adapter()`` (the folder of the adapter ``make setup`` trains: replies start with
``ARR!``; ``BUNDLED_ADAPTER.reply_prefix``).
"""

from inferstack.lora.runtime import Adapter, LoraClient
from inferstack.lora.settings import (
    ADAPTER_NAME_PATTERN,
    LoraSettings,
    MaxLoraRank,
    check_adapter_name,
    resolve_adapter_source,
)
from inferstack.lora.syncer import Action, Outcome, plan_actions, reconcile
from inferstack.lora.syncer_config import DesiredAdapters, load_syncer_config, parse_syncer_config
from inferstack.lora.training import (
    BUNDLED_ADAPTER,
    DEFAULT_DATASET,
    BundledAdapter,
    TrainRecipe,
    bundled_adapter,
    load_dataset,
    prepare_bundled_adapter,
    train_adapter,
)

__all__ = [
    "ADAPTER_NAME_PATTERN",
    "BUNDLED_ADAPTER",
    "DEFAULT_DATASET",
    "Action",
    "Adapter",
    "BundledAdapter",
    "DesiredAdapters",
    "LoraClient",
    "LoraSettings",
    "MaxLoraRank",
    "Outcome",
    "TrainRecipe",
    "bundled_adapter",
    "check_adapter_name",
    "load_dataset",
    "load_syncer_config",
    "parse_syncer_config",
    "plan_actions",
    "prepare_bundled_adapter",
    "reconcile",
    "resolve_adapter_source",
    "train_adapter",
]
