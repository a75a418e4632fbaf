"""novamesh.testing.mesh helpers that need no running mesh."""

from __future__ import annotations

import re

from novamesh.testing.mesh import re2_literal


def test_re2_literal_matches_exactly_the_stat_name() -> None:
    name = "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_retry"
    pattern = re.compile(f"^{re2_literal(name)}$")  # RE2 and Python agree on these escapes
    assert pattern.match(name)
    assert not pattern.match(name.replace(".", "x", 1))  # '.' is literal, not "any character"
    assert not pattern.match("cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_retry_limit_exceeded")
