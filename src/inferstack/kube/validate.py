"""Offline validation of rendered objects: the object, the field and the reason for each problem.

- Built-in kinds: the Kubernetes OpenAPI schemas shipped by PyPI ``kubernetes-validate`` for
  Kubernetes ``KUBERNETES_VERSION``, in strict mode (unknown fields are errors).
- Custom resources: the ``openAPIV3Schema`` of the CRD versions shipped in ``kube/crds`` (see
  SOURCES.md there), made strict the way ``kubectl --validate=strict`` treats them: an object
  schema that lists its properties rejects others unless it says
  ``x-kubernetes-preserve-unknown-fields``. ComputeClass is checked against the JSON Schema
  extracted from GKE (it is strict already).
- Every object: metadata.name is a DNS-1123 subdomain (a DNS-1035 label for Services), label
  keys and values have the Kubernetes syntax, namespaced kinds carry a namespace.

Not checked offline: CEL rules (``x-kubernetes-validations``) and admission webhooks. A kind with
no schema here is an error, never a silent pass.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

__all__ = ["KUBERNETES_VERSION", "Issue", "validate_object", "validate_objects", "shipped_schemas"]

KUBERNETES_VERSION = "1.33"
_SCHEMA_DIR = f"v{KUBERNETES_VERSION}.0-local-strict"

# apiVersion groups that kubernetes-validate covers (the built-in API groups we render).
_BUILTIN_GROUPS = {"", "apps", "batch", "autoscaling", "rbac.authorization.k8s.io", "policy",
                   "networking.k8s.io", "storage.k8s.io"}

# The LeaderWorkerSet CRD is 1.3 MB of YAML: parse it with libyaml when PyYAML has it.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Issue:
    """One validation failure."""

    object: str  # Kind/namespace/name
    field: str  # dotted path into the object, "(root)" for the object itself
    reason: str

    def __str__(self) -> str:
        return f"{self.object}: {self.field}: {self.reason}"


def _object_id(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    parts = [str(obj.get("kind", "?"))]
    if meta.get("namespace"):
        parts.append(str(meta["namespace"]))
    parts.append(str(meta.get("name", "?")))
    return "/".join(parts)


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


@dataclass(frozen=True)
class _CrdSchema:
    schema: dict[str, Any]
    namespaced: bool
    source: str


def _make_strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _make_strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_make_strict(v) for v in node]
    return node


@lru_cache(maxsize=1)
def _crd_schemas() -> dict[tuple[str, str, str], _CrdSchema]:
    """(group, version, kind) -> schema, for every CRD file (and JSON schema) we ship."""
    found: dict[tuple[str, str, str], _CrdSchema] = {}
    folder = resources.files("inferstack.kube") / "crds"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            crd = yaml.load(entry.read_text(), Loader=_LOADER)
            spec = crd["spec"]
            for version in spec["versions"]:
                if not version.get("served", False):
                    continue
                schema = _make_strict(version["schema"]["openAPIV3Schema"])
                key = (spec["group"], version["name"], spec["names"]["kind"])
                found[key] = _CrdSchema(schema, spec.get("scope") == "Namespaced", entry.name)
        elif entry.name.endswith(".json"):
            # GKE ComputeClass: a JSON Schema extracted from a cluster (not a CRD file).
            schema = json.loads(entry.read_text())
            found[("cloud.google.com", "v1", "ComputeClass")] = _CrdSchema(schema, False, entry.name)
    return found


def shipped_schemas() -> dict[tuple[str, str, str], str]:
    """(group, version, kind) -> the file its schema comes from."""
    return {key: value.source for key, value in _crd_schemas().items()}


@lru_cache(maxsize=64)
def _builtin_validator(kind: str, api_version: str) -> jsonschema.protocols.Validator | None:
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / _SCHEMA_DIR
    target = base / f"{kind.lower()}-{api}.json"
    if not target.is_file():
        return None
    schema = json.loads(target.read_text())
    definitions = json.loads((base / "_definitions.json").read_text())
    registry: Registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _schema_issues(validator: Any, obj: dict[str, Any], oid: str) -> list[Issue]:
    errors = sorted(validator.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    issues = []
    for err in errors:
        # anyOf/oneOf failures: report the most specific sub-error, it names the real field.
        best = jsonschema.exceptions.best_match([err]) if err.context else err
        issues.append(Issue(oid, _path(best.absolute_path), best.message))
    return issues


def _metadata_issues(obj: dict[str, Any], oid: str, namespaced: bool) -> list[Issue]:
    meta = obj.get("metadata") or {}
    issues = []
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return [Issue(oid, "metadata.name", "is required")]
    pattern, what = (_DNS_1035, "a DNS-1035 label") if obj.get("kind") == "Service" else (
        _DNS_SUBDOMAIN, "a DNS-1123 subdomain")
    limit = 63 if obj.get("kind") == "Service" else 253
    if not pattern.match(name) or len(name) > limit:
        issues.append(Issue(oid, "metadata.name", f"'{name}' is not {what} of at most {limit} characters"))
    if namespaced and not meta.get("namespace"):
        issues.append(Issue(oid, "metadata.namespace", "is required for a namespaced kind"))
    if not namespaced and meta.get("namespace"):
        issues.append(Issue(oid, "metadata.namespace", "must not be set on a cluster-scoped kind"))
    for where in ("labels",):
        for key, value in (meta.get(where) or {}).items():
            prefix, _, label = str(key).rpartition("/")
            if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or not _LABEL_NAME.match(label) or len(label) > 63:
                issues.append(Issue(oid, f"metadata.{where}.{key}", "is not a valid label key"))
            if not isinstance(value, str) or not _LABEL_VALUE.match(value) or len(value) > 63:
                issues.append(Issue(oid, f"metadata.{where}.{key}", f"value {value!r} is not a valid label value"))
    return issues


_CLUSTER_SCOPED_BUILTINS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                            "StorageClass", "PriorityClass"}


def validate_object(obj: dict[str, Any]) -> list[Issue]:
    """Every problem with one object (empty list = valid)."""
    oid = _object_id(obj)
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [Issue(oid, "(root)", "apiVersion and kind are required strings")]
    group, version = _split_api_version(api_version)
    if group in _BUILTIN_GROUPS:
        validator = _builtin_validator(kind, api_version)
        if validator is None:
            return [Issue(oid, "(root)", f"no Kubernetes {KUBERNETES_VERSION} schema for {kind} {api_version}")]
        issues = _schema_issues(validator, obj, oid)
        return issues + _metadata_issues(obj, oid, kind not in _CLUSTER_SCOPED_BUILTINS)
    crd = _crd_schemas().get((group, version, kind))
    if crd is None:
        known = ", ".join(sorted(f"{k[2]} {k[0]}/{k[1]}" for k in _crd_schemas()))
        return [Issue(oid, "(root)", f"no schema shipped for {kind} {api_version}; shipped: {known}")]
    validator = jsonschema.Draft202012Validator(crd.schema)
    return _schema_issues(validator, obj, oid) + _metadata_issues(obj, oid, crd.namespaced)


def validate_objects(objects: list[dict[str, Any]]) -> list[Issue]:
    issues: list[Issue] = []
    for obj in objects:
        issues.extend(validate_object(obj))
    return issues
