"""`aitherctl serve` is safe on a workstation: a web page the user visits cannot use it (a
cross-site "simple" request, a DNS-rebinding `Host`), while the official `openai` client, curl
and pages the user allowed work. The real `serve` process in front of the OpenAI contract double
(tests/doubles/chat_server.py), no Docker needed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.doubles.chat_server import RunningDouble, chat_double
from tests.serve.docker.serve_helpers import Served, curl, serving

openai = pytest.importorskip("openai")
HI = {"model": "all", "messages": [{"role": "user", "content": "Hi"}]}


@contextmanager
def gateway(
    write_profile: Callable[..., Path], *args: str
) -> Iterator[tuple[Served, RunningDouble]]:
    with chat_double() as cloud:
        write_profile(
            "web",
            services={},
            endpoints={"cloud": {"base_url": f"{cloud.root}/v1", "model": "gpt-double"}},
            routing={"tiers": {"all": {"effort": "1-10", "candidates": ["cloud"]}}},
        )
        with serving("web", args=args) as served:
            yield served, cloud


def _raw_curl(url: str, *headers: str, data: str = "") -> tuple[int, str]:
    """curl as a page's `fetch` would send it: our headers only, the body as given."""
    command = ["curl", "-sS", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}", url]
    for header in headers:
        command += ["-H", header]
    if data:
        command += ["--data-binary", data]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def test_a_cross_site_simple_request_and_a_foreign_host_are_refused_while_clients_work(
    write_profile: Callable[..., Path],
) -> None:
    with gateway(write_profile) as (served, cloud):
        chat = served.v1 + "/chat/completions"
        # What a page at http://evil.example can send without a preflight.
        code, body = _raw_curl(
            chat,
            "Content-Type: text/plain",
            "Origin: http://evil.example",
            data='{"model": "all", "messages": []}',
        )
        assert code == 403
        assert "http://evil.example are not allowed" in body
        code, body = _raw_curl(
            chat, "Content-Type: text/plain", data='{"model": "all", "messages": []}'
        )
        assert code == 415
        assert "Content-Type: application/json" in body
        # DNS rebinding: the page's own name, resolved to 127.0.0.1.
        code, body = _raw_curl(
            chat,
            f"Host: evil.example:{served.port}",
            "Content-Type: application/json",
            data='{"model": "all"}',
        )
        assert code == 403
        assert "does not name this machine" in body
        code, _ = _raw_curl(served.url + "/v1/models", f"Host: evil.example:{served.port}")
        assert code == 403
        preflight = curl(
            "OPTIONS",
            chat,
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status == 403
        assert "access-control-allow-origin" not in preflight.headers
        assert cloud.state.requests == []  # nothing reached the provider

        client = openai.OpenAI(base_url=served.v1, api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="all", messages=HI["messages"], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "Hello from the double."
        assert curl("POST", chat, HI).status == 200
        assert curl("POST", f"http://localhost:{served.port}/v1/chat/completions", HI).status == 200
        # A page served from this machine (a local chat UI) may call it, preflight first.
        local = "http://localhost:3000"
        preflight = curl(
            "OPTIONS",
            chat,
            headers={
                "Origin": local,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization",
            },
        )
        assert preflight.status == 204
        assert preflight.headers["access-control-allow-origin"] == local
        assert preflight.headers["access-control-allow-headers"] == "content-type, authorization"
        allowed = curl("POST", chat, HI, headers={"Origin": local})
        assert allowed.status == 200
        assert allowed.headers["access-control-allow-origin"] == local


def test_allowed_hosts_and_origins_are_served(write_profile: Callable[..., Path]) -> None:
    args = ("--allow-host", "gateway.lan", "--allow-origin", "https://chat.example")
    with gateway(write_profile, *args) as (served, _cloud):
        chat = served.v1 + "/chat/completions"
        code, _ = _raw_curl(
            chat,
            f"Host: gateway.lan:{served.port}",
            "Content-Type: application/json",
            "Origin: https://chat.example",
            data=json.dumps(HI),
        )
        assert code == 200
        code, _ = _raw_curl(
            chat,
            "Content-Type: application/json",
            "Origin: https://other.example",
            data=json.dumps(HI),
        )
        assert code == 403
