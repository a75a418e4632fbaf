"""Loading Istio YAML: valid documents become typed Resources; every bad input is located."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novamesh.config import (
    DestinationRuleSpec,
    ServiceEntrySpec,
    Source,
    VirtualServiceSpec,
    dump_manifest,
    parse_documents,
    parse_manifest,
    read_paths,
)
from novamesh.errors import ConfigError, Violation

VS_HEAD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
"""


def violations_of(text: str, file: str = "mesh.yaml") -> list[Violation]:
    """The violations parse_documents raises for ``text``."""
    with pytest.raises(ConfigError) as info:
        parse_documents(textwrap.dedent(text), file)
    assert info.value.violations, "ConfigError without violations"
    return info.value.violations


def only(violations: list[Violation]) -> Violation:
    assert len(violations) == 1, [str(v) for v in violations]
    return violations[0]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line of ``text`` containing ``needle``."""
    hits = [i for i, line in enumerate(textwrap.dedent(text).splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


# --- valid input -------------------------------------------------------------------------------

GOOD = """\
# bookinfo
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
      uri: {regex: "^/api/v[0-9]+$"}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v3}
      weight: 25
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
  namespace: prod
  labels: {team: books}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
---
# only a comment
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1alpha3
  kind: ServiceEntry
  metadata: {name: payments}
  spec:
    hosts: [api.payments.example]
    ports: [{number: 443, name: https, protocol: https}]
    resolution: DNS
---
"""


def test_valid_multi_document_file_parses_into_typed_resources() -> None:
    resources = parse_documents(GOOD, "good.yaml")

    assert [r.ref() for r in resources] == [
        "VirtualService default/reviews",
        "DestinationRule prod/reviews",
        "ServiceEntry default/payments",
    ]
    vs, dr, se = resources
    assert isinstance(vs.spec, VirtualServiceSpec)
    assert vs.spec.http[1].route[0].weight == 75
    assert vs.spec.http[0].match[0].headers["end-user"].exact == "jason"
    assert vs.source == Source("good.yaml", 0, 2)
    assert isinstance(dr.spec, DestinationRuleSpec)
    assert dr.labels == (("team", "books"),)
    assert dr.source.document == 1
    assert isinstance(se.spec, ServiceEntrySpec)
    assert se.spec.ports[0].protocol == "HTTPS"  # normalised to upper case
    assert se.source.document == 3  # the comment-only document still counts
    assert se.source.line == line_of(GOOD, "- apiVersion: networking.istio.io/v1alpha3")
    assert se.manifest["metadata"] == {"name": "payments", "namespace": "default"}


def test_default_namespace_is_configurable() -> None:
    resources = parse_documents(VS_HEAD, default_namespace="staging")
    assert resources[0].namespace == "staging"


def test_empty_text_yields_nothing() -> None:
    assert parse_documents("") == []
    assert parse_documents("# nothing\n---\n---\n") == []


def test_json_file_with_tab_indentation() -> None:
    manifest = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": "vm-1"},
        "spec": {"address": "10.0.0.7", "labels": {"app": "ratings"}},
    }
    (resource,) = parse_documents(json.dumps(manifest, indent="\t"), "vm.json")
    assert resource.spec.model_dump()["address"] == "10.0.0.7"


# --- each bad input is located -----------------------------------------------------------------


def test_malformed_yaml_reports_line_and_column() -> None:
    text = VS_HEAD + "---\nkind: VirtualService\nmetadata:\n  name: x\n   bad: indent\n"
    v = only(violations_of(text))
    assert v.file == "mesh.yaml"
    assert v.document == 1
    assert v.line == line_of(text, "bad: indent")
    assert "malformed YAML" in v.message and "column" in v.message
    assert v.hint


def test_tab_indentation_hint() -> None:
    v = only(violations_of("kind: VirtualService\nspec:\n\thosts: []\n"))
    assert v.line == 3
    assert "tabs" in v.hint


def test_unknown_kind_lists_supported_kinds() -> None:
    text = "apiVersion: v1\nkind: Servce\nmetadata: {name: x}\n"
    v = only(violations_of(text))
    assert (v.document, v.line, v.path) == (0, 2, "kind")
    assert "unknown kind 'Servce'" in v.message
    for kind in ("VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry"):
        assert kind in v.message
    assert v.hint == "did you mean 'ServiceEntry'?"


def test_kind_istio_has_but_novamesh_does_not_yet() -> None:
    text = VS_HEAD + "---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\n"
    text += "metadata: {name: default}\nspec: {configPatches: []}\n"
    v = only(violations_of(text))
    assert (v.document, v.path, v.line) == (1, "kind", line_of(text, "EnvoyFilter"))
    assert "not supported" in v.message and "yet" in v.message
    assert "docs/istio-fields.md" in v.message
    assert v.hint


def test_unknown_field_suggests_close_match() -> None:
    text = (
        VS_HEAD
        + """\
  http:
  - route:
    - destination:
        host: reviews
        subet: v1
