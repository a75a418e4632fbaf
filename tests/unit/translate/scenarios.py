"""Translation scenarios shared by the golden and the envoy-validate tests.

Each scenario is a config set (built directly from spec dicts, so translation tests do not
depend on the YAML loader) plus registered workloads and the proxy to translate for.
"""

from __future__ import annotations

from typing import Any

from novamesh.config.resource import Resource
from novamesh.config.types import SPEC_TYPES
from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.model.snapshot import MeshSnapshot, build_snapshot
from novamesh.registry import Workload, WorkloadPort


def res(kind: str, name: str, spec: dict[str, Any], namespace: str = "default") -> Resource:
    manifest = {"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return Resource(kind, name, namespace, "networking.istio.io/v1", SPEC_TYPES[kind].model_validate(spec), manifest)


def wl(wid: str, service: str, version: str, address: str, port: int = 9080, ns: str = "default", ready: bool = True, protocol: str = "HTTP") -> Workload:
    return Workload(
        id=wid, service=service, namespace=ns, version=version, address=address,
        labels=(("app", service), ("version", version)), ports=(WorkloadPort(port, protocol),), ready=ready,
    )


BOOKINFO = [
    wl("front1", "frontend", "v1", "127.1.0.2"),
    wl("rev1", "reviews", "v1", "127.1.0.3"),
    wl("rev2", "reviews", "v2", "127.1.0.4"),
    wl("rev3", "reviews", "v3", "127.1.0.5"),
    wl("rat1", "ratings", "v1", "127.1.0.6"),
    wl("rat2", "ratings", "v2", "127.1.0.7", ready=False),
]

FRONTEND = Proxy(
    id="front1", service="frontend", namespace="default", version="v1", address="127.1.0.2",
    labels=(("app", "frontend"), ("version", "v1")), ports=(ProxyPort(9080, "HTTP", "http", 40001),),
)

REVIEWS_DR = res("DestinationRule", "reviews", {"host": "reviews", "subsets": [{"name": n, "labels": {"version": n}} for n in ("v1", "v2", "v3")]})


def _snap(resources: list[Resource], workloads: list[Workload]) -> MeshSnapshot:
    return build_snapshot({r.key: r for r in resources}, workloads, revision=1, registry_version=1)


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    canary = res("VirtualService", "reviews", {
        "hosts": ["reviews"],
        "http": [
            {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20},
            ]},
        ],
    })
    matches = res("VirtualService", "ratings", {
        "hosts": ["ratings.default.svc.cluster.local"],
        "http": [
            {"match": [{"uri": {"exact": "/health"}}, {"uri": {"prefix": "/admin"}, "method": {"exact": "POST"}}],
             "route": [{"destination": {"host": "ratings", "port": {"number": 9080}}}]},
            {"match": [{"uri": {"regex": "/v[0-9]+/ratings/.*"}, "ignoreUriCase": True,
                        "queryParams": {"debug": {"exact": "1"}, "trace": {}}}],
             "route": [{"destination": {"host": "ratings"}}]},
            {"match": [{"withoutHeaders": {"x-canary": {}}, "headers": {"x-team": {"prefix": "pay"}}}],
             "route": [{"destination": {"host": "ratings"}}]},
        ],
    })
    external = [
        res("ServiceEntry", "httpbin", {"hosts": ["httpbin.example.com"], "location": "MESH_EXTERNAL", "resolution": "DNS",
                                        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
        res("ServiceEntry", "legacy", {"hosts": ["legacy.internal"], "location": "MESH_EXTERNAL", "resolution": "STATIC",
                                       "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                                       "endpoints": [{"address": "127.2.0.10"}, {"address": "127.2.0.11", "ports": {"http": 18080}}]}),
        res("ServiceEntry", "vms", {"hosts": ["vm-api.internal"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                                    "ports": [{"number": 7070, "name": "http-api"}, {"number": 7071, "name": "grpc-api"}],
                                    "workloadSelector": {"labels": {"app": "vm-api"}}}),
        res("WorkloadEntry", "vm1", {"address": "127.2.0.20", "labels": {"app": "vm-api", "version": "v1"}}),
        res("WorkloadEntry", "vm2", {"address": "127.2.0.21", "labels": {"app": "other"}}),
    ]
    shop_client = Proxy(id="shop1", service="cart", namespace="shop", version="v1", address="127.1.0.9")
    return {
        "default_routes": (_snap([], BOOKINFO), FRONTEND),
        "canary_and_header": (_snap([REVIEWS_DR, canary], BOOKINFO), FRONTEND),
        "match_conditions": (_snap([matches], BOOKINFO), FRONTEND),
        "external_services": (_snap(external, BOOKINFO[:2]), FRONTEND),
        "other_namespace_client": (_snap([REVIEWS_DR, canary], BOOKINFO + [wl("cart1", "cart", "v1", "127.1.0.9", ns="shop")]), shop_client),
    }


def all_scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    """These scenarios plus those of every ``scenarios_<area>.py`` beside this file (one per
    feature area, each defining ``scenarios()``), so areas add golden cases without editing
    a shared file."""
    import importlib
    from pathlib import Path

    out = scenarios()
    for path in sorted(Path(__file__).parent.glob("scenarios_*.py")):
        extra = importlib.import_module(path.stem).scenarios()
        clash = set(extra) & set(out)
        assert not clash, f"{path.name} redefines scenarios {clash}"
        out.update(extra)
    return out
