"""proxy-config, describe and explain-flags against a real mesh: reviews v1/v2, a client, a
DestinationRule with subsets and a VirtualService with a header route and a weighted split."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

FQDN = "reviews.default.svc.cluster.local"

CONFIG = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {http: {http1MaxPendingRequests: 1}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("inspect"))
    try:
        m.start_control_plane()
        m.echo("reviews", version="v1")
        m.echo("reviews", version="v2")
        m.client("client")
        m.apply(CONFIG)
        m.wait_synced()
        yield m
    finally:
        m.close()


def _client(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "client")


def _ok(mesh: LocalMesh, *args: str) -> str:
    res = mesh.cli(*args)
    assert res.returncode == 0, f"{args}: {res.stderr}"
    return res.stdout


def test_routes_show_the_header_route_split_and_domains(mesh: LocalMesh) -> None:
    def routes_live() -> str | None:
        text = _ok(mesh, "proxy-config", "routes", "client")
        return text if "end-user=jason" in text else None

    text = poll(routes_live, 20, "the VirtualService's routes in the client's Envoy")
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "DOMAINS", "MATCH", "DESTINATION", "VIRTUAL", "SERVICE"]
    jason = next(line for line in lines if "end-user=jason" in line)
    assert "reviews +" in jason and f"outbound|9080|v2|{FQDN}" in jason and "reviews.default" in jason
    split = next(line for line in lines if "80% " in line)
    assert f"80% outbound|9080|v1|{FQDN}, 20% outbound|9080|v2|{FQDN}" in split

    routes = json.loads(_ok(mesh, "proxy-config", "routes", "client", "-o", "json"))
    vhost = next(vh for rc in routes for vh in rc["virtual_hosts"] if vh["name"] == f"{FQDN}:9080")
    assert {"reviews", "reviews:9080", FQDN} <= set(vhost["domains"])
    assert vhost["routes"][0]["name"] == "jason"


def test_clusters_show_the_subsets(mesh: LocalMesh) -> None:
    for source in ("envoy", "control-plane"):
        text = _ok(mesh, "proxy-config", "clusters", _client(mesh).id, "--source", source)
        rows = [line.split() for line in text.splitlines()]
        for subset in ("v1", "v2", "-"):
            assert [FQDN, "9080", subset, "outbound", "EDS", "reviews.default"] in rows, (source, text)


def test_endpoints_are_healthy(mesh: LocalMesh) -> None:
    addresses = {w.address for w in mesh.workloads if w.service == "reviews"}

    def healthy() -> bool:
        rows = [line.split() for line in _ok(mesh, "proxy-config", "endpoints", "client").splitlines()]
        found = {(r[0], r[3]) for r in rows if len(r) == 4 and r[1] == "HEALTHY" and r[2] == "OK"}
        return all((f"{a}:9080", f"outbound|9080||{FQDN}") in found for a in addresses)

    poll(healthy, 20, "both reviews endpoints HEALTHY in the client's Envoy")
    v2 = next(w for w in mesh.workloads if w.service == "reviews" and w.version == "v2")
    data = json.loads(_ok(mesh, "proxy-config", "endpoints", "client", "-o", "json"))
    assert {"endpoint": f"{v2.address}:9080", "status": "HEALTHY", "outlierCheck": "OK",
            "cluster": f"outbound|9080|v2|{FQDN}", "weight": 1} in data


def test_listeners_and_all(mesh: LocalMesh) -> None:
    client = _client(mesh)
    text = _ok(mesh, "proxy-config", "listeners", client.address)
    assert any(line.split()[:3] == ["virtualOutbound", client.address, "15001"] and "Route: outbound" in line
               for line in text.splitlines())
    everything = _ok(mesh, "proxy-config", "all", "client")
    for title in ("CLUSTERS", "LISTENERS", "ROUTES", "ENDPOINTS", "SECRETS"):
        assert title in everything
    data = json.loads(_ok(mesh, "proxy-config", "all", "client", "-o", "json"))
    assert set(data) == {"clusters", "listeners", "routes", "endpoints", "secrets"}
    secrets = _ok(mesh, "proxy-config", "secrets", "client")
    names = [s.get("name") for s in data["secrets"]]
    if names:  # certificates from the CA: one row per secret, with its validity
        rows = {line.split()[0]: line.split() for line in secrets.splitlines()[1:] if line.strip()}
        assert set(rows) == set(names)
        assert all("ACTIVE" in r and r[-2].endswith("Z") and r[-3].endswith("Z") for r in rows.values()), secrets
    else:
        assert secrets.startswith("no secrets: this proxy holds no certificates")


def test_describe_service_names_vs_dr_and_split(mesh: LocalMesh) -> None:
    text = _ok(mesh, "describe", "service", "reviews")
    assert "VirtualService default/reviews (hosts: reviews):" in text
    assert "[jason] requests with header end-user=jason go to subset v2" in text
    assert "all other requests go 80% to subset v1, 20% to subset v2" in text
    assert "DestinationRule default/reviews (host: reviews):" in text
    assert "subset v1: version=v1 (1 ready endpoint(s))" in text
    assert "circuit breaker (connection pool): http1MaxPendingRequests: 1" in text
    assert "Endpoints (2 ready, 0 not ready)" in text
    data = json.loads(_ok(mesh, "describe", "service", "reviews", "-o", "json"))
    assert data["virtualServices"] == ["default/reviews"] and data["destinationRules"] == ["default/reviews"]
    assert len(data["proxies"]) == 2
    workload = _ok(mesh, "describe", "workload", next(w.id for w in mesh.workloads if w.version == "v2" and w.service == "reviews"))
    assert "in subset v2 of DestinationRule default/reviews" in workload


def test_explain_flags_points_at_the_config(mesh: LocalMesh) -> None:
    text = _ok(mesh, "explain-flags", "UO", "--service", "reviews")
    assert text.startswith("UO (UpstreamOverflow)")
    assert "config: circuit breaker: DestinationRule default/reviews sets http1MaxPendingRequests: 1" in text


def test_bad_input_is_a_clear_error(mesh: LocalMesh) -> None:
    res = mesh.cli("proxy-config", "routes", "nosuch")
    assert res.returncode == 1 and "no workload 'nosuch'" in res.stderr and "reviews.default" in res.stderr
    res = mesh.cli("proxy-config", "routes", "reviews")
    assert res.returncode == 1 and "matches 2 workloads; name one by id" in res.stderr
    res = mesh.cli("proxy-config", "routez", "client")
    assert res.returncode == 1 and "unknown section 'routez'" in res.stderr
    res = mesh.cli("describe", "service", "nosuch")
    assert res.returncode == 1 and "no service 'nosuch'" in res.stderr
    res = mesh.cli("explain-flags", "XYZ")
    assert res.returncode == 1 and "XYZ: not an Envoy response flag" in res.stdout
