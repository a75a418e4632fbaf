"""``python -m bench.report [DIR]``: Markdown tables from bench/results/*.json, or DIR/*.json (pasted into BENCHMARKS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import common

RESULTS = common.RESULTS


def _load(name: str) -> dict[str, Any] | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def dataplane(name: str) -> list[str]:
    d = _load(name)
    if d is None:
        return []
    out = [f"`{name}.json` ({d['machine']['date']}; requested {d.get('mode_requested', d.get('mode'))}, observed {d.get('mode_observed', '?')}; "
           f"{d['rounds']} rounds x {d['window_seconds']} s windows per mode and rate, {d['connections']} connections)", "",
           "| rate (req/s) | achieved direct / mesh | direct p50 / p90 / p99 (ms) | mesh p50 / p90 / p99 (ms) | added per hop p50 / p90 / p99 (ms) | sidecar CPU s per 1000 req (client / server) | sidecar vCPU at rate | sidecar RSS (MB) |",
           "|---|---|---|---|---|---|---|---|"]
    for rate, v in d["rates"].items():
        f = lambda x: " / ".join(f"{x[k]:.3f}" for k in ("p50", "p90", "p99"))  # noqa: E731
        out.append(f"| {rate} | {v['achieved_rps']['direct']:.0f} / {v['achieved_rps']['mesh']:.0f} | {f(v['direct_ms'])} | {f(v['mesh_ms'])} | "
                   f"{f(v['added_per_hop_ms'])} | {v['sidecar_cpu_s_per_1000']['client']:.3f} / {v['sidecar_cpu_s_per_1000']['server']:.3f} | "
                   f"{v['sidecar_vcpu_at_rate']['client']:.3f} / {v['sidecar_vcpu_at_rate']['server']:.3f} | {v['sidecar_rss_mb']['client']:.0f} / {v['sidecar_rss_mb']['server']:.0f} |")
    return out + bare(d)


def _pcts(x: dict[str, float]) -> str:
    return " / ".join(f"{x[k]:.3f}" for k in ("p50", "p90", "p99"))


def _pair(x: dict[str, float]) -> str:
    return f"{x['client']:.3f} / {x['server']:.3f}"


def bare(d: dict[str, Any]) -> list[str]:
    """The bare Envoy pairs of a dataplane result (none in results written before bench/bare.py)."""
    modes = d.get("bare_modes") or []
    if not modes:
        return []
    f, c = _pcts, _pair
    hs = d.get("bare_server_tls_handshakes", {})
    out = ["", f"Bare Envoy pair (bench/bare.py; stock Envoy, static config, router filter only; mesh compares with `{d.get('bare_match')}`; "
           f"TLS handshakes on the bare server: " + ", ".join(f"{b} {hs.get(b, '?')}" for b in modes) + ")", "",
           "| rate (req/s) | bare | achieved | bare p50 / p90 / p99 (ms) | bare added per hop p50 / p90 / p99 (ms) | mesh added per hop p50 / p90 / p99 (ms) | mesh − bare per hop p50 / p90 / p99 (ms) | CPU s per 1000 req, bare (client / server) | CPU s per 1000 req, sidecars (client / server) | agents CPU s per 1000 req (client / server) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for rate, v in d["rates"].items():
        for b in modes:
            x = v.get("bare", {}).get(b)
            if x is None:
                continue
            agents = c(v["agent_cpu_s_per_1000"]) if "agent_cpu_s_per_1000" in v else "—"
            errs = f" ({x['errors']} errors)" if x["errors"] else ""
            out.append(f"| {rate} | {b}{'' if b != d.get('bare_match') else ' *'} | {x['achieved_rps']:.0f}{errs} | {f(x['ms'])} | {f(x['added_per_hop_ms'])} | {f(v['added_per_hop_ms'])} | "
                       f"{f(x['mesh_minus_bare_per_hop_ms'])} | {c(x['cpu_s_per_1000'])} | {c(v['sidecar_cpu_s_per_1000'])} | {agents} |")
    return out


def sidecar_rss() -> list[str]:
    d = _load("sidecar_rss")
    if d is None:
        return []
    out = [f"`sidecar_rss.json` ({d['machine']['date']})", "", "| services | RSS unscoped (MB) | clusters | RSS with Sidecar egress `./svc-0` (MB) | clusters |", "|---|---|---|---|---|"]
    for u, s in zip(d["unscoped"], d["scoped"]):
        out.append(f"| {u['services']} | {u['rss_mb']:.1f} | {u['clusters']} | {s['rss_mb']:.1f} | {s['clusters']} |")
    return out


def _size(p: Path) -> tuple[int, int, int]:
    n, m = (int(x) for x in p.stem.split("-")[1].split("x"))
    return m, n, p.stem.endswith("-ns")


def ads() -> list[str]:
    files = [p for p in [*RESULTS.glob("ads_load-*.json"), *RESULTS.glob("large/ads_load-*.json")] if p.stem != "ads_load-ns"]
    rows = sorted(files, key=_size)
    out = ["| proxies x services (proxy classes) | initial sync (s) | change: REST apply (ms) | change→last ACK p50 / p99 / total (ms) | translations per change | bytes per change (MB) | CP CPU per change (s) | endpoint join→last ACK p50 / p99 / total (ms) | endpoint join bytes (MB) | CP RSS synced / peak (MB) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    churn = ["| proxies x services (proxy classes) | rate (events/s) | events | generator max lag (s) | CP vCPU during churn | translations | bytes sent (MB) | settle after last event (ms) |", "|---|---|---|---|---|---|---|---|"]
    for p in rows:
        r = json.loads(p.read_text())
        c, e = r["config_change"][-1], r["endpoint_join"][-1]
        classes = r["classes"] if r.get("namespaces") else 1
        out.append(f"| {r['proxies']} x {r['services']} ({classes}) | {r['initial_sync_s']:.1f} | {c['api_call_ms']:.0f} | {c['last_ack_ms']['p50']:.0f} / {c['last_ack_ms']['p99']:.0f} / {c['total_ms']:.0f} | "
                   f"{c['translations']} | {c['bytes_sent'] / 1e6:.1f} | {c['cp_cpu_s']:.2f} | {e['last_ack_ms']['p50']:.0f} / {e['last_ack_ms']['p99']:.0f} / {e['total_ms']:.0f} | "
                   f"{e['bytes_sent'] / 1e6:.2f} | {r['cp_rss_mb_synced']:.0f} / {r['cp_rss_mb_peak']:.0f} |")
        ch = r["churn"]
        churn.append(f"| {r['proxies']} x {r['services']} ({classes}) | {ch['rate_per_s']:.0f} | {ch['events']} | {ch['max_behind_schedule_s']:.2f} | {ch['cp_vcpu']:.2f} | {ch['translations']} | "
                     f"{ch['bytes_sent'] / 1e6:.1f} | {ch['settle_after_last_event_ms']:.0f} |")
    return out + [""] + churn


def ca() -> list[str]:
    d = _load("ca")
    if d is None:
        return []
    f = d["first_certificates"]
    out = ["| CA key | certificates per CPU second (one core) |", "|---|---|"]
    out += [f"| {s['key_type']} | {s['per_cpu_second']:.0f} |" for s in d["sign"]]
    out += ["", f"{f['workloads']} workloads, concurrency {f['concurrency']}: all first certificates in {f['total_s']:.2f} s "
            f"({f['per_second']:.0f}/s; per workload p50 {f['latency_ms']['p50']:.0f} ms, p99 {f['latency_ms']['p99']:.0f} ms; "
            f"control-plane CPU {f['cp_cpu_s']:.2f} s, RSS {f['cp_rss_mb']:.0f} MB; minting the tokens through REST took {f['token_mint_s']:.2f} s)."]
    return out


def startup() -> list[str]:
    d = _load("startup")
    if d is None:
        return []
    return [f"median {d['median_s']:.2f} s (min {d['min_s']:.2f}, max {d['max_s']:.2f}; samples " + ", ".join(f"{x:.2f}" for x in d["samples_s"]) + ")"]


def portmux() -> list[str]:
    d = _load("portmux")
    if d is None:
        return []
    med = d["cpu_s_median"]
    return [f"`portmux.json` ({d['machine']['date']}): {d['megabytes']} MB one way and {d['messages']} round trips of {d['message_bytes']} bytes, "
            f"median of {d['rounds']} runs each. Bulk: {med['bulk']['direct']:.3f} CPU s direct, {med['bulk']['router']:.3f} through the router; "
            f"round trips: {med['round_trips']['direct']:.3f} / {med['round_trips']['router']:.3f} CPU s. The router costs "
            f"**{d['router_cpu_ms_per_mb']:.2f} CPU ms per MB** and **{d['router_cpu_us_per_round_trip']:.1f} CPU µs per round trip**."]


def main(argv: list[str] | None = None) -> None:
    global RESULTS
    args = sys.argv[1:] if argv is None else argv
    if args:
        RESULTS = Path(args[0])
    extra = sorted(p.stem for p in RESULTS.glob("dataplane*.json")
                   if p.stem not in ("dataplane", "dataplane-strict", "dataplane-plaintext", "dataplane-notelemetry"))
    for title, lines in (("dataplane", dataplane("dataplane")), ("dataplane strict", dataplane("dataplane-strict")),
                         ("dataplane plaintext", dataplane("dataplane-plaintext")), ("dataplane without metrics", dataplane("dataplane-notelemetry")),
                         *((name, dataplane(name)) for name in extra),
                         ("sidecar_rss", sidecar_rss()), ("ads", ads()), ("portmux", portmux()), ("ca", ca()), ("startup", startup())):
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