"""
    )
    v = only(violations_of(text))
    assert v.path == "spec.http[0].route[0].destination.subet"
    assert v.line == line_of(text, "subet")
    assert v.message == "unknown field 'subet'"
    assert v.hint == "did you mean 'subset'?"
    assert (v.kind, v.name, v.namespace, v.code) == (
        "VirtualService",
        "reviews",
        "default",
        "IST0106",
    )


def test_real_istio_field_not_supported_yet_says_so() -> None:
    text = (
        VS_HEAD
        + """\
  http:
  - delegate: {name: reviews-routes}
    route:
    - destination: {host: reviews}
"""
    )
    v = only(violations_of(text))
    assert v.path == "spec.http[0].delegate"
    assert v.line == line_of(text, "delegate")
    assert v.message == (
        "Istio field 'delegate' is not supported by novamesh yet (see docs/istio-fields.md)"
    )
    assert v.hint


def test_wrong_type_names_expected_and_actual() -> None:
    text = (
        VS_HEAD
        + """\
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: abc
"""
    )
    v = only(violations_of(text))
    assert v.path == "spec.http[0].route[1].weight"
    assert v.line == line_of(text, "weight: abc")
    assert v.message == "expected integer, got string 'abc'"
    assert v.hint


def test_regex_is_checked_with_re2() -> None:
    # Lookahead compiles with Python's re but not with RE2, which is what Envoy runs.
    text = (
        VS_HEAD
        + """\
  http:
  - match:
    - uri:
        regex: "^/(?=api)"
    route:
    - destination: {host: reviews}
"""
    )
    v = only(violations_of(text))
    assert v.path == "spec.http[0].match[0].uri.regex"
    assert v.line == line_of(text, "regex:")
    assert "RE2" in v.message and "(?=" in v.message
    assert v.hint


def test_weights_must_add_up_to_100() -> None:
    text = (
        VS_HEAD
        + """\
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 30
    - destination: {host: reviews, subset: v2}
      weight: 60
"""
    )
    v = only(violations_of(text))
    assert v.path == "spec.http[0].route"
    assert v.line == line_of(text, "- route:")
    assert "add up to 90" in v.message
    assert "100" in v.hint


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("- destination: {host: a}\n      weight: 40", "weight must be 100"),
        ("- destination: {host: a}\n      weight: 100\n    - destination: {host: b}", "no weight"),
    ],
)
def test_weight_rules_for_one_and_missing_weights(route: str, expected: str) -> None:
    text = VS_HEAD + f"  http:\n  - route:\n    {route}\n"
    assert expected in only(violations_of(text)).message


def test_several_problems_in_one_file_are_all_reported() -> None:
    text = (
        VS_HEAD
        + """\
  gateways: [my_gateway]
  http:
  - match:
    - headers:
        End-User: {exact: jason}
    route:
    - destination: {host: reviews, subet: v1}
  - route:
    - destination: {host: a}
      weight: 10
    - destination: {host: b}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: Bad_Name}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: ["*.example.com"]
  resolution: DNS
  addresses: [not-an-ip]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm}
spec: {labels: {app: x}}
"""
    )
    found = {(v.document, v.path) for v in violations_of(text)}
    assert found == {
        (0, "spec.gateways[0]"),
        (0, "spec.http[0].match[0].headers.End-User"),
        (0, "spec.http[0].route[0].destination.subet"),
        (0, "spec.http[1].route"),
        (1, "metadata.name"),
        (1, "spec.subsets[1].name"),
        (1, "spec.subsets[1].labels"),
        (2, "spec.hosts[0]"),
        (2, "spec.addresses[0]"),
        (2, "spec.ports"),
        (3, "spec.address"),
    }


def test_violations_are_in_reading_order() -> None:
    text = VS_HEAD + "  bogus: 1\n  http:\n  - route: []\n  extra: 2\n"
    lines = [v.line or 0 for v in violations_of(text)]
    assert lines == sorted(lines)


def test_header_names_must_be_lower_case() -> None:
    text = VS_HEAD + "  http:\n  - match:\n    - withoutHeaders: {X-Debug: {}}\n"
    text += "    route: [{destination: {host: reviews}}]\n"
    v = only(violations_of(text))
    assert v.path == "spec.http[0].match[0].withoutHeaders.X-Debug"
    assert "'x-debug'" in v.hint


def test_service_entry_rules() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal]
  resolution: STATIC
  ports:
  - {number: 5432, name: pg, protocol: tcp}
  - {number: 5432, name: pg, protocol: carrier-pigeon}
  endpoints:
  - {address: db.example.com, ports: {postgres: 5432}}
"""
    found = {v.path: v for v in violations_of(text)}
    assert set(found) == {
        "spec.ports[1].number",
        "spec.ports[1].name",
        "spec.ports[1].protocol",
        "spec.endpoints[0].address",
        "spec.endpoints[0].ports.postgres",
    }
    assert "expected one of" in found["spec.ports[1].protocol"].message


