"""xds/cache.py's shortcuts (shared class packs, per-variant stripping, reuse across snapshots,
composite responses) give every proxy exactly what ``translate_proxy`` says, packed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from scenarios import BOOKINFO, FRONTEND, REVIEWS_DR, all_scenarios, res

from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.model.snapshot import MeshSnapshot, build_snapshot
from novamesh.translate import T, TranslateOptions, class_key, translate_class, translate_proxy
from novamesh.translate.mtls import TLS_MODE_LABEL
from novamesh.translate.protos import MESSAGE_TYPES, to_message
from novamesh.translate.tcp import _uses_connect
from novamesh.xds.cache import TranslationCache, Versioned, version_of

OPTS = TranslateOptions()


def _variants(proxy: Proxy) -> list[Proxy]:
    """The proxy with and without a mesh certificate, and a second proxy of its class."""
    labels = dict(proxy.labels)
    with_cert = replace(proxy, labels=tuple(sorted({**labels, TLS_MODE_LABEL: "istio"}.items())))
    without = replace(proxy, labels=tuple(sorted((k, v) for k, v in labels.items() if k != TLS_MODE_LABEL)))
    sibling = replace(proxy, id=proxy.id + "-2", address="127.9.9.9")
    return [with_cert, without, sibling]


def _assert_view_is_translation(cache: TranslationCache, snap: MeshSnapshot, proxy: Proxy) -> None:
    expected = translate_proxy(translate_class(snap, class_key(proxy, snap), OPTS), proxy, OPTS)
    view = cache.view(proxy)
    for t in MESSAGE_TYPES:
        assert list(view[t]) == list(expected[t]), f"{proxy.id}: names of {t}"
        for name, packed in view[t].items():
            got = MESSAGE_TYPES[t].FromString(packed.any.value)
            assert got == to_message(t, expected[t][name]), f"{proxy.id}: {t} {name}"
        assert view[t].version == version_of(dict(view[t])), "memoized version = version of the plain entries"
        resp = view[t].response(t)
        assert resp.version_info == view[t].version
        assert sorted(a.value for a in resp.resources) == sorted(p.any.value for p in view[t].values())


@pytest.mark.parametrize("name", sorted(all_scenarios()))
def test_view_is_the_packed_proxy_translation(name: str) -> None:
    snap, proxy = all_scenarios()[name]
    cache = TranslationCache(OPTS)
    cache.set_snapshot(snap)
    for p in _variants(proxy):
        _assert_view_is_translation(cache, snap, p)
    cache.set_snapshot(replace(snap, version=snap.version + "-next"))  # same content, next push
    for p in _variants(proxy):
        _assert_view_is_translation(cache, snap, p)


def _bookinfo(pool_size: int) -> MeshSnapshot:
    dr = res("DestinationRule", "reviews", {**REVIEWS_DR.manifest["spec"],
                                             "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": pool_size}}}})
    return build_snapshot({dr.key: dr}, BOOKINFO, revision=pool_size, registry_version=1)


def test_proxies_of_one_class_share_packs_and_responses() -> None:
    cache = TranslationCache(OPTS)
    cache.set_snapshot(_bookinfo(10))
    a, b = Proxy(id="a", address="127.9.0.1"), Proxy(id="b", address="127.9.0.2")  # no ports, no certificate
    va, vb = cache.view(a), cache.view(b)
    assert cache.translations == 1
    for t in (T.CLUSTER, T.ENDPOINT, T.ROUTE):
        assert va[t] is vb[t], f"{t}: one shared mapping for the class"
        assert va[t].response(t) == vb[t].response(t), f"{t}: one prepared response for the class"
        assert va[t].response(t) is not va[t].response(t), "each send gets its own copy (it sets the nonce)"
    assert va[T.LISTENER] is not vb[T.LISTENER]  # bound to each proxy's own address
    names = frozenset(list(va[T.ENDPOINT])[:2])
    assert va[T.ENDPOINT].subset(names) is vb[T.ENDPOINT].subset(names)
    assert list(va[T.ENDPOINT].subset(names)) == sorted(names)


def test_per_proxy_clusters_are_appended_to_the_class_response() -> None:
    cache = TranslationCache(OPTS)
    cache.set_snapshot(_bookinfo(10))
    view = cache.view(FRONTEND)
    clusters = view[T.CLUSTER]
    assert isinstance(clusters, Versioned) and clusters.base is not None, "class clusters plus the inbound one"
    assert [p.any for p in clusters.extra] == [clusters["inbound|9080||"].any]
    resp = clusters.response(T.CLUSTER)
    assert len(resp.resources) == len(clusters)
    assert {a.value for a in resp.resources} == {p.any.value for p in clusters.values()}
    copy = discovery_pb2.DiscoveryResponse()
    copy.CopyFrom(resp)
    assert copy.version_info == clusters.version == version_of(dict(clusters))


def test_a_change_parses_only_what_changed() -> None:
    cache = TranslationCache(OPTS)
    proxies = [replace(FRONTEND, id=f"f{i}", address=f"127.8.0.{i + 1}", ports=(ProxyPort(9080, "HTTP", "http", 40001 + i),))
               for i in range(5)]
    cache.set_snapshot(_bookinfo(10))
    for p in proxies:
        cache.view(p)
    first = cache.packed
    cache.set_snapshot(_bookinfo(11))  # one DestinationRule field: the reviews clusters change
    views = [cache.view(p) for p in proxies]
    reparsed = cache.packed - first
    changed = [n for n in views[0][T.CLUSTER] if n.endswith("reviews.default.svc.cluster.local")]
    assert 0 < reparsed <= len(changed), f"{reparsed} resources parsed again for {len(changed)} changed clusters"
    assert first > 5 * len(proxies)  # the first snapshot did parse everything


def _routes(*route_matches: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    return {T.ROUTE: {"outbound": {"name": "outbound", "virtual_hosts": [{"name": "h", "domains": ["h"],
                                                                            "routes": [{"match": m} for m in route_matches]}]}}}


def test_uses_connect_is_remembered_per_route_table() -> None:
    plain, tunnel = _routes({"prefix": "/"}), _routes({"prefix": "/"}, {"connect_matcher": {}})
    assert _uses_connect(plain) is False
    assert _uses_connect(tunnel) is True
    assert _uses_connect(plain) is False and _uses_connect(tunnel) is True  # remembered answers
    assert _uses_connect(_routes({"connect_matcher": {}})) is True  # a new table is scanned
    for _ in range(20):  # more tables than remembered: still right
        assert _uses_connect(_routes({"prefix": "/x"})) is False
    assert _uses_connect(tunnel) is True


def test_proxies_without_certificate_share_the_stripped_class_clusters() -> None:
    snap, proxy = all_scenarios()["mtls_strict_namespace"]
    cache = TranslationCache(OPTS)
    cache.set_snapshot(snap)
    bare = replace(proxy, labels=(), ports=())
    views = [cache.view(replace(bare, id=f"b{i}", address=f"127.9.1.{i + 1}")) for i in range(2)]
    assert views[0][T.CLUSTER] is views[1][T.CLUSTER], "stripped once per class, shared by its proxies"
    assert not any("transport_socket_matches" in str(MESSAGE_TYPES[T.CLUSTER].FromString(p.any.value))
                   for p in views[0][T.CLUSTER].values())
    with_cert = cache.view(replace(bare, id="c", labels=((TLS_MODE_LABEL, "istio"),)))
    assert with_cert[T.CLUSTER] is not views[0][T.CLUSTER]
    assert cache.translations == 1
