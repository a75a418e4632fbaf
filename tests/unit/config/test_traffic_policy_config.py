"""DestinationRule trafficPolicy: valid policies load typed; bad ones are rejected with the field
path and a hint, and an apply containing one stores nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from novamesh.config import DestinationRuleSpec, parse_documents
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, Violation
from novamesh.settings import Settings
from novamesh.store import SqliteStore

HEAD = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
"""


def _violations(body: str) -> list[Violation]:
    with pytest.raises(ConfigError) as info:
        parse_documents(HEAD + textwrap.indent(textwrap.dedent(body), "  "), "dr.yaml")
    assert all(v.hint for v in info.value.violations), info.value
    return info.value.violations


def _one(body: str) -> Violation:
    found = _violations(body)
    assert len(found) == 1, [str(v) for v in found]
    return found[0]


def test_full_policy_loads_typed() -> None:
    [res] = parse_documents(HEAD + textwrap.indent(textwrap.dedent("""\
        trafficPolicy:
          loadBalancer:
            consistentHash: {httpCookie: {name: sticky, path: /, ttl: 10s}, ringHash: {minimumRingSize: 1024}}
          connectionPool:
            tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}}
            http: {http1MaxPendingRequests: 10, http2MaxRequests: 100, maxRequestsPerConnection: 10, maxRetries: 3, idleTimeout: 1m}
          outlierDetection:
            consecutive5xxErrors: 7
            consecutiveGatewayErrors: 0
            interval: 5m
            baseEjectionTime: 15m
            maxEjectionPercent: 100
            minHealthPercent: 10
          portLevelSettings:
          - port: {number: 9080}
            loadBalancer: {simple: LEAST_REQUEST}
          - port: {number: 443}
            tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem,
                  subjectAltNames: [api.example.com], sni: api.example.com}
        subsets:
        - name: v1
          labels: {version: v1}
          trafficPolicy: {loadBalancer: {simple: RANDOM}}
        """), "  "), "dr.yaml")
    spec = res.spec
    assert isinstance(spec, DestinationRuleSpec) and spec.traffic_policy is not None
    tp = spec.traffic_policy
    assert tp.outlier_detection is not None and tp.outlier_detection.consecutive_5xx_errors == 7
    assert tp.outlier_detection.consecutive_gateway_errors == 0  # explicit 0 kept apart from unset
    assert tp.connection_pool is not None and tp.connection_pool.http is not None
    assert tp.connection_pool.http.http1_max_pending_requests == 10
    assert tp.port_level_settings[0].load_balancer is not None
    assert spec.subsets[0].traffic_policy is not None
    tls = tp.port_level_settings[1].tls
    assert tls is not None and tls.mode == "MUTUAL" and tls.subject_alt_names == ["api.example.com"]


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        # consistentHash without a key
        ("trafficPolicy: {loadBalancer: {consistentHash: {ringHash: {minimumRingSize: 64}}}}\n",
         "spec.trafficPolicy.loadBalancer.consistentHash", "no hash key"),
        ("trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: false}}}\n",
         "spec.trafficPolicy.loadBalancer.consistentHash", "no hash key"),
        ("trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: a, useSourceIp: true}}}\n",
         "spec.trafficPolicy.loadBalancer.consistentHash", "2 hash keys"),
        # negative and malformed durations
        ("trafficPolicy: {outlierDetection: {baseEjectionTime: -1s}}\n",
         "spec.trafficPolicy.outlierDetection.baseEjectionTime", "not a duration"),
        ("trafficPolicy: {connectionPool: {tcp: {connectTimeout: 5 seconds}}}\n",
         "spec.trafficPolicy.connectionPool.tcp.connectTimeout", "not a duration"),
        ("trafficPolicy: {connectionPool: {tcp: {connectTimeout: 5}}}\n",
         "spec.trafficPolicy.connectionPool.tcp.connectTimeout", "expected string, got integer 5"),
        ("trafficPolicy: {outlierDetection: {interval: 0s}}\n",
         "spec.trafficPolicy.outlierDetection.interval", "shorter than 1ms"),
        ("trafficPolicy: {connectionPool: {http: {idleTimeout: 1.5ms}}}\n",
         "spec.trafficPolicy.connectionPool.http.idleTimeout", "whole number of milliseconds"),
        ("trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {time: 500ms}}}}\n",
         "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time", "whole number of seconds"),
        # percentages and counters
        ("trafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}\n",
         "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "<= 100"),
        ("trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}\n",
         "spec.trafficPolicy.connectionPool.tcp.maxConnections", ">= 0"),
        # unknown, unsupported and conflicting algorithms
        ("trafficPolicy: {loadBalancer: {simple: ROUND_ROBBIN}}\n",
         "spec.trafficPolicy.loadBalancer.simple", "ROUND_ROBBIN"),
        ("trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n",
         "spec.trafficPolicy.loadBalancer.simple", "not supported by novamesh yet"),
        ("trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {httpHeaderName: x-user}}}\n",
         "spec.trafficPolicy.loadBalancer", "both simple (RANDOM) and consistentHash"),
        ("trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {tableSize: 1000}}}}\n",
         "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "prime"),
        ("trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, minimumRingSize: 8, maglev: {tableSize: 7}}}}\n",
         "spec.trafficPolicy.loadBalancer.consistentHash", "maglev and minimumRingSize"),
        ("trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}\n",
         "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "needs a name"),
        # port-level settings
        ("trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}\n",
         "spec.trafficPolicy.portLevelSettings[0].port", "need a port"),
        (("trafficPolicy: {portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM}},"
          " {port: {number: 80}, loadBalancer: {simple: RANDOM}}]}\n"),
         "spec.trafficPolicy.portLevelSettings[1].port.number", "already has settings"),
        # empty messages
        ("trafficPolicy: {}\n", "spec.trafficPolicy", "no settings"),
        ("trafficPolicy: {connectionPool: {}}\n", "spec.trafficPolicy.connectionPool", "no settings"),
        # TLS origination
        ("trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /certs/c.pem}}\n",
         "spec.trafficPolicy.tls.privateKey", "mode MUTUAL needs 'privateKey'"),
        ("trafficPolicy: {portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL, privateKey: /certs/k.pem}}]}\n",
         "spec.trafficPolicy.portLevelSettings[0].tls.clientCertificate", "mode MUTUAL needs 'clientCertificate'"),
        ("trafficPolicy: {tls: {mode: SIMPLE, caCertificates: certs/ca.pem}}\n",
         "spec.trafficPolicy.tls.caCertificates", "not an absolute path"),
        ("trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a.example]}}\n",
         "spec.trafficPolicy.tls.insecureSkipVerify", "turns off the verification"),
        ("trafficPolicy: {tls: {mode: SIMPLE, credentialName: my-secret}}\n",
         "spec.trafficPolicy.tls.credentialName", "not supported by novamesh yet"),
        ("trafficPolicy: {tls: {mode: STRICT}}\n", "spec.trafficPolicy.tls.mode", "STRICT"),
        ("trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}\n",
         "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy", "not supported by novamesh yet"),
        # a subset's policy is checked with its own path
        ("subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {consistentHash: {}}}}]\n",
         "spec.subsets[0].trafficPolicy.loadBalancer.consistentHash", "no hash key"),
    ],
)
def test_bad_policy_is_rejected_with_path_and_hint(body: str, path: str, words: str) -> None:
    v = _one(body)
    assert v.path == path, str(v)
    assert words in v.message or words in v.hint, str(v)
    assert v.line is not None


def test_every_problem_is_reported_in_one_pass() -> None:
    found = _violations("""\
        trafficPolicy:
          loadBalancer: {consistentHash: {}}
          outlierDetection: {interval: 0.1us}
          portLevelSettings: [{outlierDetection: {maxEjectionPercent: 10}}]
        """)
    assert {v.path for v in found} == {
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "spec.trafficPolicy.outlierDetection.interval",
        "spec.trafficPolicy.portLevelSettings[0].port",
    }


def test_rejected_policy_stores_nothing(tmp_path: Path) -> None:
    mesh = Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))
    bad = HEAD + "  trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}\n"
    with pytest.raises(ConfigError) as info:
        mesh.apply([{"file": "bad.yaml", "content": bad}])
    assert info.value.violations[0].path == "spec.trafficPolicy.outlierDetection.maxEjectionPercent"
    assert mesh.store.list() == [] and mesh.store.current_revision() == 0 and mesh.resources == {}
    good = HEAD + "  trafficPolicy: {outlierDetection: {maxEjectionPercent: 100}}\n"
    assert mesh.apply([{"file": "good.yaml", "content": good}]).revision == 1
