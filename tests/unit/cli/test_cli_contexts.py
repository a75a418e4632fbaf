"""`novamesh context ...` and how the current context picks the control plane."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from novamesh.cli.common import client_for
from novamesh.cli.context_cmds import context_url, contexts_path
from novamesh.cli.main import app
from novamesh.errors import NotFoundError, NovameshError


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("NOVAMESH_CONTROL_PLANE_URL", raising=False)
    monkeypatch.delenv("NOVAMESH_CONTEXT", raising=False)
    return tmp_path / "cfg"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_add_use_list_current_delete(config_home: Path) -> None:
    assert run("context", "current")[0] == 1
    code, text = run("context", "add", "prod", "--control-plane", "http://cp1:15014,http://cp2:15014/", "--trust-domain", "prod.example")
    assert code == 0 and "added" in text and "current" in text  # the first context becomes current
    assert contexts_path() == config_home / "novamesh" / "contexts.yaml"
    stored = yaml.safe_load(contexts_path().read_text())
    assert stored == {"current": "prod", "contexts": {"prod": {"controlPlane": "http://cp1:15014,http://cp2:15014", "trustDomain": "prod.example"}}}
    assert run("context", "add", "local", "--control-plane", "http://127.0.0.1:15014")[0] == 0
    assert run("context", "current") == (0, "prod\n")
    assert run("context", "use", "local")[0] == 0
    assert run("context", "current") == (0, "local\n")
    code, text = run("context", "list")
    assert code == 0 and "prod" in text and "http://cp1:15014,http://cp2:15014" in text
    assert [line for line in text.splitlines() if line.strip().startswith("*")][0].split()[1] == "local"
    assert run("context", "delete", "local")[0] == 0
    assert run("context", "current")[0] == 1
    assert set(yaml.safe_load(contexts_path().read_text())["contexts"]) == {"prod"}


def test_bad_input_is_refused_and_changes_nothing() -> None:
    assert run("context", "add", "prod", "--control-plane", "http://cp1:15014")[0] == 0
    before = contexts_path().read_text()
    code, text = run("context", "add", "bad name", "--control-plane", "http://x:1")
    assert code == 1 and "not valid" in text
    code, text = run("context", "add", "x", "--control-plane", "cp1:15014")
    assert code == 1 and "is not http(s)://HOST[:PORT]" in text
    code, text = run("context", "use", "nope")
    assert code == 1 and "does not exist (known: prod)" in text
    assert run("context", "delete", "nope")[0] == 1
    assert contexts_path().read_text() == before


def test_broken_file_is_named() -> None:
    contexts_path().parent.mkdir(parents=True)
    contexts_path().write_text("contexts: [1, 2\n")
    with pytest.raises(NovameshError, match="contexts.yaml is not valid YAML"):
        context_url()


def test_client_for_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert client_for(None).base_url == "http://127.0.0.1:15014"  # no context: the default
    run("context", "add", "prod", "--control-plane", "http://cp1:15014,http://cp2:15014")
    run("context", "add", "dev", "--control-plane", "http://dev:15014")
    assert client_for(None).base_urls == ["http://cp1:15014", "http://cp2:15014"]
    assert client_for("http://flag:1").base_url == "http://flag:1"
    monkeypatch.setenv("NOVAMESH_CONTEXT", "dev")
    assert client_for(None).base_url == "http://dev:15014"
    monkeypatch.setenv("NOVAMESH_CONTEXT", "gone")
    with pytest.raises(NotFoundError, match="context 'gone' does not exist"):
        client_for(None)
