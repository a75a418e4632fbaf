"""Guarded apply (refuse what Envoy would reject, before storing), dry-run analysis, and the
automatic rollback on NACK. The guard runs the real ``envoy --mode validate`` unless a test
passes a fake validator to see a particular branch."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from novamesh.api.app import create_app
from novamesh.controlplane.autorollback import AUTHOR, AutoRollback
from novamesh.controlplane.guard import GUARD_CODE, UNAVAILABLE_CODE, ApplyGuard, envoy_reason, guarded
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, EnvoyError
from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.settings import Settings
from novamesh.store import SqliteStore
from novamesh.testing.clock import ManualClock
from novamesh.translate import T
from novamesh.xds.server import TypeState

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""
GOOD = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"""
# Valid RE2, but its program is bigger than Envoy's limit (100): only Envoy says no.
BAD = GOOD.replace("uri: {prefix: /api}", "uri: {regex: '/(a|b){300}'}")
OTHER = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
"""


def _mesh(tmp_path: Path, clock: ManualClock | None = None, **settings: Any) -> Mesh:
    s = Settings(data_dir=str(tmp_path)).replace(**settings)
    kw: dict[str, Any] = {"clock": clock} if clock is not None else {}
    mesh = Mesh(s, SqliteStore(tmp_path / "store.db", **kw), **kw)
    for svc, version in (("reviews", "v1"), ("reviews", "v2"), ("ratings", "v1")):
        mesh.registry.register({"service": svc, "version": version, "ports": [{"number": 9080}], "ready": True})
    return mesh


def _doc(text: str, file: str = "vs.yaml") -> list[dict[str, str]]:
    return [{"file": file, "content": text}]


def _stored(mesh: Mesh) -> dict[Any, Any]:
    return {o.key: o.manifest for o in mesh.store.list()}


def test_envoy_rejection_is_refused_with_the_field_and_envoys_reason(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    mesh.apply(_doc(DR, "dr.yaml"))
    before = (mesh.store.current_revision(), _stored(mesh))
    with pytest.raises(ConfigError) as info:
        mesh.apply(_doc(BAD))
    exc = info.value
    assert "guarded apply refused" in exc.summary
    v = exc.violations[0]
    assert v.code == GUARD_CODE
    assert (v.kind, v.namespace, v.name, v.path) == ("VirtualService", "default", "reviews", "spec.http[0]")
    assert v.file == "vs.yaml"
    assert "program size" in v.message and "/(a|b){300}" in v.message
    assert "guarded_apply=false" in v.hint
    assert (mesh.store.current_revision(), _stored(mesh)) == before
    assert ("VirtualService", "default", "reviews") not in mesh.resources


def test_good_config_passes_and_verdicts_are_cached(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    assert mesh.apply(_doc(DR + "---\n" + GOOD)).revision == 1
    runs = mesh.guard.envoy_runs
    assert runs >= 1
    mesh.apply(_doc(GOOD.replace("/api", "/v2")))
    after_change = mesh.guard.envoy_runs
    assert after_change > runs  # a new translation is validated
    mesh.apply(_doc(GOOD))  # back to a translation already validated: no Envoy run
    assert mesh.guard.envoy_runs == after_change
    mesh.apply(_doc(GOOD))  # unchanged: nothing to check
    assert mesh.guard.envoy_runs == after_change and mesh.revision == 3


def test_guard_off_stores_what_envoy_would_reject(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, guarded_apply=False)
    assert mesh.apply(_doc(DR + "---\n" + BAD)).revision == 1
    assert mesh.guard.envoy_runs == 0


def test_existing_breakage_does_not_block_unrelated_changes(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, guarded_apply=False)
    mesh.apply(_doc(DR + "---\n" + BAD))  # stored while the guard was off
    mesh.guard.settings = mesh.settings.replace(guarded_apply=True)
    assert mesh.apply(_doc(OTHER)).revision == 2  # not its fault: allowed
    assert mesh.apply(_doc(GOOD)).revision == 3  # the fix is allowed too
    with pytest.raises(ConfigError):  # and re-breaking it is refused again
        mesh.apply(_doc(BAD))


def test_rollback_to_a_revision_envoy_rejects_is_refused(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, guarded_apply=False)
    mesh.apply(_doc(DR + "---\n" + BAD))  # 1
    mesh.apply(_doc(GOOD))  # 2
    mesh.guard.settings = mesh.settings.replace(guarded_apply=True)
    before = _stored(mesh)
    dry = mesh.rollback(1, dry_run=True)
    assert dry.guard is not None and dry.guard["ok"] is False
    with pytest.raises(ConfigError) as info:
        mesh.rollback(1)
    assert info.value.violations[0].code == GUARD_CODE
    assert info.value.violations[0].path == "spec.http[0]"
    assert mesh.store.current_revision() == 2 and _stored(mesh) == before


def test_restore_of_a_config_envoy_rejects_is_refused(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    mesh.apply(_doc(DR + "---\n" + GOOD))
    scratch = _mesh(tmp_path / "scratch", guarded_apply=False)
    scratch.apply(_doc(DR + "---\n" + BAD))
    manifests = [r.manifest for r in scratch.list()]
    with pytest.raises(ConfigError) as info:
        mesh.replace_all(manifests)
    assert info.value.violations[0].code == GUARD_CODE
    assert mesh.store.current_revision() == 1
    assert mesh.replace_all(manifests, dry_run=True).guard["ok"] is False  # type: ignore[index]


def test_delete_is_guarded(tmp_path: Path) -> None:
    # A fake Envoy that insists on the v1 subset cluster: deleting what defines it is refused.
    def validator(bootstrap: dict[str, Any]) -> str:
        return "" if "|v1|" in json.dumps(bootstrap) else "cluster 'outbound|9080|v1|reviews' is required here"

    mesh = _mesh(tmp_path)
    mesh.guard = ApplyGuard(mesh.settings, validator=validator)
    mesh.apply(_doc(DR + "---\n" + GOOD))
    with pytest.raises(ConfigError) as info:
        mesh.delete([("VirtualService", "default", "reviews"), ("DestinationRule", "default", "reviews")])
    assert "is required here" in info.value.violations[0].message
    assert len(mesh.store.list()) == 2


def test_check_that_cannot_run_refuses_clearly(tmp_path: Path) -> None:
    def broken(_: dict[str, Any]) -> str:
        raise EnvoyError("no envoy binary found")

    mesh = _mesh(tmp_path)
    mesh.guard = ApplyGuard(mesh.settings, validator=broken)
    with pytest.raises(ConfigError) as info:
        mesh.apply(_doc(DR))
    v = info.value.violations[0]
    assert v.code == UNAVAILABLE_CODE and "no envoy binary" in v.message and "guarded_apply=false" in v.hint
    assert mesh.store.list() == []


def test_translation_crash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import novamesh.controlplane.guard as guard_module

    mesh = _mesh(tmp_path)

    real = guard_module.translate_class

    def crash(snapshot: Any, *rest: Any) -> Any:
        if snapshot.virtual_services:  # only the candidate has one
            raise RuntimeError("translator bug")
        return real(snapshot, *rest)

    mesh.apply(_doc(DR))
    monkeypatch.setattr(guard_module, "translate_class", crash)
    with pytest.raises(ConfigError) as info:
        mesh.apply(_doc(GOOD))
    assert "translator bug" in info.value.violations[0].message
    assert mesh.revision == 1


def test_connected_proxy_classes_and_gateways_are_checked(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    seen: list[str] = []
    mesh.guard = ApplyGuard(mesh.settings, validator=lambda b: seen.append("x") or "")
    gw = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    result = mesh.apply(_doc(DR + "---\n" + gw), dry_run=True)
    assert result.guard is not None
    checked = result.guard["checked"]
    assert "sidecar in namespace default (synthetic)" in checked
    assert any(c.startswith("gateway selected by Gateway default/edge") for c in checked)
    assert seen  # the (fake) Envoy was asked
    mesh.apply(_doc(DR))
    from novamesh.config.loader import parse_documents

    other_ns = Proxy(id="p1", namespace="shop", service="cart", address="127.1.2.3")
    vs = {r.key: r for r in parse_documents(OTHER, file="o.yaml")}
    report = mesh.guard.check(current=mesh.resources, candidate={**mesh.resources, **vs}, changed=list(vs),
                              workloads=mesh.registry.workloads(), proxies=[other_ns], revision=2)
    assert report.checked == ["sidecar shop/cart (proxy p1)", "sidecar in namespace default (synthetic)"]
    unchanged = mesh.guard.check(current=mesh.resources, candidate=dict(mesh.resources), changed=list(mesh.resources),
                                 workloads=[], proxies=[other_ns], revision=2)
    assert unchanged.note == "nothing changes" and unchanged.checked == []


def test_dry_run_reports_diff_analysis_and_guard_without_storing(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    mesh.apply(_doc(DR))
    result = mesh.apply(_doc(BAD), dry_run=True)
    assert result.dry_run and "+kind: VirtualService" in result.diff
    assert result.guard is not None and result.guard["ok"] is False
    assert result.guard["violations"][0]["code"] == GUARD_CODE
    assert result.analysis is not None
    codes = {m["code"] for m in result.analysis}
    assert "NM0001" in codes  # the routes have no timeout (a mesh-standard analyzer)
    assert mesh.revision == 1 and len(mesh.store.list()) == 1
    ok = mesh.apply(_doc(GOOD), dry_run=True).to_dict()
    assert ok["guard"]["ok"] is True and isinstance(ok["analysis"], list)


def test_rest_api_dry_run_and_refusal(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    api = TestClient(create_app(mesh))
    assert api.post("/api/v1/apply", json={"documents": _doc(DR)}).status_code == 200
    dry = api.post("/api/v1/apply", json={"documents": _doc(BAD), "dry_run": True})
    assert dry.status_code == 200
    body = dry.json()
    assert body["guard"]["ok"] is False and "analysis" in body
    refused = api.post("/api/v1/apply", json={"documents": _doc(BAD)})
    assert refused.status_code == 422
    assert refused.json()["violations"][0]["code"] == GUARD_CODE
    assert api.get("/healthz").json()["revision"] == 1


async def test_guarded_runs_envoy_in_a_worker_thread(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    threads: list[int] = []

    def validator(bootstrap: dict[str, Any]) -> str:
        threads.append(threading.get_ident())
        return "regex '/(a|b){300}' RE2 program size of 905 > max program size of 100" if "(a|b)" in json.dumps(bootstrap) else ""

    mesh.guard = ApplyGuard(mesh.settings, validator=validator)
    result = await guarded(mesh, lambda: mesh.apply(_doc(DR + "---\n" + GOOD)))
    assert result.revision == 1
    assert threads and threading.get_ident() not in threads
    with pytest.raises(ConfigError) as info:
        await guarded(mesh, lambda: mesh.apply(_doc(BAD)))
    assert info.value.violations[0].path == "spec.http[0]"
    assert threading.get_ident() not in threads and mesh.revision == 1


def test_envoy_reason_extracts_the_message() -> None:
    out = ("[2026-11-25 03:43:43.111][26505][critical][main] [source/server/config_validation/server.cc:76] "
           "error initializing configuration 'b.json': regex '/(a|b){300}' RE2 program size of 905 > max program size of 100\n")
    assert envoy_reason(out) == "regex '/(a|b){300}' RE2 program size of 905 > max program size of 100"
    assert envoy_reason("") .startswith("envoy exited")
    assert envoy_reason("[x][critical][main] [f.cc:1] something broke") == "something broke"


# -- automatic rollback ------------------------------------------------------------------------
def _nack(revision: int, error: str = "regex too big") -> TypeState:
    return dataclasses.replace(TypeState(), sent_revision=revision, nack_error=error)


async def test_auto_rollback_rolls_back_once_and_never_loops(tmp_path: Path) -> None:
    clock = ManualClock()
    mesh = _mesh(tmp_path, clock, guarded_apply=False, auto_rollback_on_nack=True)
    auto = AutoRollback(mesh, clock)
    auto.attach()
    assert mesh.xds.on_nack == auto.on_nack
    proxy = Proxy(id="client-1", service="client")
    mesh.apply(_doc(DR + "---\n" + GOOD))  # 1
    mesh.apply(_doc(BAD))  # 2
    auto.on_nack(proxy, T.ROUTE, _nack(1))  # an older revision: ignored
    auto.on_nack(proxy, T.ROUTE, _nack(2))
    auto.on_nack(proxy, T.LISTENER, _nack(2))  # same revision again: once only
    assert auto._queue.qsize() == 1
    result = await auto.handle(auto._queue.get_nowait())
    assert result is not None and result.revision == 3
    top = mesh.history(limit=1)[0]
    assert top.author == AUTHOR
    assert top.message == "automatic rollback: client-1 rejected RDS: regex too big"
    assert mesh.store.state_at(3) == mesh.store.state_at(1)
    # The rollback itself NACKed (e.g. a translation bug): no second rollback.
    auto.on_nack(proxy, T.ROUTE, _nack(3))
    assert await auto.handle(auto._queue.get_nowait()) is None
    assert mesh.revision == 3 and len(auto.performed) == 1


async def test_auto_rollback_off_stale_or_old_revisions_do_nothing(tmp_path: Path) -> None:
    clock = ManualClock()
    mesh = _mesh(tmp_path, clock, guarded_apply=False)  # auto_rollback_on_nack defaults to off
    auto = AutoRollback(mesh, clock)
    proxy = Proxy(id="client-1")
    mesh.apply(_doc(DR + "---\n" + GOOD))
    mesh.apply(_doc(BAD))
    auto.on_nack(proxy, T.ROUTE, _nack(2))
    assert auto._queue.qsize() == 0
    mesh.settings = mesh.settings.replace(auto_rollback_on_nack=True)
    clock.advance(mesh.settings.auto_rollback_window + 1)  # revision 2 is old now
    auto.on_nack(proxy, T.ROUTE, _nack(2))
    assert await auto.handle(auto._queue.get_nowait()) is None
    assert mesh.revision == 2
    # A NACK queued for a revision that has been superseded meanwhile does nothing either.
    mesh.apply(_doc(GOOD.replace("/api", "/v3")))  # 3
    auto.on_nack(proxy, T.ROUTE, _nack(3))
    mesh.apply(_doc(GOOD))  # 4, before the queue is processed
    assert await auto.handle(auto._queue.get_nowait()) is None
    assert mesh.revision == 4


def test_env_settings_parse_booleans() -> None:
    s = Settings.from_env({"NOVAMESH_GUARDED_APPLY": "false", "NOVAMESH_AUTO_ROLLBACK_ON_NACK": "1"})
    assert s.guarded_apply is False and s.auto_rollback_on_nack is True
    assert Settings().guarded_apply is True and Settings().auto_rollback_on_nack is False


class _Api:
    """ApiClient stand-in that sends the CLI's requests to the app in-process."""

    def __init__(self, api: TestClient) -> None:
        self.api = api

    def post(self, path: str, body: dict[str, Any]) -> Any:
        from novamesh.errors import Violation

        resp = self.api.post(path, json=body)
        if resp.status_code == 422:
            data = resp.json()
            raise ConfigError([Violation.from_dict(v) for v in data["violations"]], summary=data["message"].split(":")[0])
        return resp.json()


