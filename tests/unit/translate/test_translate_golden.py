"""Golden tests: the translation of each scenario equals its file under tests/golden/.

Run with REFRESH_GOLDEN=1 to rewrite the files after an intended change, then review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from scenarios import all_scenarios

from novamesh.translate import SHORT_NAMES, TranslateOptions, class_key, consistency_errors, translate_class, translate_proxy
from novamesh.translate.protos import to_message

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
SCENARIOS = all_scenarios()


def _translate(name: str) -> dict[str, dict[str, object]]:
    snap, proxy = SCENARIOS[name]
    opts = TranslateOptions()
    res = translate_proxy(translate_class(snap, class_key(proxy), opts), proxy, opts)
    return {SHORT_NAMES[t]: v for t, v in res.items()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden(name: str) -> None:
    got = json.dumps(_translate(name), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{name}.json"
    if os.environ.get("REFRESH_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"no golden file {path}; run with REFRESH_GOLDEN=1 to create it"
    assert got == path.read_text(), f"translation of {name} changed; REFRESH_GOLDEN=1 rewrites {path}"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_consistent_and_parses(name: str) -> None:
    snap, proxy = SCENARIOS[name]
    opts = TranslateOptions()
    res = translate_proxy(translate_class(snap, class_key(proxy), opts), proxy, opts)
    assert consistency_errors(res) == []
    for type_url, resources in res.items():
        for resource in resources.values():
            to_message(type_url, resource)  # raises on a field Envoy's API does not have


def test_deterministic() -> None:
    assert _translate("canary_and_header") == _translate("canary_and_header")
