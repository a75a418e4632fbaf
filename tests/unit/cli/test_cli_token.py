"""`novamesh token create`: required identity flags, and --ttl left to the control plane."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from novamesh.cli import security_cmds
from novamesh.cli.main import app


class _Recorder:
    """Stands in for the REST client: records what the CLI posts, answers like the control plane."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.posted.append((path, body))
        return {"token": "nmt_x", "identity": f"spiffe://cluster.local/ns/{body['namespace']}/sa/{body['service_account']}",
                "expires_at": 0.0, "uses": body["uses"]}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    recorder = _Recorder()
    monkeypatch.setattr(security_cmds, "client_for", lambda url: recorder)
    return recorder


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["token", "create", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(("args", "missing"), [
    (["--service-account", "api"], "--namespace"),
    (["--namespace", "payments"], "--service-account"),
    ([], "--namespace"),
])
def test_identity_flags_are_required(api: _Recorder, args: list[str], missing: str) -> None:
    code, text = run(*args)
    assert code == 2 and "Missing option" in text and missing in text
    assert api.posted == []  # nothing minted


def test_no_ttl_is_sent_so_the_control_plane_applies_token_ttl(api: _Recorder) -> None:
    code, text = run("--namespace", "payments", "--service-account", "api", "--uses", "2")
    assert code == 0, text
    assert api.posted == [("/api/v1/tokens", {"namespace": "payments", "service_account": "api", "uses": 2})]


def test_explicit_ttl_is_sent_in_seconds(api: _Recorder) -> None:
    assert run("-n", "payments", "--service-account", "api", "--ttl", "15m")[0] == 0
    assert api.posted[0][1]["ttl"] == 900.0
    code, text = run("-n", "payments", "--service-account", "api", "--ttl", "soon")
    assert code == 1 and "--ttl 'soon' is not a duration" in text and len(api.posted) == 1