def test_cli_dry_run_prints_analysis_and_guard_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import novamesh.cli.main as cli_main

    mesh = _mesh(tmp_path)
    mesh.apply(_doc(DR))
    monkeypatch.setattr(cli_main, "client_for", lambda _url: _Api(TestClient(create_app(mesh))))
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "good.yaml").write_text(GOOD)
    runner = CliRunner()
    bad = runner.invoke(cli_main.app, ["apply", "-f", str(tmp_path / "bad.yaml"), "--dry-run"])
    assert bad.exit_code == 1
    text = bad.output
    assert "+kind: VirtualService" in text and "(dry run)" in text
    assert "analysis (live config + these files):" in text and "[NM0001]" in text
    assert "would be REFUSED" in text and "program size" in text and "[NM0100]" in text
    assert text.index("+kind: VirtualService") < text.index("analysis (") < text.index("would be REFUSED")
    good = runner.invoke(cli_main.app, ["apply", "-f", str(tmp_path / "good.yaml"), "--dry-run"])
    assert good.exit_code == 0, good.output
    assert "guarded apply: Envoy accepts the result (checked 1 proxy class(es)" in good.output
    assert mesh.revision == 1
    refused = runner.invoke(cli_main.app, ["apply", "-f", str(tmp_path / "bad.yaml")])
    assert refused.exit_code == 1 and "program size" in refused.output and mesh.revision == 1


