"""History, diff and one-command rollback through the CLI, under continuous traffic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from novamesh.testing.load import Traffic, run_load
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

CONFIG = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("history"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.echo("reviews", version="v1")
        m.echo("reviews", version="v2")
        m.client("client")
        yield m
    finally:
        m.close()


def _only(client: WorkloadProcess, version: str) -> bool:
    res = run_load("http://reviews:9080/", count=10, proxy=client.proxy_url)
    return res.versions == Counter({f"reviews/{version}": 10})


def test_history_diff_and_rollback_under_traffic(mesh: LocalMesh) -> None:
    client = next(w for w in mesh.workloads if w.service == "client")
    (mesh.root / "v1.yaml").write_text(CONFIG.format(subset="v1"))
    (mesh.root / "v2.yaml").write_text(CONFIG.format(subset="v2"))
    assert mesh.cli("apply", "-f", str(mesh.root / "v1.yaml"), "-m", "stable").returncode == 0
    poll(lambda: _only(client, "v1"), 20, "v1 live")
    dry = mesh.cli("apply", "-f", str(mesh.root / "v2.yaml"), "--dry-run")
    assert dry.returncode == 0 and "+        subset: v2" in dry.stdout and "(dry run)" in dry.stdout
    assert mesh.cli("apply", "-f", str(mesh.root / "v2.yaml"), "-m", "bad release", "--author", "ci-bot").returncode == 0
    poll(lambda: _only(client, "v2"), 20, "v2 live")

    history = mesh.cli("history")
    assert history.returncode == 0 and "bad release" in history.stdout and "ci-bot" in history.stdout
    diff = mesh.cli("diff", "1", "2")
    assert "-        subset: v1" in diff.stdout and "+        subset: v2" in diff.stdout
    dr_history = mesh.cli("history", "dr/reviews").stdout  # revision 2 left the DestinationRule alone
    assert "stable" in dr_history and "bad release" not in dr_history

    with Traffic("http://reviews:9080/", proxy=client.proxy_url, rate=50) as traffic:
        poll(lambda: traffic.count >= 50, 20, "traffic flowing")
        rb = mesh.cli("rollback")
        assert rb.returncode == 0, rb.stderr
        assert "revision 3" in rb.stdout
        mark = traffic.now()
        poll(lambda: traffic.versions_since(mark).get("reviews/v1", 0) >= 20, 20, "rollback effective")
        settled = traffic.now()
        after = traffic.count
        poll(lambda: traffic.count >= after + 100, 30, "more traffic after the rollback")
    assert traffic.failures() == [], traffic.failures()[:5]
    assert set(traffic.versions_since(settled)) == {"reviews/v1"}
    top = mesh.cli("history", "--limit", "1").stdout
    assert "rollback to revision 1" in top
    assert httpx.get(f"{mesh.url}/api/v1/diff", params={"rev_from": 1, "rev_to": 3}).json()["diff"] == ""
