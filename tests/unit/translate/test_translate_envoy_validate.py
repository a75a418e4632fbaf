"""Every configuration generated for the scenarios passes `envoy --mode validate`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from scenarios import all_scenarios

from novamesh.agent.envoy import find_envoy
from novamesh.settings import Settings
from novamesh.translate import TranslateOptions, class_key, translate_class, translate_proxy
from novamesh.translate.static import static_bootstrap

SCENARIOS = all_scenarios()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_envoy_accepts(name: str, tmp_path: Path) -> None:
    snap, proxy = SCENARIOS[name]
    opts = TranslateOptions()
    res = translate_proxy(translate_class(snap, class_key(proxy), opts), proxy, opts)
    path = tmp_path / "static.json"
    path.write_text(json.dumps(static_bootstrap(res)))
    envoy = find_envoy(Settings())
    proc = subprocess.run([str(envoy), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_envoy_rejects_broken_config(tmp_path: Path) -> None:
    """The check itself can fail: a route to a regex Envoy refuses is caught."""
    snap, proxy = SCENARIOS["default_routes"]
    opts = TranslateOptions()
    res = translate_proxy(translate_class(snap, class_key(proxy), opts), proxy, opts)
    boot = static_bootstrap(res)
    vh = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = vh.get("route_config", {}).get("virtual_hosts", [{}])[0].get("routes")
    assert routes, "expected the outbound listener first"
    routes[0]["match"] = {"safe_regex": {"regex": "(a"}}
    path = tmp_path / "static.json"
    path.write_text(json.dumps(boot))
    proc = subprocess.run([str(find_envoy(Settings())), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
