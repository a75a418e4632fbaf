"""Access logs through real Envoy: JSON lines in ``<data_dir>/workloads/<dir>/access.log``,
switched on mesh-wide, off and filtered per workload with the Telemetry API, carrying the
response flag of a failed request (a fault abort: ``FI``).

Absence is proved with a marker, never with a sleep: the request that must not be logged is
followed (on the same sidecar, same file) by one that must be; once that one is in the file,
the earlier one would be too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

FAULTS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: back}
spec:
  hosts: [back]
  http:
  - match: [{uri: {prefix: /fail}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: back}}]
  - route: [{destination: {host: back}}]
"""

MESH_LOGS = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
"""


def _client_telemetry(body: str) -> str:
    return f"""
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: client-logs, namespace: default}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  accessLogging: [{body}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.echo("back")
        m.client("client")
        m.apply(FAULTS + "---" + MESH_LOGS)
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "client")


@pytest.fixture(scope="module")
def back(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "back")


def _log_file(mesh: LocalMesh, w: WorkloadProcess) -> Path:
    (path,) = (mesh.root / "data" / "workloads").glob(f"{w.service}-{w.version}-*/access.log")
    return path


def _lines(mesh: LocalMesh, w: WorkloadProcess) -> list[dict[str, Any]]:
    try:
        text = _log_file(mesh, w).read_text()
    except (OSError, ValueError):
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _logged(mesh: LocalMesh, w: WorkloadProcess, path: str) -> list[dict[str, Any]]:
    return [line for line in _lines(mesh, w) if line["path"] == path]


def _access_logs(w: WorkloadProcess) -> list[dict[str, Any]]:
    """The access-log configs on ``w``'s listeners, read from its Envoy."""
    dump = httpx.get(f"{w.admin_url}/config_dump?resource=dynamic_listeners", timeout=5, trust_env=False).json()
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") == "envoy.access_loggers.file":
                found.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dump)
    return found


def _get(client: WorkloadProcess, path: str) -> int:
    return httpx.get(f"http://back:9080{path}", proxy=client.proxy_url, timeout=10).status_code


def test_json_lines_with_identities_and_response_flags(mesh: LocalMesh, client: WorkloadProcess, back: WorkloadProcess) -> None:
    poll(lambda: _access_logs(client) and _access_logs(back), 20, "access logs on both sidecars")
    assert _get(client, "/ok-1") == 200
    assert _get(client, "/fail-1") == 503
    ok = poll(lambda: _logged(mesh, client, "/ok-1"), 20, "the client's line for /ok-1")[0]
    assert ok["response_code"] == 200 and ok["response_flags"] == "-"
    assert ok["reporter"] == "source" and ok["source_workload"] == "client-v1" and ok["source_namespace"] == "default"
    assert ok["upstream_host"] == f"{back.address}:9080"
    assert ok["upstream_cluster"] == "outbound|9080||back.default.svc.cluster.local"
    assert isinstance(ok["duration"], int) and ok["request_id"]
    served = poll(lambda: _logged(mesh, back, "/ok-1"), 20, "the backend's line for /ok-1")[0]
    assert served["reporter"] == "destination" and served["destination_workload"] == "back-v1"
    assert served["request_id"] == ok["request_id"]
    failed = poll(lambda: _logged(mesh, client, "/fail-1"), 20, "the client's line for /fail-1")[0]
    assert failed["response_code"] == 503 and failed["response_flags"] == "FI"
    assert not _logged(mesh, back, "/fail-1")  # aborted in the client's sidecar: never reached back


def test_disabled_for_one_workload(mesh: LocalMesh, client: WorkloadProcess, back: WorkloadProcess) -> None:
    mesh.apply(_client_telemetry("{disabled: true}"))
    poll(lambda: not _access_logs(client), 20, "access logs off on the client")
    assert _access_logs(back), "the Telemetry selects the client only"
    assert _get(client, "/quiet-1") == 200
    poll(lambda: _logged(mesh, back, "/quiet-1"), 20, "the backend still logs")
    mesh.apply(_client_telemetry("{disabled: false}"))
    poll(lambda: _access_logs(client), 20, "access logs back on the client")
    assert _get(client, "/loud-1") == 200
    poll(lambda: _logged(mesh, client, "/loud-1"), 20, "the client's line for /loud-1")
    assert not _logged(mesh, client, "/quiet-1")


def test_filter_keeps_only_errors(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(_client_telemetry("{filter: {expression: 'response.code >= 400'}}"))
    poll(lambda: any("filter" in a for a in _access_logs(client)), 20, "the CEL filter on the client")
    assert _get(client, "/ok-filtered") == 200
    assert _get(client, "/fail-filtered") == 503
    line = poll(lambda: _logged(mesh, client, "/fail-filtered"), 20, "the failed request logged")[0]
    assert line["response_flags"] == "FI"
    assert not _logged(mesh, client, "/ok-filtered")


def test_bad_filter_is_rejected_and_changes_nothing(mesh: LocalMesh, client: WorkloadProcess) -> None:
    r = mesh.cli("apply", "-f", "-", input=_client_telemetry("{filter: {expression: 'response.code >= (400'}}"))
    assert r.returncode != 0
    assert "spec.accessLogging[0].filter.expression" in r.stdout + r.stderr
    assert "unclosed '('" in r.stdout + r.stderr
    # The filter of the previous test is still in place.
    assert any(a.get("filter", {}).get("extension_filter", {}).get("typed_config", {}).get("expression") == "response.code >= 400"
               for a in _access_logs(client))
