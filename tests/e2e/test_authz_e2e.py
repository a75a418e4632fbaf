"""AuthorizationPolicy through real Envoy: a caller not listed gets 403, DENY beats ALLOW,
empty ``rules`` versus ``rules: [{}]``, AUDIT never denies (its match is counted), and path,
method, header, IP, port, namespace and principal conditions (and their ``not`` forms) each
decide a request.

One mesh per module: an echo ``backend``, a ``client`` sidecar in namespace ``default`` and an
``outsider`` sidecar in namespace ``other``. Each test applies its policies and waits until the
backend's Envoy serves exactly them (the RBAC policy names are in its config dump); what reached
the app is read from the backend Envoy's inbound cluster counter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

URL = "http://backend.default:9080"
INBOUND_RQ = "cluster.inbound|9080||.upstream_rq_total"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.echo("backend")
        m.client("client")
        m.client("outsider", namespace="other")
        yield m
    finally:
        m.close()


def _policies(mesh: LocalMesh) -> list[dict[str, Any]]:
    return list(mesh.api.get("/api/v1/resources", kind="AuthorizationPolicy"))


def _active_listeners(w: WorkloadProcess) -> str:
    """The listeners Envoy serves with now (not those still warming or draining), as JSON text."""
    dump = httpx.get(f"{w.admin_url}/config_dump", params={"resource": "dynamic_listeners"}, timeout=5, trust_env=False).json()
    configs = dump.get("configs", [])
    if any("warming_state" in c or "draining_state" in c for c in configs) or w.counter("listener_manager.total_filter_chains_draining"):
        return "<changing>"  # old connections keep the old filters until their listener drained
    return json.dumps([c["active_state"] for c in configs if "active_state" in c])


def _live_policy_names(backend: WorkloadProcess) -> set[str]:
    dump = _active_listeners(backend)
    if dump == "<changing>":
        return {"<changing>"}
    return set(re.findall(r"policy\[([a-z0-9.-]+)\]", dump)) | ({"<rbac>"} if "envoy.filters.http.rbac" in dump else set())


def _apply(mesh: LocalMesh, yaml_text: str, live: set[str], *, rbac: bool = True) -> None:
    """Apply policies and wait until the backend's Envoy has RBAC filters naming exactly ``live``
    (policies without rules name nothing: they are covered by the ``<rbac>`` marker)."""
    mesh.apply(yaml_text)
    backend = mesh.workload("backend")
    want = live | ({"<rbac>"} if rbac else set())
    poll(lambda: _live_policy_names(backend) == want, 20, f"policies {sorted(live)} live on the backend")


@pytest.fixture(autouse=True)
def _no_policies(mesh: LocalMesh) -> Iterator[None]:
    """Every test starts with no AuthorizationPolicy, live on the backend."""
    for p in _policies(mesh):
        md = p["metadata"]
        mesh.api.request("DELETE", f"/api/v1/resources/AuthorizationPolicy/{md['namespace']}/{md['name']}")
    backend = mesh.workload("backend")
    poll(lambda: not _live_policy_names(backend), 20, "no RBAC filter on the backend")
    yield


def _get(caller: WorkloadProcess, path: str = "/", method: str = "GET", **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{URL}{path}", proxy=caller.proxy_url, timeout=10, trust_env=False, **kw)


def _denied(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.text == "RBAC: access denied"


def test_caller_not_listed_gets_403_and_never_reaches_the_app(mesh: LocalMesh) -> None:
    client, backend = mesh.workload("client"), mesh.workload("backend")
    assert _get(client).status_code == 200
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-ten}
spec:
  selector: {matchLabels: {app: backend}}
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/8]}}]
""", {"only-ten"})
    before = backend.counter(INBOUND_RQ)
    for _ in range(5):
        assert _denied(_get(client))
    assert backend.counter(INBOUND_RQ) == before  # the app saw none of them
    # the same policy listing loopback (where the callers are) lets them through
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-ten}
spec:
  selector: {matchLabels: {app: backend}}
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/8, 127.0.0.0/8]}}]
""", {"only-ten"})
    poll(lambda: _get(client).status_code == 200, 20, "loopback callers allowed")
    assert backend.counter(INBOUND_RQ) > before


def test_deny_beats_allow(mesh: LocalMesh) -> None:
    client = mesh.workload("client")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all}
spec:
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-secret}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: [/secret, /secret/*]}}]
""", {"allow-all", "deny-secret"})
    assert _get(client, "/public").status_code == 200
    assert _denied(_get(client, "/secret"))
    assert _denied(_get(client, "/secret/x"))
    assert _get(client, "/secretive").status_code == 200  # exact and prefix, not a substring


def test_empty_rules_deny_all_for_allow_and_nothing_for_deny(mesh: LocalMesh) -> None:
    client = mesh.workload("client")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-nothing}
spec: {action: DENY}
""", set(), rbac=False)
    assert _get(client).status_code == 200  # DENY without rules denies nothing
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec: {}
""", set())
    assert _denied(_get(client))
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec: {rules: [{}]}
""", {"allow-nothing"})
    assert _get(client).status_code == 200  # rules: [{}] matches everything


def test_method_and_path_conditions_decide(mesh: LocalMesh) -> None:
    client = mesh.workload("client")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: read-api}
spec:
  rules:
  - to: [{operation: {methods: [GET], paths: [/api/*, "*.html"], notPaths: [/api/admin*]}}]
""", {"read-api"})
    assert _get(client, "/api/items").status_code == 200
    assert _get(client, "/index.html").status_code == 200
    assert _denied(_get(client, "/api/items", method="POST"))
    assert _denied(_get(client, "/other"))
    assert _denied(_get(client, "/api/admin/users"))
    assert _get(client, "/api/items?x=/api/admin").status_code == 200  # the query is not the path