async def test_guarded_reports_a_check_that_cannot_run(tmp_path: Path) -> None:
    def broken(_: dict[str, Any]) -> str:
        raise EnvoyError("envoy --mode validate did not finish within guarded_apply_timeout=30.0s")

    mesh = _mesh(tmp_path)
    mesh.guard = ApplyGuard(mesh.settings, validator=broken)
    with pytest.raises(ConfigError) as info:
        await guarded(mesh, lambda: mesh.apply(_doc(DR)))
    assert info.value.violations[0].code == UNAVAILABLE_CODE and "did not finish" in info.value.violations[0].message
    assert mesh.store.list() == []
    dry = await guarded(mesh, lambda: mesh.apply(_doc(DR), dry_run=True))
    assert dry.guard is not None and dry.guard["ok"] is False
    assert dry.guard["violations"][0]["code"] == UNAVAILABLE_CODE
    assert mesh.store.list() == []


# -- incremental checks ------------------------------------------------------------------------
def _bootstrap_names(bootstrap: dict[str, Any]) -> tuple[set[str], set[str]]:
    static = bootstrap["static_resources"]
    return {c["name"] for c in static["clusters"]}, {ln["name"] for ln in static["listeners"]}


def test_a_change_is_validated_by_what_it_makes_new(tmp_path: Path) -> None:
    # Real Envoy, and a record of what it was given: after the first apply, Envoy sees only
    # the clusters a DestinationRule change alters, and listeners only when routes change.
    mesh = _mesh(tmp_path)
    real = ApplyGuard(mesh.settings)
    seen: list[dict[str, Any]] = []
    mesh.guard = ApplyGuard(mesh.settings, validator=lambda b: seen.append(b) or real._validate(b))
    mesh.apply(_doc(DR + "---\n" + GOOD))
    first_clusters, first_listeners = _bootstrap_names(seen[-1])
    assert "outbound|9080|v1|reviews.default.svc.cluster.local" in first_clusters and first_listeners
    seen.clear()
    mesh.apply(_doc(DR.replace("subsets:", "trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}\n  subsets:")))
    assert len(seen) == 1
    clusters, listeners = _bootstrap_names(seen[0])
    assert clusters and clusters <= {c for c in first_clusters if c.endswith("reviews.default.svc.cluster.local")}
    assert listeners == set()
    seen.clear()
    mesh.apply(_doc(GOOD.replace("/api", "/v3")))  # a route change: the listeners come along
    assert len(seen) == 1 and _bootstrap_names(seen[0])[1] == first_listeners
    seen.clear()
    with pytest.raises(ConfigError) as info:  # Envoy's refusal still comes through, with its field
        mesh.apply(_doc(BAD))
    assert "program size" in info.value.violations[0].message and info.value.violations[0].path == "spec.http[0]"
    assert mesh.revision == 3


