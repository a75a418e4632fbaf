"""Reading input for analysis (schema errors become IST0106, good documents still count, line
numbers point at fields), the runner (a broken analyzer is IST0001) and the output formats."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from novamesh.analysis import (
    CATALOGUE,
    Context,
    Level,
    Message,
    analyze,
    build_context,
    exceeds,
    live_resources,
    load_texts,
    render,
    to_sarif,
)
from novamesh.analysis.registry import Analyzer, all_analyzers

GOOD = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good}
spec:
  hosts: [reviews]
  http:
  - timeout: 1s
    route:
    - destination:
        host: reviews
        subset: v9
"""

BAD = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad}
spec:
  hosts: [x]
  http:
  - rout: []
"""


def test_bad_document_is_ist0106_and_good_neighbours_are_analyzed() -> None:
    resources, messages, _ = load_texts([("mesh.yaml", BAD + "---\n" + GOOD)])
    assert [r.name for r in resources] == ["good"]
    assert {(m.code, m.resource, m.file, m.line) for m in messages} == {
        ("IST0106", "VirtualService default/bad", "mesh.yaml", 7)
    }
    assert any("did you mean 'route'" in m.hint for m in messages)
    found = analyze(build_context(files=(resources, messages, {})))
    assert {(m.code, m.name) for m in found if m.level is Level.ERROR} == {("IST0106", "bad"), ("IST0101", "good")}


def test_message_line_is_the_line_of_the_field() -> None:
    text = BAD + "---\n" + GOOD
    found = [m for m in analyze(build_context(files=load_texts([("mesh.yaml", text)]))) if m.code == "IST0101"]
    lines = text.splitlines()
    assert len(found) == 1 and lines[found[0].line - 1].strip() == "subset: v9"  # type: ignore[operator]
    assert found[0].path == "spec.http[0].route[0].destination.subset"


def test_unparseable_yaml_is_one_ist0106_message() -> None:
    resources, messages, _ = load_texts([("broken.yaml", "a: [unclosed\n")])
    assert resources == [] and [m.code for m in messages] == ["IST0106"]
    assert messages[0].file == "broken.yaml" and messages[0].line is not None


def test_live_manifests_and_files_as_if_applied() -> None:
    live_vs = yaml.safe_load(GOOD.replace("subset: v9", "subset: v1"))
    files = load_texts([("fix.yaml", GOOD)])
    ctx = build_context(live=live_resources([live_vs]), files=files, workloads=[])
    # the file's version replaces the live one with the same key
    assert ctx.resources[("VirtualService", "default", "good")].source.file == "fix.yaml"
    broken_live = dict(live_vs, spec={"hosts": []})
    resources, messages = live_resources([broken_live])
    assert resources == [] and messages[0].code == "IST0106" and messages[0].file == ""


def test_a_failing_analyzer_is_reported_and_the_others_still_run() -> None:
    def boom(ctx: Context) -> Iterator[Message]:
        raise RuntimeError("kaput")

    broken = Analyzer("IST0109", "test.Broken", "raises", boom)
    ctx = build_context(files=load_texts([("a.yaml", GOOD)]))
    found = analyze(ctx, [broken, *all_analyzers()])
    internal = [m for m in found if m.code == "IST0001"]
    assert len(internal) == 1 and "test.Broken" in internal[0].text and "kaput" in internal[0].text
    assert any(m.code == "IST0101" for m in found)


def test_levels_and_threshold() -> None:
    assert Level.parse("Warning") is Level.WARNING
    with pytest.raises(ValueError, match="error, warning or info"):
        Level.parse("fatal")
    info = Message("NM0002", "x")
    warning = Message("NM0001", "y")
    assert not exceeds([info, warning], Level.ERROR)
    assert exceeds([info, warning], Level.WARNING)
    assert not exceeds([], Level.INFO)


def test_every_analyzer_code_is_catalogued_and_described() -> None:
    for a in all_analyzers():
        assert a.code in CATALOGUE and a.description and a.name
    assert len({a.name for a in all_analyzers()}) == len(all_analyzers())


def _messages() -> list[Message]:
    return analyze(build_context(files=load_texts([("mesh/vs.yaml", BAD + "---\n" + GOOD)])))


def test_log_format() -> None:
    text = render(_messages(), "log")
    assert "Error [IST0101] (VirtualService default/good mesh/vs.yaml:" in text
    assert "\n    fix: " in text


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_formats(fmt: str) -> None:
    text = render(_messages(), fmt)
    data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    first = data[0]
    assert set(first) >= {"code", "level", "resource", "origin", "file", "line", "message", "hint"}
    assert first["level"] == "Error" and first["resource"]["kind"] == "VirtualService"


def test_sarif_structure() -> None:
    messages = _messages() + [Message("IST0174", "live one", kind="DestinationRule", namespace="default", name="x")]
    sarif = json.loads(render(messages, "sarif"))
    assert sarif["version"] == "2.1.0" and "sarif-2.1.0" in sarif["$schema"]
    run = sarif["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids)) and set(ids) == set(CATALOGUE)
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note") and result["message"]["text"]
    from_file = next(r for r in run["results"] if r["ruleId"] == "IST0101")
    loc = from_file["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "mesh/vs.yaml" and loc["region"]["startLine"] >= 1
    live = next(r for r in run["results"] if r["ruleId"] == "IST0174")
    assert "physicalLocation" not in live["locations"][0]
    assert live["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "DestinationRule/default/x"
    assert to_sarif([])["runs"][0]["results"] == []


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log, json, yaml, sarif"):
        render([], "xml")


def test_sarif_uris_are_encoded_and_pseudo_files_have_no_physical_location() -> None:
    results = to_sarif([
        Message("NM0001", "a", kind="VirtualService", namespace="default", name="a", file="my mesh/a.yaml", line=3),
        Message("NM0001", "b", kind="VirtualService", namespace="default", name="b", file="<stdin>", line=3),
    ])["runs"][0]["results"]
    assert results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "my%20mesh/a.yaml"
    assert "physicalLocation" not in results[1]["locations"][0]
