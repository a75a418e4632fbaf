"""novamesh's own mesh standards (NM codes): route timeouts, outlier detection, leftover canaries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..context import Context
from ..messages import Message
from ..registry import analyzer
from ...config.types_mesh import MeshConfigSpec
from ._common import dr_spec, vs_spec


@analyzer("NM0001", "standards.RouteTimeoutAnalyzer",
          "Every HTTP route that forwards to destinations sets `timeout`, unless the MeshConfig sets "
          "`defaultHttpTimeout` (without either, a request waits for a slow upstream forever).")
def route_timeouts(ctx: Context) -> Iterator[Message]:
    mesh = ctx.snapshot.mesh_config
    if mesh is not None and isinstance(mesh.spec, MeshConfigSpec) and mesh.spec.timeout_seconds() > 0:
        return  # every route without its own timeout gets the mesh-wide one
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None:
            continue
        for i, http in enumerate(spec.http):
            if http.route and http.timeout is None:
                yield ctx.message("NM0001", vs, f"HTTP route #{i} has no timeout; requests wait for the upstream "
                                  "without limit", path=f"spec.http[{i}]",
                                  hint="add `timeout:` to the route, e.g. `timeout: 5s` (a little above the "
                                  "upstream's p99 latency), or a mesh-wide `defaultHttpTimeout` (docs/mesh-standards.md)")


@analyzer("NM0002", "standards.OutlierDetectionAnalyzer",
          "Every DestinationRule sets outlierDetection (at the top level or in every subset), so failing "
          "endpoints are ejected; quiet when the MeshConfig's defaultTrafficPolicy sets it for every service.")
def outlier_detection(ctx: Context) -> Iterator[Message]:
    mesh = ctx.snapshot.mesh_config
    if (mesh is not None and isinstance(mesh.spec, MeshConfigSpec) and mesh.spec.default_traffic_policy is not None
            and mesh.spec.default_traffic_policy.outlier_detection is not None):
        return  # a rule without its own outlierDetection gets the mesh-wide one
    for dr in ctx.of_kind("DestinationRule"):
        spec = dr_spec(dr)
        if spec is None:
            continue
        top = spec.traffic_policy is not None and spec.traffic_policy.outlier_detection is not None
        subsets = bool(spec.subsets) and all(
            s.traffic_policy is not None and s.traffic_policy.outlier_detection is not None for s in spec.subsets)
        if not top and not subsets:
            yield ctx.message("NM0002", dr, "DestinationRule has no outlierDetection; endpoints that keep failing "
                              "stay in the load-balancing pool", path="spec",
                              hint="add `trafficPolicy: {outlierDetection: {consecutive5xxErrors: 5, interval: 10s, "
                              "baseEjectionTime: 30s}}`")


def _leftover(weights: Sequence[int | None]) -> bool:
    return len(weights) > 1 and 100 in weights and all(w in (0, 100) for w in weights)


@analyzer("NM0003", "standards.LeftoverCanaryAnalyzer",
          "No route keeps a 100/0 weight split after a canary finished; drop the 0-weight destinations.")
def leftover_canaries(ctx: Context) -> Iterator[Message]:
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None:
            continue
        sections: list[tuple[str, list[list[int | None]]]] = [
            ("http", [[d.weight for d in r.route] for r in spec.http]),
            ("tcp", [[d.weight for d in r.route] for r in spec.tcp]),
            ("tls", [[d.weight for d in r.route] for r in spec.tls]),
        ]
        for section, routes in sections:
            for i, weights in enumerate(routes):
                if _leftover(weights):
                    idle = [j for j, w in enumerate(weights) if w == 0]
                    yield ctx.message("NM0003", vs, f"{section} route #{i} sends 100% to one destination; "
                                      f"destinations {idle} get weight 0 and do nothing",
                                      path=f"spec.{section}[{i}].route",
                                      hint="remove the 0-weight destinations (and the weights) once the canary is done")
