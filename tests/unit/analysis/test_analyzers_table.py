"""Analyzer table: YAML input (plus live workloads for live-only analyzers) -> expected
(code, resource) pairs. One positive case per analyzer, near-miss negatives, and a clean
config that produces no message at all, offline and live."""

from __future__ import annotations

from typing import Any

import pytest

from novamesh.analysis import all_analyzers, analyze, build_context, load_texts

V = "apiVersion: networking.istio.io/v1\n"


def wl(service: str, version: str = "v1", *, ports: tuple[int, ...] = (9080,), labels: dict[str, str] | None = None,
       namespace: str = "default", kind: str = "sidecar") -> dict[str, Any]:
    """A workload as GET /api/v1/workloads returns it."""
    return {
        "id": f"{service}-{version}", "service": service, "namespace": namespace, "version": version, "kind": kind,
        "labels": labels if labels is not None else {"app": service, "version": version},
        "ports": [{"number": p, "protocol": "HTTP"} for p in ports], "ready": True,
    }


LIVE = [wl("reviews", "v1"), wl("reviews", "v2"), wl("ratings"),
        wl("ingress", ports=(80,), labels={"istio": "ingressgateway"}, kind="gateway")]

DR_REVIEWS = V + """kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""

GATEWAY = V + """kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example.com]
"""

CLEAN = "---\n".join([
    DR_REVIEWS,
    V + """kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /v2}}]
    timeout: 5s
    route: [{destination: {host: reviews, subset: v2}}]
  - timeout: 5s
    route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
""",
    V + """kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
""",
    GATEWAY,
    V + """kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http: [{timeout: 3s, route: [{destination: {host: reviews, port: {number: 9080}}}]}]
""",
    V + """kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: ["./*"]}]
""",
])


def vs(name: str, body: str, hosts: str = "[reviews]") -> str:
    return V + f"kind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: {hosts}\n" + body


ROUTE = "    timeout: 5s\n    route: [{destination: {host: reviews}}]\n"
MESH_CONFIG = "apiVersion: novamesh.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: default, namespace: istio-system}\nspec:\n"

# (id, code, yaml, live workloads or None, expected resources for that code)
CASES: list[tuple[str, str, str, list[dict[str, Any]] | None, set[str]]] = [
    ("schema-unknown-field", "IST0106", vs("bad", "  htp: []\n"), None, {"VirtualService default/bad"}),
    ("schema-duplicate", "IST0106", vs("twice", "  http:\n  -\n" + ROUTE) + "---\n" + vs("twice", "  http:\n  -\n" + ROUTE),
     None, {"VirtualService default/twice"}),
    ("schema-two-drs", "IST0106", DR_REVIEWS + "---\n" + DR_REVIEWS.replace("name: reviews}", "name: reviews2}"), None,
     {"DestinationRule default/reviews", "DestinationRule default/reviews2"}),
    ("subset-missing", "IST0101", DR_REVIEWS + "---\n" + vs("r", "  http:\n  - timeout: 1s\n    route: [{destination: {host: reviews, subset: v3}}]\n"),
     None, {"VirtualService default/r"}),
    ("subset-defined", "IST0101", DR_REVIEWS + "---\n" + vs("r", "  http:\n  - timeout: 1s\n    route: [{destination: {host: reviews, subset: v2}}]\n"),
     None, set()),
    ("host-missing-live", "IST0101", vs("r", "  http:\n  - timeout: 1s\n    route: [{destination: {host: ratngs}}]\n"), LIVE,
     {"VirtualService default/r"}),
    ("host-missing-offline-unknown", "IST0101", vs("r", "  http:\n  - timeout: 1s\n    route: [{destination: {host: ratngs}}]\n"), None, set()),
    ("gateway-ref-missing", "IST0101", vs("shop", "  gateways: [nope]\n  http:\n  -\n" + ROUTE, "[shop.example.com]"), None,
     {"VirtualService default/shop"}),
    ("gateway-selector-live", "IST0101", GATEWAY.replace("istio: ingressgateway", "istio: egress"), LIVE, {"Gateway default/gw"}),
    ("gateway-port-live", "IST0104", GATEWAY.replace("number: 80", "number: 8080"), LIVE, {"Gateway default/gw"}),
    ("gateway-port-ok", "IST0104", GATEWAY, LIVE, set()),
    ("gateway-declares-no-ports", "IST0104", GATEWAY.replace("number: 80", "number: 8080"),
     [wl("ingress", ports=(), labels={"istio": "ingressgateway"}, kind="gateway")], set()),
    ("annotation", "IST0108", vs("r", "  http:\n  -\n" + ROUTE).replace("metadata: {name: r}", "metadata: {name: r, annotations: {sidecar.istio.io/inject: 'true'}}"),
     None, {"VirtualService default/r"}),
    ("mesh-hosts-conflict", "IST0109", vs("a", "  http:\n  -\n" + ROUTE) + "---\n" + vs("b", "  http:\n  -\n" + ROUTE), None,
     {"VirtualService default/a", "VirtualService default/b"}),
    ("mesh-hosts-distinct", "IST0109", vs("a", "  http:\n  -\n" + ROUTE) + "---\n" + vs("b", "  http:\n  -\n" + ROUTE, "[ratings]"), None, set()),
    ("sidecars-overlap-live", "IST0110", "---\n".join(
        V + f"kind: Sidecar\nmetadata: {{name: {n}}}\nspec:\n  workloadSelector: {{labels: {{{sel}}}}}\n  egress: [{{hosts: ['./*']}}]\n"
        for n, sel in (("s1", "app: reviews"), ("s2", "version: v1"))), LIVE, {"Sidecar default/s1", "Sidecar default/s2"}),
    ("sidecars-no-selector", "IST0111", "---\n".join(
        V + f"kind: Sidecar\nmetadata: {{name: {n}}}\nspec:\n  egress: [{{hosts: ['./*']}}]\n" for n in ("s1", "s2")), None,
     {"Sidecar default/s1", "Sidecar default/s2"}),
    ("port-selector-required", "IST0112", V + """kind: ServiceEntry