def test_static_service_entry_needs_endpoints() -> None:
    text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\n"
    text += "spec: {hosts: [s.example], resolution: STATIC, ports: [{number: 80, name: http}]}\n"
    assert only(violations_of(text)).path == "spec.endpoints"


def test_duplicate_yaml_keys_are_reported_on_the_second_key() -> None:
    text = VS_HEAD + "  hosts:\n  - ratings\n"
    v = only(violations_of(text))
    assert v.path == "spec.hosts"
    assert v.line == line_of(text, "hosts:", 2)
    assert "duplicate key" in v.message


def test_missing_envelope_fields() -> None:
    found = {v.path for v in violations_of("spec: {}\n")}
    assert found == {"kind", "metadata"}
    found = {v.path for v in violations_of("kind: VirtualService\nmetadata: {}\n")}
    assert found == {"apiVersion", "metadata.name", "spec"}


def test_not_a_mapping() -> None:
    v = only(violations_of("# a list, not a resource\n---\n- just\n- a list\n"))
    assert (v.document, v.line, v.path) == (0, 3, "")
    assert "must be a mapping" in v.message


def test_list_item_violations_carry_item_path_and_line() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n"
    text += "  kind: DestinationRule\n  metadata: {name: r}\n  spec:\n    hots: reviews\n"
    found = {v.path: v.line for v in violations_of(text)}
    assert found == {"items[0].spec.hots": 8, "items[0].spec.host": 7}


# --- parse_manifest (the REST API's entry point) and dump_manifest -----------------------------


def test_parse_manifest_without_lines() -> None:
    manifest = yaml.safe_load(VS_HEAD.replace("  - reviews", "  - ''"))
    with pytest.raises(ConfigError) as info:
        parse_manifest(manifest, source=Source(file="api"))
    v = only(info.value.violations)
    assert (v.path, v.file, v.line) == ("spec.hosts[0]", "api", None)


def test_parse_manifest_uses_line_of() -> None:
    manifest = yaml.safe_load(VS_HEAD + "  gateways: [mesh, a/b/c]\n")
    with pytest.raises(ConfigError) as info:
        parse_manifest(manifest, line_of={"spec.gateways": 42}.get)
    v = only(info.value.violations)
    assert (v.path, v.line) == ("spec.gateways[1]", 42)


def test_dump_manifest_orders_keys_and_round_trips() -> None:
    manifest = {
        "spec": {"hosts": ["reviews"]},
        "metadata": {"namespace": "prod", "name": "reviews"},
        "kind": "VirtualService",
        "apiVersion": "networking.istio.io/v1",
    }
    text = dump_manifest(manifest)
    assert [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")] == [
        "apiVersion",
        "kind",
        "metadata",
        "spec",
    ]
    assert text.index("name:") < text.index("namespace:")
    (resource,) = parse_documents(text)
    assert dump_manifest(resource) == text


# --- read_paths ---------------------------------------------------------------------------------


def test_read_paths_walks_directories_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yml").write_text("z")
    (tmp_path / "a.yaml").write_text("a")
    (tmp_path / "c.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("ignored")
    names = [Path(name).relative_to(tmp_path).as_posix() for name, _ in read_paths([tmp_path])]
    assert names == ["a.yaml", "b/z.yml", "c.json"]


def test_read_paths_reports_every_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_paths([tmp_path / "nope.yaml", tmp_path / "gone"])
    assert [Path(v.file).name for v in info.value.violations] == ["nope.yaml", "gone"]
    assert all(v.hint for v in info.value.violations)


def test_read_paths_dash_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("kind: x\n"))
    assert read_paths(["-"]) == [("<stdin>", "kind: x\n")]


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    try:
        parse_documents(text, "fuzz.yaml")
    except ConfigError as exc:
        assert all(isinstance(v, Violation) and v.message for v in exc.violations)


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_values = st.recursive(
    _scalars | st.sampled_from(["reviews", "v1", "^a(", "DNS", "STATIC", "mesh"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "hosts",
                    "http",
                    "route",
                    "destination",
                    "host",
                    "subset",
                    "weight",
                    "match",
                    "uri",
                    "regex",
                    "headers",
                    "ports",
                    "number",
                    "name",
                    "resolution",
                    "endpoints",
                    "address",
                    "subsets",
                    "labels",
                    "gateways",
                    "protocol",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry"]),
    _values,
)
def test_arbitrary_specs_raise_only_config_error(kind: str, spec: object) -> None:
    manifest = {
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": "fuzz"},
        "spec": spec,
    }
    try:
        resource = parse_manifest(manifest)
    except ConfigError as exc:
        assert all(v.path or v.message for v in exc.violations)
    else:
        assert resource.kind == kind


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [*a]\n",  # recursive alias
        "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
        + "".join(f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg")),
    ],
    ids=["recursive-alias", "alias-bomb"],
)
def test_alias_abuse_is_a_violation_not_a_hang(text: str) -> None:
    v = only(violations_of(text))
    assert "document expands to more than" in v.message
