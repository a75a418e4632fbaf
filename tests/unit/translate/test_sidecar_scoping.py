"""Sidecar selection, egress scoping, proxy classes, and the clash rules of local L4 listeners."""

from __future__ import annotations

from scenarios import BOOKINFO, FRONTEND, _snap, res, wl

from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.translate import (
    T,
    TranslateOptions,
    class_key,
    translate_class,
    translate_proxy,
)
from novamesh.translate.scoping import outbound_policy, scoped_snapshot, sidecar_ref
from novamesh.xds.cache import TranslationCache

TCP = [wl("db1", "mysql", "v1", "127.1.0.20", port=3306, protocol="TCP")]


def _proxy(pid: str, app: str, *ports: ProxyPort, namespace: str = "default") -> Proxy:
    return Proxy(id=pid, service=app, namespace=namespace, address=f"127.1.1.{len(pid)}", labels=(("app", app), ("version", "v1")), ports=ports)


def test_precedence_selector_then_namespace_then_root() -> None:
    selected = res("Sidecar", "front", {"workloadSelector": {"labels": {"app": "frontend"}}, "egress": [{"hosts": ["./reviews"]}]})
    ns_default = res("Sidecar", "default", {"egress": [{"hosts": ["./*"]}]})
    root = res("Sidecar", "default", {"egress": [{"hosts": ["*/*"]}]}, namespace="istio-system")
    snap = _snap([selected, ns_default, root], BOOKINFO)
    assert sidecar_ref(snap, "default", {"app": "frontend"}) == "default/front"
    assert sidecar_ref(snap, "default", {"app": "reviews"}) == "default/default"
    assert sidecar_ref(snap, "shop", {"app": "frontend"}) == "istio-system/default"
    assert sidecar_ref(_snap([selected], BOOKINFO), "default", {"app": "reviews"}) == ""


def test_egress_host_forms() -> None:
    extra = [res("ServiceEntry", "ext", {"hosts": ["api.example.com"], "resolution": "DNS", "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]}, namespace="shop")]

    def visible(*hosts: str, client_ns: str = "default") -> set[str]:
        sc = res("Sidecar", "default", {"egress": [{"hosts": list(hosts)}]})
        snap = _snap([sc, *extra], BOOKINFO)
        return {s.split(".")[0] for s in scoped_snapshot(snap, "default/default", client_ns).services}

    assert visible("./reviews") == {"reviews"}
    assert visible("default/ratings", "*/*.example.com") == {"ratings", "api"}
    assert visible("shop/*") == {"api"}
    assert visible("~/*") == set()
    assert visible("*/frontend") == {"frontend"}
    # In the root namespace's Sidecar too, "." is the proxy's namespace.
    root = res("Sidecar", "default", {"egress": [{"hosts": ["./*"]}]}, namespace="istio-system")
    snap = _snap([root, *extra], BOOKINFO)
    assert set(scoped_snapshot(snap, "istio-system/default", "shop").services) == {"api.example.com"}


def test_egress_port_admits_only_that_port() -> None:
    sc = res("Sidecar", "default", {"egress": [{"port": {"number": 3306}, "hosts": ["*/*"]}]})
    snap = _snap([sc], BOOKINFO + TCP)
    assert list(scoped_snapshot(snap, "default/default", "default").services) == ["mysql.default.svc.cluster.local"]


def test_outbound_policy_sources() -> None:
    root = res("Sidecar", "default", {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}, namespace="istio-system")
    own = res("Sidecar", "default", {"egress": [{"hosts": ["./*"]}]})
    strict = res("Sidecar", "strict", {"workloadSelector": {"labels": {"app": "x"}}, "outboundTrafficPolicy": {}})
    snap = _snap([root, own, strict], BOOKINFO)
    assert outbound_policy(snap, "default/default") == ("ALLOW_ANY", "Sidecar istio-system/default")
    assert outbound_policy(snap, "default/strict") == ("REGISTRY_ONLY", "Sidecar default/strict")
    assert outbound_policy(_snap([], BOOKINFO), "") == ("REGISTRY_ONLY", "the novamesh default")


def test_proxies_of_one_sidecar_share_a_class() -> None:
    sc = res("Sidecar", "web", {"workloadSelector": {"labels": {"tier": "web"}}, "egress": [{"hosts": ["./reviews"]}]})
    snap = _snap([sc], BOOKINFO)
    a = Proxy(id="a", service="a", labels=(("app", "a"), ("tier", "web")), address="127.1.1.1")
    b = Proxy(id="b", service="b", labels=(("app", "b"), ("tier", "web")), address="127.1.1.2")
    c = Proxy(id="c", service="c", labels=(("app", "c"),), address="127.1.1.3")
    d = Proxy(id="d", service="d", labels=(("app", "d"),), address="127.1.1.4")
    assert class_key(a, snap) == class_key(b, snap) != class_key(c, snap) == class_key(d, snap)
    cache = TranslationCache(TranslateOptions())
    cache.set_snapshot(snap)
    views = {p.id: cache.view(p) for p in (a, b, c, d)}
    assert cache.translations == 2
    assert set(views["a"][T.CLUSTER]) == {"outbound|9080||reviews.default.svc.cluster.local"}
    assert "outbound|9080||ratings.default.svc.cluster.local" in views["c"][T.CLUSTER]
    # Without the snapshot the key falls back to the labels: never shared wrongly, only less.
    opts = TranslateOptions()
    assert set(translate_class(snap, class_key(a), opts)[T.CLUSTER]) == set(views["a"][T.CLUSTER])


def test_local_tcp_listener_skips_the_workloads_own_ports() -> None:
    snap = _snap([], BOOKINFO + TCP)
    opts = TranslateOptions()
    plain = translate_proxy(translate_class(snap, class_key(FRONTEND, snap), opts), FRONTEND, opts)
    assert plain[T.LISTENER]["outbound|3306"]["address"]["socket_address"] == {"address": FRONTEND.address, "port_value": 3306}
    db = _proxy("db1", "mysql", ProxyPort(3306, "TCP", "tcp-3306", 40000))
    own = translate_proxy(translate_class(snap, class_key(db, snap), opts), db, opts)
    assert "outbound|3306" not in own[T.LISTENER] and own[T.LISTENER]["inbound|3306"]
    app_port = _proxy("x", "x", ProxyPort(9080, "HTTP", "http", 3306))
    clash = translate_proxy(translate_class(snap, class_key(app_port, snap), opts), app_port, opts)
    assert "outbound|3306" not in clash[T.LISTENER]
    # Still reachable with CONNECT through the outbound HTTP proxy.
    vhosts = {vh["name"]: vh for vh in own[T.ROUTE]["outbound"]["virtual_hosts"]}
    assert vhosts["mysql.default.svc.cluster.local:3306"]["routes"][0]["match"] == {"connect_matcher": {}}


def test_privileged_and_reserved_ports_get_no_local_listener() -> None:
    low = [wl("smtp1", "smtp", "v1", "127.1.0.30", port=465, protocol="TLS"), wl("r1", "weird", "v1", "127.1.0.31", port=15020, protocol="TCP")]
    snap = _snap([], BOOKINFO + low)
    opts = TranslateOptions()
    out = translate_proxy(translate_class(snap, class_key(FRONTEND, snap), opts), FRONTEND, opts)
    assert not [name for name in out[T.LISTENER] if name.startswith("outbound|")]
