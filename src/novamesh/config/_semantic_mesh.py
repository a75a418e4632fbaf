"""Checks for the MeshConfig kind: its spec (:func:`check_mesh_config`, one document) and its
place in the config set (:func:`mesh_config_violations`: one per mesh, named ``default`` in the
root namespace, apiVersion ``novamesh.io/v1alpha1``).

The spec reuses the checks of the fields it borrows: ``defaultHttpRetryPolicy`` is checked like
a route's ``retries`` (with ``defaultHttpTimeout`` as the route timeout), ``defaultTrafficPolicy``
like a DestinationRule's ``trafficPolicy``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..errors import Violation
from ._paths import Problem
from ._semantic_http import _retries
from ._semantic_traffic import traffic_policy_problems
from .base import parse_duration
from .resource import Resource, ResourceKey
from .types_mesh import MESH_CONFIG_API_VERSION, MESH_CONFIG_KIND, MESH_CONFIG_NAME, ROOT_NAMESPACE, MeshConfigSpec
from .types_traffic import TrafficPolicy

__all__ = ["check_mesh_config", "mesh_config_violations"]

CONFLICT_CODE = "IST0106"


def check_mesh_config(spec: MeshConfigSpec) -> list[Problem]:
    """Every problem in one MeshConfig spec."""
    problems: list[Problem] = []
    timeout = parse_duration(spec.default_http_timeout) if spec.default_http_timeout is not None else None
    if timeout is not None and 0 < timeout < 0.001:
        problems.append(
            Problem("spec.defaultHttpTimeout", f"timeout {spec.default_http_timeout} is shorter than 1ms",
                    "use e.g. 15s, or 0s for no mesh-wide timeout")
        )
    if spec.default_http_retry_policy is not None:
        problems += _retries(spec.default_http_retry_policy, "spec.defaultHttpRetryPolicy", timeout)
    defaults = spec.default_traffic_policy
    if defaults is not None:
        path = "spec.defaultTrafficPolicy"
        if defaults.connection_pool is None and defaults.outlier_detection is None:
            problems.append(
                Problem(path, "defaultTrafficPolicy has no settings",
                        "add connectionPool and/or outlierDetection, or remove 'defaultTrafficPolicy'")
            )
        else:
            policy = TrafficPolicy(connection_pool=defaults.connection_pool, outlier_detection=defaults.outlier_detection)
            problems += traffic_policy_problems(policy, path)
    return problems


def _violation(resource: Resource, path: str, message: str, hint: str) -> Violation:
    return Violation(
        message=message,
        path=path,
        kind=resource.kind,
        name=resource.name,
        namespace=resource.namespace,
        file=resource.source.file,
        document=resource.source.document,
        line=resource.source.line,
        hint=hint,
        code=CONFLICT_CODE,
    )


def mesh_config_violations(state: Mapping[ResourceKey, Resource], changed: Collection[ResourceKey]) -> list[Violation]:
    """Problems of the MeshConfigs in ``state`` that changed: wrong apiVersion, outside the root
    namespace, not named ``default`` (which is also what a second MeshConfig always is)."""
    changed = set(changed)
    home = (MESH_CONFIG_KIND, ROOT_NAMESPACE, MESH_CONFIG_NAME)
    violations: list[Violation] = []
    for key in sorted(k for k in state if k[0] == MESH_CONFIG_KIND and k in changed):
        resource = state[key]
        if resource.api_version != MESH_CONFIG_API_VERSION:
            violations.append(
                _violation(resource, "apiVersion", f"MeshConfig has apiVersion {resource.api_version!r}; it is a "
                           "novamesh kind, not an Istio one", f"write `apiVersion: {MESH_CONFIG_API_VERSION}`")
            )
        if key == home:
            continue
        existing = f"; the mesh already has {MESH_CONFIG_KIND} {ROOT_NAMESPACE}/{MESH_CONFIG_NAME}" if home in state else ""
        if resource.namespace != ROOT_NAMESPACE:
            violations.append(
                _violation(resource, "metadata.namespace",
                           f"a MeshConfig applies to the whole mesh and lives in the root namespace "
                           f"'{ROOT_NAMESPACE}', not in '{resource.namespace}'{existing}",
                           f"set `metadata: {{name: {MESH_CONFIG_NAME}, namespace: {ROOT_NAMESPACE}}}`; per-namespace "
                           "settings belong in a VirtualService or DestinationRule")
            )
        else:
            violations.append(
                _violation(resource, "metadata.name",
                           f"a mesh has one MeshConfig, named '{MESH_CONFIG_NAME}', not '{resource.name}'{existing}",
                           f"name it `{MESH_CONFIG_NAME}`" + (" and merge its settings into the existing one" if existing else ""))
            )
    return violations