def test_a_subset_refusal_is_confirmed_against_everything(tmp_path: Path) -> None:
    # A (fake) Envoy that refuses any bootstrap without the listeners: the subset of a
    # DestinationRule change fails, the whole translation passes, so the change is stored.
    mesh = _mesh(tmp_path)
    seen: list[dict[str, Any]] = []

    def validator(bootstrap: dict[str, Any]) -> str:
        seen.append(bootstrap)
        return "" if bootstrap["static_resources"]["listeners"] else "a listener is required"

    mesh.guard = ApplyGuard(mesh.settings, validator=validator)
    mesh.apply(_doc(OTHER))
    seen.clear()
    mesh.apply(_doc(DR))
    assert [bool(b["static_resources"]["listeners"]) for b in seen] == [False, True]
    assert mesh.revision == 2


async def test_deferred_checks_translate_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import novamesh.controlplane.guard as guard_module

    mesh = _mesh(tmp_path)
    mesh.guard = ApplyGuard(mesh.settings, validator=lambda b: "")
    calls: list[int] = []
    real = guard_module.translate_class
    monkeypatch.setattr(guard_module, "translate_class", lambda *a: calls.append(1) or real(*a))
    await guarded(mesh, lambda: mesh.apply(_doc(DR)))
    assert len(calls) == 1  # the re-run after Envoy's verdict reused the translation
    assert mesh.revision == 1


