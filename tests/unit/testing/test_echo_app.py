"""The echo app over real sockets on 127.0.0.1 (ephemeral ports, no proxy, no mesh)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from novamesh.testing import EchoServer, run_load, wait_until
from novamesh.testing.echo_state import Behaviour
from novamesh.testing.xfcc import caller_principal, parse_xfcc


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer(service="reviews", version="v2", namespace="shop", trust_env=False) as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


def test_answers_with_identity_path_and_headers(echo: EchoServer, client: httpx.Client) -> None:
    r = client.post(f"{echo.url}/a/b%20c?x=1&x=2&y=", headers={"X-Custom": "Hello"}, content=b"12345")

    assert r.status_code == 200
    assert r.headers["x-echo-service"] == "reviews/v2"
    body = r.json()
    assert (body["service"], body["version"], body["namespace"]) == ("reviews", "v2", "shop")
    assert body["method"] == "POST"
    assert body["path"] == "/a/b%20c?x=1&x=2&y="  # raw, as received
    assert body["query"] == {"x": ["1", "2"], "y": [""]}
    assert body["host"] == f"127.0.0.1:{echo.port}"
    assert body["headers"]["x-custom"] == "Hello"
    assert body["caller"] == {"principal": None, "address": "127.0.0.1"}
    assert body["body_bytes"] == 5
    assert body["calls"] == []
    assert body["injected_failure"] is False


def test_any_method_and_head(echo: EchoServer, client: httpx.Client) -> None:
    assert client.request("PURGE", f"{echo.url}/cache").json()["method"] == "PURGE"
    head = client.head(f"{echo.url}/x")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0


def test_chunked_request_body_is_counted(echo: EchoServer, client: httpx.Client) -> None:
    r = client.post(f"{echo.url}/upload", content=iter([b"abc", b"defgh"]))
    assert r.json()["body_bytes"] == 8
    assert r.json()["headers"]["transfer-encoding"] == "chunked"


def test_keep_alive_reuses_the_connection(echo: EchoServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    try:
        conn.request("GET", "/one")
        assert conn.getresponse().read()
        sock = conn.sock
        conn.request("GET", "/two")
        response = conn.getresponse()
        assert response.status == 200 and response.read()
        assert conn.sock is sock  # http.client reconnects (new socket) if the server closed it
    finally:
        conn.close()


def test_caller_principal_from_xfcc(echo: EchoServer, client: httpx.Client) -> None:
    xfcc = ('By=spiffe://cluster.local/ns/a/sa/x;URI=spiffe://cluster.local/ns/a/sa/first,'
            'By=spiffe://cluster.local/ns/shop/sa/reviews;Hash=ab12;Subject="CN=x,O=y;z";'
            'URI=spiffe://cluster.local/ns/shop/sa/frontend')
    body = client.get(echo.url, headers={"x-forwarded-client-cert": xfcc}).json()
    assert body["caller"]["principal"] == "spiffe://cluster.local/ns/shop/sa/frontend"


def test_xfcc_parsing() -> None:
    elements = parse_xfcc('Hash=1;Subject="a=\\"b\\",c";URI=spiffe://x/ns/n/sa/s;DNS=a;DNS=b')
    assert elements == [{"hash": ["1"], "subject": ['a="b",c'], "uri": ["spiffe://x/ns/n/sa/s"], "dns": ["a", "b"]}]
    assert caller_principal("Hash=1") is None
    assert caller_principal(None) is None


def test_status_header_and_bad_header(echo: EchoServer, client: httpx.Client) -> None:
    r = client.get(f"{echo.url}/teapot", headers={"x-echo-status": "418"})
    assert r.status_code == 418 and r.json()["service"] == "reviews"
    bad = client.get(echo.url, headers={"x-echo-delay": "soon"})
    assert bad.status_code == 400
    assert "x-echo-delay" in bad.json()["error"]
    assert client.get(echo.url, headers={"x-echo-status": "99"}).status_code == 400
    assert client.get(echo.url).status_code == 200  # per-request switches do not stick


def test_fail_fraction_is_statistically_right(echo: EchoServer) -> None:
    # 400 independent draws with p = 0.3: mean 120, sigma = sqrt(400 * 0.3 * 0.7) = 9.2.
    # Accept mean +- 5 sigma, [74, 166]: a correct app fails this about once in 1.7 million runs,
    # while a broken switch (never or always failing, or a p off by 0.15) lands far outside.
    result = run_load(echo.url + "/", count=400, concurrency=8, headers={"x-echo-fail-fraction": "0.3"})
    assert result.total == 400
    assert set(result.statuses) <= {200, 503}
    assert 74 <= result.statuses[503] <= 166, result.summary()
    assert sum(1 for b in result.bodies if b["injected_failure"]) == result.statuses[503]


def test_delay_does_not_block_a_concurrent_request(echo: EchoServer, client: httpx.Client) -> None:
    finished: list[str] = []

    def slow() -> None:
        with httpx.Client(trust_env=False, timeout=10) as c:
            c.get(f"{echo.url}/slow", headers={"x-echo-delay": "2"})
        finished.append("slow")

    thread = threading.Thread(target=slow)
    thread.start()
    wait_until(lambda: echo.app.stats.to_dict()["in_flight"] == 1, 5, message="the slow request to arrive")
    assert client.get(f"{echo.url}/fast").status_code == 200
    finished.append("fast")
    thread.join(10)
    assert finished == ["fast", "slow"]


def test_runtime_config_endpoint(echo: EchoServer, client: httpx.Client) -> None:
    assert client.get(f"{echo.url}/_echo/config").json() == {"delay": 0.0, "fail_fraction": 0.0, "fail_status": 503, "status": 200}

    updated = client.post(f"{echo.url}/_echo/config", json={"fail_fraction": 1, "fail_status": 500})
    assert updated.json() == {"delay": 0.0, "fail_fraction": 1.0, "fail_status": 500, "status": 200}
    failing = client.get(f"{echo.url}/x")
    assert failing.status_code == 500 and failing.json()["injected_failure"] is True

    rejected = client.post(f"{echo.url}/_echo/config", json={"fail_fraction": 2, "status": 201})
    assert rejected.status_code == 400 and "fail_fraction" in rejected.json()["error"]
    assert client.post(f"{echo.url}/_echo/config", json={"colour": 1}).status_code == 400
    assert client.get(f"{echo.url}/_echo/config").json()["status"] == 200  # a rejected update changes nothing

    client.post(f"{echo.url}/_echo/config", json={"fail_fraction": 0, "status": 202})
    assert client.get(f"{echo.url}/y").status_code == 202
    # control requests are neither failed, delayed nor counted
    assert client.get(f"{echo.url}/_echo/stats").json()["requests"] == 2
    assert client.get(f"{echo.url}/_echo/nope").status_code == 404


def test_max_in_flight_counts_concurrent_requests(echo: EchoServer) -> None:
    def one() -> None:
        with httpx.Client(trust_env=False, timeout=10) as c:
            c.get(f"{echo.url}/held", headers={"x-echo-delay": "1.5"})

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    wait_until(lambda: echo.app.stats.to_dict()["in_flight"] == 5, 5, message="5 requests in flight")
    for t in threads:
        t.join(10)
    assert echo.app.stats.to_dict() == {"requests": 5, "in_flight": 0, "max_in_flight": 5}

    with httpx.Client(trust_env=False) as c:
        assert c.post(f"{echo.url}/_echo/stats/reset").json() == {"requests": 0, "in_flight": 0, "max_in_flight": 0}


def test_call_chain_propagates_headers_and_reports_each_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with EchoServer(service="ratings") as ratings, EchoServer(service="down") as dead:
        dead_url = dead.url
        dead.stop()  # a port nothing listens on any more
        with EchoServer(service="reviews", calls=[ratings.url + "/r?id=7", dead_url + "/"], call_timeout=2) as reviews:
            with httpx.Client(trust_env=False, timeout=10) as c:
                r = c.get(reviews.url, headers={"end-user": "jason", "x-request-id": "abc", "x-secret": "no"})

    assert r.status_code == 200  # a failed call does not change the app's own status
    first, second = r.json()["calls"]
    assert first["status"] == 200 and first["error"] is None
    assert first["url"] == ratings.url + "/r?id=7"
    assert first["body"]["service"] == "ratings" and first["body"]["path"] == "/r?id=7"
    forwarded = first["body"]["headers"]
    assert forwarded["end-user"] == "jason" and forwarded["x-request-id"] == "abc"
    assert "x-secret" not in forwarded
    assert second["status"] is None and second["error"].startswith("ConnectError")


def test_behaviour_from_env() -> None:
    assert Behaviour.from_env({"ECHO_DELAY": "0.5", "ECHO_FAIL_FRACTION": "0.1", "ECHO_STATUS": "201"}) == Behaviour(0.5, 0.1, 503, 201)
    with pytest.raises(ValueError, match="ECHO_FAIL_STATUS"):
        Behaviour.from_env({"ECHO_FAIL_STATUS": "oops"})


def test_sigterm_finishes_in_flight_requests_and_exits_zero() -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    argv = [sys.executable, "-m", "novamesh.testing.echo", "--port", "0", "--service", "svc"]
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env={**env, "PYTHONUNBUFFERED": "1"}) as proc:
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline()  # "echo svc/v1 listening on 127.0.0.1:PORT"
            url = "http://" + banner.split(" listening on ")[1].split()[0]
            results: list[int] = []

            def slow() -> None:
                results.append(httpx.get(url, headers={"x-echo-delay": "1"}, trust_env=False, timeout=10).status_code)

            thread = threading.Thread(target=slow)
            thread.start()
            wait_until(lambda: httpx.get(url + "/_echo/stats", trust_env=False).json()["in_flight"] == 1, 5,
                       message="the slow request to arrive")
            proc.send_signal(signal.SIGTERM)
            thread.join(10)
            assert results == [200]
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
