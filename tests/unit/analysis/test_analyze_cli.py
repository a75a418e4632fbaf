"""`novamesh analyze`: exit codes by failure threshold, every output format, -L, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from novamesh.cli.analyze_cmds import EXIT_FOUND_ISSUES
from novamesh.cli.main import app

WARN_ONLY = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
"""

ERROR = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [reviews]
  http:
  - timeout: 2s
    route: [{destination: {host: reviews, subset: v9}}]
"""

CLEAN = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 2s
    route: [{destination: {host: reviews}}]
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("NOVAMESH_CONTROL_PLANE_URL", raising=False)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["analyze", *args])
    return result.exit_code, result.stdout, result.stderr


def write(name: str, text: str) -> str:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    Path(name).write_text(text)
    return name


def test_clean_files_exit_0() -> None:
    code, out, err = run("-f", write("mesh/vs.yaml", CLEAN))
    assert code == 0 and out == ""
    assert "No validation issues found" in err


@pytest.mark.parametrize(
    ("threshold", "expected"), [("error", 0), ("warning", EXIT_FOUND_ISSUES), ("info", EXIT_FOUND_ISSUES)]
)
def test_exit_code_follows_the_failure_threshold_for_warnings(threshold: str, expected: int) -> None:
    code, out, _ = run("-f", write("mesh/vs.yaml", WARN_ONLY), "--failure-threshold", threshold)
    assert code == expected
    assert "Warning [NM0001] (VirtualService default/reviews mesh/vs.yaml:" in out


def test_errors_exit_79_by_default_in_every_format() -> None:
    path = write("mesh/vs.yaml", ERROR)
    for fmt in ("log", "json", "yaml", "sarif"):
        code, _, err = run("-f", path, "-o", fmt)
        assert code == EXIT_FOUND_ISSUES, fmt
        assert "issues at level Error" in err


def test_directory_input_and_output_threshold() -> None:
    write("mesh/a.yaml", ERROR)
    write("mesh/b.yaml", WARN_ONLY.replace("name: reviews", "name: other").replace("[reviews]", "[ratings]"))
    code, out, _ = run("-f", "mesh", "-o", "json", "--output-threshold", "error")
    data = json.loads(out)
    assert code == EXIT_FOUND_ISSUES
    assert {(m["code"], m["origin"], m["file"]) for m in data} == {("IST0101", "VirtualService default/broken", "mesh/a.yaml")}


def test_yaml_output() -> None:
    _, out, _ = run("-f", write("vs.yaml", WARN_ONLY), "-o", "yaml")
    data = yaml.safe_load(out)
    assert data[0]["code"] == "NM0001" and data[0]["level"] == "Warning" and data[0]["line"] == 7


def test_sarif_output_is_valid_enough_for_code_scanning() -> None:
    code, out, _ = run("-f", write("mesh/vs.yaml", ERROR), "-o", "sarif")
    sarif = json.loads(out)
    assert code == EXIT_FOUND_ISSUES
    assert sarif["version"] == "2.1.0"
    run_ = sarif["runs"][0]
    rule_ids = {r["id"] for r in run_["tool"]["driver"]["rules"]}
    result = next(r for r in run_["results"] if r["ruleId"] == "IST0101")
    assert result["ruleId"] in rule_ids and result["level"] == "error"
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "mesh/vs.yaml"
    assert ERROR.splitlines()[location["region"]["startLine"] - 1].strip().startswith("route:")


def test_schema_errors_are_messages_not_a_crash() -> None:
    code, out, _ = run("-f", write("bad.yaml", CLEAN.replace("hosts:", "hostz:")))
    assert code == EXIT_FOUND_ISSUES
    assert "Error [IST0106] (VirtualService default/reviews bad.yaml:5) unknown field 'hostz'" in out


def test_list_analyzers() -> None:
    code, out, _ = run("-L")
    assert code == 0
    for name in ("IST0101 virtualservice.DestinationSubsetAnalyzer", "IST0130 virtualservice.UnreachableRulesAnalyzer",
                 "IST0173 destinationrule.SubsetSelectsWorkloadsAnalyzer (live only)", "NM0001 standards.RouteTimeoutAnalyzer"):
        assert f"* {name}\n" in out


def test_missing_path_exits_1_with_where_and_how() -> None:
    code, out, err = run("-f", "nope.yaml")
    assert code == 1 and out == ""
    assert "nope.yaml" in err and "no such file or directory" in err


def test_nothing_to_analyze() -> None:
    code, _, err = run()
    assert code == 1 and "pass -f FILE|DIR" in err


@pytest.mark.parametrize("args", [("-o", "xml"), ("--failure-threshold", "fatal")])
def test_bad_options_are_usage_errors(args: tuple[str, str]) -> None:
    code, out, err = run("-f", write("vs.yaml", CLEAN), *args)
    assert code == 2 and out == ""
    assert args[0] in err


def test_live_without_a_control_plane_exits_1() -> None:
    code, _, err = run("--live", "-c", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the control plane" in err
