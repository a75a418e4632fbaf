"""run_load, Traffic, wait_until and the load CLI against an in-process echo server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from novamesh.testing import EchoServer, Traffic, run_load, wait_until


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer(service="web", version="v3", trust_env=False) as server:
        yield server


def test_run_load_sends_exactly_count_requests(echo: EchoServer) -> None:
    result = run_load(echo.url + "/p", count=37, concurrency=5, headers={"x-user": "ann"})
    assert result.total == 37 and result.ok == 37 and result.failed == 0
    assert result.statuses == {200: 37}
    assert result.versions == {"web/v3": 37}
    assert len(result.bodies) == 37 and result.bodies[0]["headers"]["x-user"] == "ann"
    assert echo.app.stats.to_dict()["requests"] == 37
    assert result.errors == []


def test_run_load_counts_errors_and_caps_bodies(echo: EchoServer) -> None:
    url = echo.url
    echo.stop()
    result = run_load(url + "/", count=3, concurrency=2, timeout=2)
    assert result.statuses == {"error:ConnectError": 3}
    assert result.failed == 3 and len(result.errors) == 3


def test_run_load_keeps_at_most_max_bodies(echo: EchoServer) -> None:
    result = run_load(echo.url + "/", count=20, max_bodies=5)
    assert result.total == 20 and len(result.bodies) == 5


def test_traffic_records_failures_with_their_time(echo: EchoServer) -> None:
    with Traffic(echo.url + "/", rate=200, max_seconds=30) as traffic:
        traffic.wait_for(lambda t: t.count >= 20, timeout=10)
        before = traffic.now()
        echo.app.configure({"fail_fraction": 1.0})
        after = traffic.now()
        traffic.wait_for(lambda t: len(t.failures(since=after)) >= 10, timeout=10)
    failures = traffic.failures()
    assert failures, traffic.summary()
    assert all(f.status == 503 and f.version == "web/v3" for f in failures)
    # Answered before the switch began: all good. Sent after it returned: all failed. (Requests
    # in between may go either way, so the test does not look at them: no timing assumptions.)
    assert all(s.ok for s in traffic.samples() if s.at + s.latency < before)
    assert all(not s.ok for s in traffic.samples(since=after))
    assert "status 503 from web/v3" in failures[0].detail
    assert traffic.count == len(traffic.samples())
    assert traffic.versions["web/v3"] == traffic.count


def test_traffic_stops_at_max_requests(echo: EchoServer) -> None:
    with Traffic(echo.url + "/", rate=500, max_requests=15) as traffic:
        wait_until(lambda: not traffic.running, 10, message="traffic to reach max_requests")
    assert traffic.count == 15


def test_wait_until_returns_the_value_or_times_out() -> None:
    calls = iter([0, None, "ready"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.001) == "ready"
    with pytest.raises(TimeoutError, match="the moon"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, message="the moon")


def test_wait_until_can_ignore_exceptions_while_polling() -> None:
    attempts: list[int] = []

    def flaky() -> bool:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return True

    assert wait_until(flaky, timeout=5, interval=0.001, ignore=(ConnectionError,)) is True
    with pytest.raises(TimeoutError, match="not yet") as info:
        wait_until(lambda: (_ for _ in ()).throw(ConnectionError("not yet")), timeout=0.05, ignore=(ConnectionError,))
    assert isinstance(info.value.__cause__, ConnectionError)
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, timeout=1)  # not ignored: a bug, surfaced at once


def test_load_cli_sends_count_and_prints_summaries(echo: EchoServer) -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out = subprocess.run(
        [sys.executable, "-m", "novamesh.testing.load", "--url", echo.url + "/", "--rate", "100",
         "--count", "12", "--interval", "0.2", "--header", "end-user: jason"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )
    assert "load: done sent=12 statuses={200: 12} versions={'web/v3': 12}" in out.stdout
    assert echo.app.stats.to_dict()["requests"] == 12


def test_load_cli_uses_http_proxy_from_env(echo: EchoServer) -> None:
    # The echo server is not a proxy, but it answers the absolute-form request a proxy gets,
    # which proves the request went to HTTP_PROXY rather than to the URL's host.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HTTP_PROXY"] = echo.url
    subprocess.run(
        [sys.executable, "-m", "novamesh.testing.load", "--url", "http://frontend:9080/", "--count", "2", "--interval", "0.2"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )
    assert echo.app.stats.to_dict()["requests"] == 2
    with httpx.Client(trust_env=False) as c:
        assert c.get(echo.url + "/_echo/stats").json()["requests"] == 2
