"""Smoke test of the benchmark harness (bench/): each benchmark at a tiny size, so it does not
rot. No timing assertions: only that each run completes and writes sane JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import ads_load, ca_bench, dataplane, portmux, sidecar_rss, startup  # noqa: E402
from bench.common import pct  # noqa: E402

pytestmark = pytest.mark.e2e


def _load(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    assert data["machine"]["nproc"] >= 1
    return dict(data)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (pct(values, 50), pct(values, 99), pct(values, 100)) == (50.0, 99.0, 100.0)


def test_unknown_benchmark_is_refused_with_the_list() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "nope"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "unknown benchmark 'nope'" in r.stderr and "dataplane" in r.stderr


def test_dataplane_tiny(tmp_path: Path) -> None:
    dataplane.main(["--rates", "50", "--seconds", "0.5", "--rounds", "2", "--out", str(tmp_path)])
    d = _load(tmp_path / "dataplane.json")
    r = d["rates"]["50"]  # type: ignore[index]
    assert d["mode_requested"] == "default" and d["mode_observed"] in ("plaintext", "mtls")
    assert r["errors"] == {"direct": 0, "mesh": 0}
    assert r["direct_ms"]["n"] > 0 and r["mesh_ms"]["n"] > 0
    assert r["sidecar_rss_mb"]["client"] > 0
    # The bare stock-Envoy pairs ran too, and the TLS one really spoke TLS.
    for mode in ("plain", "tls"):
        assert r["bare"][mode]["errors"] == 0 and r["bare"][mode]["ms"]["n"] > 0
    assert d["bare_server_tls_handshakes"]["tls"] > 0 and d["bare_server_tls_handshakes"]["plain"] == 0  # type: ignore[index]


def test_sidecar_rss_tiny(tmp_path: Path) -> None:
    sidecar_rss.main(["--steps", "2", "--out", str(tmp_path)])
    d = _load(tmp_path / "sidecar_rss.json")
    unscoped, scoped = d["unscoped"], d["scoped"]  # type: ignore[index]
    assert [row["services"] for row in unscoped] == [0, 2]
    # Scoping to svc-0 keeps svc-1's cluster out of the sidecar.
    assert scoped[-1]["clusters"] < unscoped[-1]["clusters"]


def test_ads_load_tiny(tmp_path: Path) -> None:
    ads_load.main(["--sizes", "4x3", "--classes", "2", "--churn-rate", "4", "--churn-seconds", "0.5", "--quiet", "0.5", "--out", str(tmp_path)])
    run = _load(tmp_path / "ads_load.json")["runs"][0]  # type: ignore[index]
    assert run["all_synced"] is True
    change = run["config_change"][-1]
    assert change["proxies_updated"] == 4
    assert 1 <= change["translations"] <= 2  # follows proxy classes, not the 4 proxies
    assert change["bytes_sent"] > 0


def test_ca_tiny(tmp_path: Path) -> None:
    ca_bench.main(["--seconds", "0.1", "--workloads", "5", "--concurrency", "2", "--out", str(tmp_path)])
    d = _load(tmp_path / "ca.json")
    assert {s["key_type"] for s in d["sign"]} == {"ec-p256", "rsa-2048"}  # type: ignore[union-attr, index]
    assert d["first_certificates"]["latency_ms"]["n"] == 5  # type: ignore[index]


def test_startup_tiny(tmp_path: Path) -> None:
    startup.main(["--samples", "1", "--out", str(tmp_path)])
    assert len(_load(tmp_path / "startup.json")["samples_s"]) == 1  # type: ignore[arg-type]


def test_portmux_tiny(tmp_path: Path) -> None:
    portmux.main(["--megabytes", "1", "--messages", "20", "--rounds", "1", "--out", str(tmp_path)])
    d = _load(tmp_path / "portmux.json")
    med = d["cpu_s_median"]  # type: ignore[index]
    assert set(med) == {"bulk", "round_trips"} and all(v["router"] > 0 for v in med.values())