metadata: {name: two-ports}
spec:
  hosts: [multi.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-alt, protocol: HTTP}]
  resolution: DNS
---
""" + vs("r", "  http:\n  - timeout: 1s\n    route: [{destination: {host: multi.example.com}}]\n"), None, {"VirtualService default/r"}),
    ("port-selector-given", "IST0112", V + """kind: ServiceEntry
metadata: {name: two-ports}
spec:
  hosts: [multi.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-alt, protocol: HTTP}]
  resolution: DNS
---
""" + vs("r", "  http:\n  - timeout: 1s\n    route: [{destination: {host: multi.example.com, port: {number: 80}}}]\n"), None, set()),
    ("port-name", "IST0118", V + "kind: ServiceEntry\nmetadata: {name: db}\nspec:\n  hosts: [db.example.com]\n  addresses: [10.0.0.5]\n"
     "  ports: [{number: 5432, name: pg}]\n  resolution: DNS\n", None, {"ServiceEntry default/db"}),
    ("selector-no-workload-live", "IST0127", V + "kind: Sidecar\nmetadata: {name: s}\nspec:\n  workloadSelector: {labels: {app: nothing}}\n"
     "  egress: [{hosts: ['./*']}]\n", LIVE, {"Sidecar default/s"}),
    ("selector-matches-live", "IST0127", V + "kind: Sidecar\nmetadata: {name: s}\nspec:\n  workloadSelector: {labels: {app: reviews}}\n"
     "  egress: [{hosts: ['./*']}]\n", LIVE, set()),
    ("dr-tls-no-ca", "IST0128", V + "kind: DestinationRule\nmetadata: {name: ext}\nspec:\n  host: api.example.com\n"
     "  trafficPolicy: {tls: {mode: SIMPLE}}\n", None, {"DestinationRule default/ext"}),
    ("dr-tls-with-ca", "IST0128", V + "kind: DestinationRule\nmetadata: {name: ext}\nspec:\n  host: api.example.com\n"
     "  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /etc/ssl/ca.pem}}\n", None, set()),
    ("dr-port-tls-no-ca", "IST0129", V + "kind: DestinationRule\nmetadata: {name: ext}\nspec:\n  host: api.example.com\n"
     "  trafficPolicy:\n    portLevelSettings: [{port: {number: 443}, tls: {mode: SIMPLE}}]\n", None, {"DestinationRule default/ext"}),
    ("rule-after-catch-all", "IST0130", vs("r", "  http:\n  -\n" + ROUTE + "  - match: [{uri: {prefix: /a}}]\n" + ROUTE), None,
     {"VirtualService default/r"}),
    ("rule-all-duplicates", "IST0130", vs("r", "  http:\n  - match: [{uri: {prefix: /a}}]\n" + ROUTE
                                          + "  - match: [{name: again, uri: {prefix: /a}}]\n" + ROUTE + "  -\n" + ROUTE), None,
     {"VirtualService default/r"}),
    ("catch-all-last", "IST0130", vs("r", "  http:\n  - match: [{uri: {prefix: /a}}]\n" + ROUTE + "  -\n" + ROUTE), None, set()),
    ("tcp-after-catch-all", "IST0130", vs("db", "  tcp:\n  - route: [{destination: {host: db}}]\n"
                                           "  - match: [{port: 5432}]\n    route: [{destination: {host: db}}]\n", "[db]"), None,
     {"VirtualService default/db"}),
    ("duplicate-match", "IST0131", vs("r", "  http:\n  - match: [{uri: {prefix: /a}}]\n" + ROUTE
                                      + "  - match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]\n" + ROUTE + "  -\n" + ROUTE), None,
     {"VirtualService default/r"}),
    ("distinct-matches", "IST0131", vs("r", "  http:\n  - match: [{uri: {prefix: /a}}]\n" + ROUTE
                                       + "  - match: [{uri: {exact: /a}}]\n" + ROUTE), None, set()),
    ("host-not-in-gateway", "IST0132", GATEWAY + "---\n" + vs("shop", "  gateways: [gw]\n  http:\n  -\n" + ROUTE, "[shop.example.com, other.org]"),
     None, {"VirtualService default/shop"}),
    ("se-tcp-no-addresses", "IST0134", V + "kind: ServiceEntry\nmetadata: {name: db}\nspec:\n  hosts: [db.example.com]\n"
     "  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]\n  resolution: DNS\n", None, {"ServiceEntry default/db"}),
    ("se-tcp-with-addresses", "IST0134", V + "kind: ServiceEntry\nmetadata: {name: db}\nspec:\n  hosts: [db.example.com]\n"
     "  addresses: [10.0.0.5]\n  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]\n  resolution: DNS\n", None, set()),
    ("conflicting-gateways", "IST0145", GATEWAY + "---\n" + GATEWAY.replace("name: gw}", "name: gw2}").replace("shop.example.com", "'*.example.com'"),
     None, {"Gateway default/gw", "Gateway default/gw2"}),
    ("gateways-protocol-clash", "IST0145", GATEWAY + "---\n" + GATEWAY.replace("name: gw}", "name: gw2}")
     .replace("shop.example.com", "api.example.com").replace("protocol: HTTP", "protocol: HTTPS")
     .replace("hosts: [api", "tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}\n    hosts: [api"),
     None, {"Gateway default/gw", "Gateway default/gw2"}),
    ("gateways-other-port", "IST0145", GATEWAY + "---\n" + GATEWAY.replace("name: gw}", "name: gw2}").replace("number: 80", "number: 81"),
     None, set()),
    ("subset-selects-nothing-live", "IST0173", DR_REVIEWS.replace("name: v2, labels: {version: v2}", "name: v3, labels: {version: v3}"),
     LIVE, {"DestinationRule default/reviews"}),
    ("dr-unknown-host-live", "IST0174", DR_REVIEWS.replace("host: reviews", "host: reveiws"), LIVE, {"DestinationRule default/reviews"}),
    ("se-protocol-conflict", "IST0177", "---\n".join(
        V + f"kind: ServiceEntry\nmetadata: {{name: {n}}}\nspec:\n  hosts: [api.example.com]\n"
        f"  ports: [{{number: 443, name: {p.lower()}, protocol: {p}}}]\n  resolution: DNS\n" for n, p in (("a", "HTTP"), ("b", "TLS"))),
     None, {"ServiceEntry default/a", "ServiceEntry default/b"}),
    ("mtls-conflict", "IST0113", DR_REVIEWS.replace("{outlierDetection: {consecutive5xxErrors: 5}}", "{outlierDetection: {consecutive5xxErrors: 5}, tls: {mode: DISABLE}}")
     + "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}}\n",
     LIVE, {"DestinationRule default/reviews"}),
    ("mtls-no-conflict-permissive", "IST0113", DR_REVIEWS.replace("{outlierDetection: {consecutive5xxErrors: 5}}", "{outlierDetection: {consecutive5xxErrors: 5}, tls: {mode: DISABLE}}"),
     LIVE, set()),
    ("route-without-timeout", "NM0001", vs("r", "  http:\n  - route: [{destination: {host: reviews}}]\n"), None, {"VirtualService default/r"}),
    ("redirect-needs-no-timeout", "NM0001", vs("r", "  http:\n  - redirect: {uri: /new}\n"), None, set()),
    ("dr-without-outlier", "NM0002", DR_REVIEWS.replace("  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}}\n", ""),
     None, {"DestinationRule default/reviews"}),
    ("leftover-canary", "NM0003", DR_REVIEWS + "---\n" + vs("r", "  http:\n  - timeout: 1s\n    route:\n"
                                                            "    - {destination: {host: reviews, subset: v1}, weight: 100}\n"
                                                            "    - {destination: {host: reviews, subset: v2}, weight: 0}\n"),
     None, {"VirtualService default/r"}),
    ("per-try-timeout-default-retry-on", "NM0004", vs("r", "  http:\n  - retries: {attempts: 3, perTryTimeout: 2s}\n" + ROUTE),
     None, {"VirtualService default/r"}),
    ("per-try-timeout-retry-on-without-timeouts", "NM0004",
     vs("r", "  http:\n  - retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'connect-failure,503'}\n" + ROUTE),
     None, {"VirtualService default/r"}),
    ("per-try-timeout-retried", "NM0004",
     vs("r", "  http:\n  - retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure'}\n" + ROUTE)
     + "---\n" + vs("off", "  http:\n  - retries: {attempts: 0, perTryTimeout: 2s}\n" + ROUTE, hosts="[ratings]"),
     None, set()),
    ("per-try-timeout-mesh-default", "NM0004", MESH_CONFIG + "  defaultHttpRetryPolicy: {attempts: 2, perTryTimeout: 1s}\n",
     None, {"MeshConfig istio-system/default"}),
    ("per-try-timeout-mesh-default-retried", "NM0004",
     MESH_CONFIG + "  defaultHttpRetryPolicy: {attempts: 2, perTryTimeout: 1s, retryOn: 5xx}\n", None, set()),
]


@pytest.mark.parametrize(("code", "text", "live", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_analyzer_table(code: str, text: str, live: list[dict[str, Any]] | None, expected: set[str]) -> None:
    ctx = build_context(files=load_texts([("case.yaml", text)]), workloads=live)
    found = {(m.code, m.resource) for m in analyze(ctx) if m.code == code}
    assert found == {(code, r) for r in expected}


def test_every_analyzer_has_a_positive_case() -> None:
    positive = {c[1] for c in CASES if c[4]}
    assert {a.code for a in all_analyzers()} - {"IST0001"} <= positive


@pytest.mark.parametrize("live", [None, LIVE], ids=["offline", "live"])
def test_clean_config_has_no_messages(live: list[dict[str, Any]] | None) -> None:
    ctx = build_context(files=load_texts([("clean.yaml", CLEAN)]), workloads=live)
    assert analyze(ctx) == []


def test_live_only_analyzers_are_skipped_offline() -> None:
    text = DR_REVIEWS.replace("host: reviews", "host: reveiws")
    offline = analyze(build_context(files=load_texts([("a.yaml", text)])))
    assert not [m for m in offline if m.code == "IST0174"]
    assert [a for a in all_analyzers() if a.live_only]  # the registry marks them