def test_header_condition_decides(mesh: LocalMesh) -> None:
    client = mesh.workload("client")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: team}
spec:
  rules:
  - when:
    - {key: "request.headers[x-team]", values: ["pay*"], notValues: [payroll]}
""", {"team"})
    assert _get(client, headers={"x-team": "payments"}).status_code == 200
    assert _denied(_get(client, headers={"x-team": "payroll"}))
    assert _denied(_get(client, headers={"x-team": "ops"}))
    assert _denied(_get(client))


def test_host_matches_case_insensitively_with_or_without_port(mesh: LocalMesh) -> None:
    backend = mesh.workload("backend")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: hosts}
spec:
  action: DENY
  rules:
  - to: [{operation: {hosts: [admin.example.com]}}]
""", {"hosts"})
    direct = f"http://{backend.address}:9080/"
    for host in ("admin.example.com", "ADMIN.Example.com", "admin.example.com:9080", "Admin.Example.Com:80"):
        r = httpx.get(direct, headers={"host": host}, timeout=5, trust_env=False)
        assert _denied(r), host
    assert httpx.get(direct, headers={"host": "www.example.com"}, timeout=5, trust_env=False).status_code == 200


def _assert_mesh_mtls(mesh: LocalMesh) -> None:
    """Sidecars talk mTLS by default (the backend sees the caller's SPIFFE id); principal and
    namespace conditions need it, so its absence is a regression, not a reason to skip."""
    r = _get(mesh.workload("client"))
    assert r.status_code == 200, r.text
    assert r.json().get("caller", {}).get("principal") == "spiffe://cluster.local/ns/default/sa/default", r.json()


def test_namespace_and_principal_conditions_decide(mesh: LocalMesh) -> None:
    client, outsider = mesh.workload("client"), mesh.workload("outsider")
    _assert_mesh_mtls(mesh)
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: same-namespace}
spec:
  rules:
  - from: [{source: {namespaces: [default]}}]
""", {"same-namespace"})
    assert _get(client).status_code == 200
    assert _denied(_get(outsider))
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: same-namespace}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/other/sa/default]}}]
""", {"same-namespace"})
    # same policy name: wait for the new rule itself (both callers' pooled connections included)
    poll(lambda: _denied(_get(client)) and _get(outsider).status_code == 200, 20, "only the outsider listed")
    assert _denied(_get(client)) and _get(outsider).json()["caller"]["principal"] == "spiffe://cluster.local/ns/other/sa/default"


def test_not_principals_and_not_methods_decide(mesh: LocalMesh) -> None:
    client, outsider = mesh.workload("client"), mesh.workload("outsider")
    _assert_mesh_mtls(mesh)
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-forms}
spec:
  rules:
  - from: [{source: {notPrincipals: [cluster.local/ns/other/sa/default]}}]
    to: [{operation: {notMethods: [DELETE, PUT]}}]
""", {"not-forms"})
    assert _get(client).status_code == 200
    assert _get(client, method="POST").status_code == 200
    assert _denied(_get(client, method="DELETE"))  # only notMethods decides this one
    assert _denied(_get(client, method="PUT"))
    assert _denied(_get(outsider))  # only notPrincipals decides this one


def test_source_principal_condition_decides(mesh: LocalMesh) -> None:
    client, outsider = mesh.workload("client"), mesh.workload("outsider")
    _assert_mesh_mtls(mesh)
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: principal-when}
spec:
  rules:
  - when: [{key: source.principal, values: [cluster.local/ns/other/sa/default]}]
""", {"principal-when"})
    assert _get(outsider).status_code == 200
    assert _denied(_get(client))


def test_source_ip_and_destination_port_conditions_decide(mesh: LocalMesh) -> None:
    """Each rule of ``near-miss`` matches on one key and misses on the other: it denies nothing
    only if Envoy evaluates both keys. ``hit`` matches on both and denies."""
    client = mesh.workload("client")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: near-miss}
spec:
  action: DENY
  rules:
  - when: [{key: source.ip, values: [127.0.0.0/8]}, {key: destination.port, values: ["9081"]}]
  - when: [{key: source.ip, values: [10.0.0.0/8]}, {key: destination.port, values: ["9080"]}]
""", {"near-miss"})
    assert _get(client).status_code == 200
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: hit}
spec:
  action: DENY
  rules:
  - when: [{key: source.ip, values: [127.0.0.0/8]}, {key: destination.port, values: ["9080"]}]
""", {"near-miss", "hit"})
    assert _denied(_get(client))


def test_audit_never_denies_and_counts_what_it_matched(mesh: LocalMesh) -> None:
    client, backend = mesh.workload("client"), mesh.workload("backend")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-admin}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: [/admin, /admin/*]}}]
""", {"audit-admin"})
    # Envoy 1.40 has no rbac.logged counter; the AUDIT filter's per-rule counter is the record
    audited = "http.inbound_9080.rbac.policy.ns[default]-policy[audit-admin]-rule[0].allowed"
    before, reached = backend.counter(audited), backend.counter(INBOUND_RQ)
    r = _get(client, "/admin/users")
    assert r.status_code == 200 and r.json()["path"] == "/admin/users"  # audited, not denied
    assert backend.counter(audited) == before + 1
    assert _get(client, "/public").status_code == 200
    assert backend.counter(audited) == before + 1  # not matched: not counted
    assert backend.counter(INBOUND_RQ) == reached + 2  # both reached the app
