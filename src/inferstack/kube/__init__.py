"""Kubernetes/GKE: render the stack as validated manifests (kustomize layout) and size it.

Public surface: ``RenderSettings`` / ``load_settings`` (what to render), ``render`` / ``write``
(objects and files), ``validate_objects`` (offline schema validation), ``check_picker_config``
(offline check of an upstream EndpointPickerConfig). Commands live in ``inferstack.commands.kube``
(``recommend``, ``render``).
"""

from inferstack.kube.render import Rendered, dump_documents, render, write
from inferstack.kube.settings import RenderSettings, load_settings
from inferstack.kube.stack import Stack, resolve_stack
from inferstack.kube.upstream_epp import check_picker_config, upstream_picker_config
from inferstack.kube.validate import KUBERNETES_VERSION, Issue, validate_object, validate_objects

__all__ = [
    "KUBERNETES_VERSION",
    "Issue",
    "RenderSettings",
    "Rendered",
    "Stack",
    "check_picker_config",
    "dump_documents",
    "load_settings",
    "render",
    "resolve_stack",
    "upstream_picker_config",
    "validate_object",
    "validate_objects",
    "write",
]