def test_the_guard_checks_what_the_control_plane_pushes(tmp_path: Path) -> None:
    # Mesh-wide settings (here path normalization) reach the guard's translation as they reach
    # the proxies': the listener Envoy validates is the listener a sidecar receives.
    mesh = _mesh(tmp_path, path_normalization="NONE")
    seen: list[dict[str, Any]] = []
    mesh.guard = ApplyGuard(mesh.settings, validator=lambda b: seen.append(b) or "")
    policy = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
"""
    mesh.apply(_doc(policy))
    proxy = Proxy(id="reviews-1", service="reviews", address="127.1.0.9", labels=(("app", "reviews"),),
                  ports=(ProxyPort(9080, app_port=19080),))
    mesh.push()
    pushed = mesh.cache.raw_for(proxy)[T.LISTENER]
    mesh.guard.check(current={}, candidate=dict(mesh.resources), changed=list(mesh.resources),
                     workloads=mesh.registry.workloads(), proxies=[proxy], revision=mesh.revision)
    checked = {ln["name"]: ln for ln in seen[-1]["static_resources"]["listeners"]}
    assert pushed and set(pushed) <= set(checked)
    for name, listener in pushed.items():
        hcm = [f["typed_config"] for ch in listener.get("filter_chains", []) for f in ch["filters"]]
        got = [f["typed_config"] for ch in checked[name].get("filter_chains", []) for f in ch["filters"]]
        fields = ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action")
        assert [[h.get(f) for f in fields] for h in hcm] == [[g.get(f) for f in fields] for g in got]
    assert any(name.startswith("inbound|9080") for name in pushed)
