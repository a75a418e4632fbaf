"""Retry policies (VirtualService routes and the MeshConfig default): a ``perTryTimeout`` that
nothing retries (NM0004).

``apply`` accepts such a policy, as Istio does, and translates it as Istio does (Istio's default
``retryOn`` plus the ``per_try_timeout``), because it is the retry snippet most teams copy. But in
Envoy a try that hits ``perTryTimeout`` is retried only under ``5xx``, ``gateway-error`` or
``reset`` (istio/istio#17613); without one of them the first slow try ends the request with 504.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...config._semantic_http import TIMEOUT_RETRY_CONDITIONS, per_try_timeout_retried
from ...config.resource import Resource
from ...config.types_http import HTTPRetry
from ...config.types_mesh import MeshConfigSpec
from ...translate.http_policies import DEFAULT_RETRY_POLICY
from ..context import Context
from ..messages import Message
from ..registry import analyzer
from ._common import vs_spec

_CONDITIONS = ", ".join(TIMEOUT_RETRY_CONDITIONS)


def _message(ctx: Context, resource: Resource, retries: HTTPRetry, path: str, where: str) -> Message:
    retry_on = (f"retryOn {retries.retry_on!r}" if retries.retry_on is not None
                else f"Istio's default retryOn ({DEFAULT_RETRY_POLICY['retry_on']})")
    return ctx.message(
        "NM0004", resource,
        f"{where}: perTryTimeout {retries.per_try_timeout} is never retried: {retry_on} has none of {_CONDITIONS}, "
        "so a try that times out ends the request with 504 instead of being retried",
        path=f"{path}.perTryTimeout",
        hint="add gateway-error (or 5xx, reset) to retryOn, e.g. `retryOn: gateway-error,connect-failure,refused-stream` "
        "(only where a repeated request is harmless), or drop perTryTimeout and keep the route `timeout`",
    )


@analyzer("NM0004", "retries.PerTryTimeoutNotRetriedAnalyzer",
          "A retry policy with perTryTimeout has gateway-error, 5xx or reset in retryOn; otherwise (Istio's default "
          "retryOn included) a try that times out is not retried and the request fails with 504.")
def per_try_timeout_not_retried(ctx: Context) -> Iterator[Message]:
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None:
            continue
        for i, http in enumerate(spec.http):
            if http.retries is not None and not per_try_timeout_retried(http.retries):
                yield _message(ctx, vs, http.retries, f"spec.http[{i}].retries", f"HTTP route #{i}")
    for mesh in ctx.of_kind("MeshConfig"):
        policy = mesh.spec.default_http_retry_policy if isinstance(mesh.spec, MeshConfigSpec) else None
        if policy is not None and not per_try_timeout_retried(policy):
            yield _message(ctx, mesh, policy, "spec.defaultHttpRetryPolicy", "defaultHttpRetryPolicy")
