"""Cross-resource validation: subset references, DestinationRule conflicts, duplicates."""

from __future__ import annotations

import textwrap

from novamesh.config import Resource, ResourceKey, check_duplicates, parse_documents
from novamesh.config import validate_state


def load(text: str, file: str = "mesh.yaml") -> list[Resource]:
    return parse_documents(textwrap.dedent(text), file)


def state_of(*resources: Resource) -> dict[ResourceKey, Resource]:
    return {r.key: r for r in resources}


def vs(subset: str = "v2", namespace: str = "default", host: str = "reviews") -> Resource:
    (resource,) = load(
        f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: reviews, namespace: {namespace}}}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {{host: reviews, subset: v1}}
              weight: 50
            - destination: {{host: {host}, subset: {subset}}}
              weight: 50
        """,
        "vs.yaml",
    )
    return resource


def dr(
    *subsets: str, name: str = "reviews", namespace: str = "default", host: str = "reviews"
) -> Resource:
    listed = ", ".join(f"{{name: {s}, labels: {{version: {s}}}}}" for s in subsets)
    (resource,) = load(
        f"""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          host: "{host}"
          subsets: [{listed}]
        """,
        "dr.yaml",
    )
    return resource


def test_subset_defined_by_a_destination_rule_is_fine() -> None:
    service, rule = vs(), dr("v1", "v2")
    assert validate_state(state_of(service, rule), [service.key]) == []


def test_subset_no_destination_rule_defines() -> None:
    service, rule = vs(subset="v3"), dr("v1", "v2")
    (v,) = validate_state(state_of(service, rule), [service.key])
    assert (v.kind, v.namespace, v.name) == ("VirtualService", "default", "reviews")
    assert v.path == "spec.http[0].route[1].destination.subset"
    assert (v.file, v.document, v.line) == ("vs.yaml", 0, 1)
    assert v.code == "IST0101"
    assert "'v3'" in v.message
    assert "reviews.default.svc.cluster.local" in v.message
    assert "v1, v2" in v.message
    assert "DestinationRule default/reviews" in v.hint


def test_no_destination_rule_at_all() -> None:
    service = vs()
    violations = validate_state(state_of(service), [service.key])
    assert {v.path for v in violations} == {
        "spec.http[0].route[0].destination.subset",
        "spec.http[0].route[1].destination.subset",
    }
    assert all("create a DestinationRule" in v.hint for v in violations)


def test_removing_a_subset_is_reported_against_the_virtual_service() -> None:
    service, rule = vs(), dr("v1")  # the new DR dropped v2
    (v,) = validate_state(state_of(service, rule), [rule.key])
    assert (v.kind, v.name, v.path) == (
        "VirtualService",
        "reviews",
        "spec.http[0].route[1].destination.subset",
    )
    assert "would break" in v.message


def test_deleting_the_destination_rule_is_reported() -> None:
    service, rule = vs(), dr("v1", "v2")
    after = state_of(service)
    with_previous = validate_state(after, [rule.key], previous=state_of(service, rule))
    without_previous = validate_state(after, [rule.key])
    assert len(with_previous) == len(without_previous) == 2
    assert {v.kind for v in with_previous} == {"VirtualService"}


def test_unrelated_pre_existing_problem_does_not_block() -> None:
    broken, other = vs(subset="v9"), dr("a", name="ratings", host="ratings")
    state = state_of(broken, dr("v1", "v2"), other)
    assert validate_state(state, [other.key]) == []
    deleted: ResourceKey = ("DestinationRule", "default", "gone")
    gone = dr("x", name="gone", host="details")
    assert validate_state(state, [deleted], previous={**state, deleted: gone}) == []


def test_hosts_resolve_in_each_resources_own_namespace() -> None:
    service = vs(namespace="shop")  # `reviews` means reviews.shop.svc.cluster.local
    elsewhere = dr("v1", "v2", namespace="books")  # reviews.books.svc.cluster.local
    assert len(validate_state(state_of(service, elsewhere), [service.key])) == 2
    fqdn = dr("v1", "v2", namespace="books", host="reviews.shop.svc.cluster.local")
    assert validate_state(state_of(service, fqdn), [service.key]) == []


def test_wildcard_destination_rule_host_covers_the_destination() -> None:
    service = vs(host="api.example.com", subset="blue")
    wildcard = dr("v1", "blue", name="wild", host="*.example.com")
    state = state_of(service, dr("v1"), wildcard)
    assert validate_state(state, [service.key]) == []


def test_two_destination_rules_for_one_host_in_one_namespace() -> None:
    first, second = dr("v1"), dr("v2", name="reviews-extra")
    (v,) = validate_state(state_of(first, second), [second.key])
    assert (v.kind, v.name, v.path, v.file) == (
        "DestinationRule",
        "reviews-extra",
        "spec.host",
        "dr.yaml",
    )
    assert "DestinationRule default/reviews" in v.message
    assert v.hint
    # Both new in one apply: one violation, not two.
    assert len(validate_state(state_of(first, second), [first.key, second.key])) == 1
    # Different namespaces do not conflict.
    other_ns = dr("v2", namespace="prod")
    assert validate_state(state_of(first, other_ns), [other_ns.key]) == []


def test_duplicate_documents_in_one_apply() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
        """
    first = load(text, "a.yaml")
    other = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm}\n"
    other += "spec: {address: 10.0.0.1}\n---\n"
    second = load(other + textwrap.dedent(text), "b.yaml")
    different_kind = load(
        text.replace("DestinationRule", "VirtualService").replace(
            "spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}",
            "spec: {hosts: [reviews]}",
        ),
        "c.yaml",
    )
    (v,) = check_duplicates(first + second + different_kind)
    assert (v.file, v.document, v.line) == ("b.yaml", 1, 6)
    assert "a.yaml:1 document 1" in v.message and "b.yaml:6 document 2" in v.message
    assert v.hint
    assert check_duplicates(first + different_kind) == []
