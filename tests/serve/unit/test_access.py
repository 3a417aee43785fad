"""Who may use the gateway from a browser (pure): Host names and Origins."""

from __future__ import annotations

import pytest

from aitherctl.serve.access import access_policy, host_name, split_list

POLICY = access_policy(
    "127.0.0.1",
    ["workstation"],
    ["gateway.lan", "*.tail.net"],
    ["https://chat.example/", "https://*.apps.example"],
)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8150",
        "localhost:8150",
        "[::1]:8150",
        "192.168.1.20:8150",
        "WORKSTATION",
        "app.localhost",
        "gateway.lan:8150",
        "box.tail.net",
        "workstation.:8150",
        None,
    ],
)
def test_names_of_this_machine_are_allowed(host: str | None) -> None:
    assert POLICY.host_allowed(host)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8150",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.nip.io:8150",
        "",
        "gateway.lan.evil.example",
    ],
)
def test_other_names_are_refused(host: str) -> None:
    assert not POLICY.host_allowed(host)


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000",
        "https://127.0.0.1",
        "http://[::1]:8080",
        "https://chat.example",
        "https://team.apps.example",
    ],
)
def test_loopback_and_allowed_origins(origin: str) -> None:
    assert POLICY.origin_allowed(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "https://chat.example.evil.example",
        "file://",
        "http://localhost.evil.example",
    ],
)
def test_other_origins_are_refused(origin: str) -> None:
    assert not POLICY.origin_allowed(origin)


def test_a_star_allows_every_origin_and_host() -> None:
    everyone = access_policy("127.0.0.1", [], ["*"], ["*"])
    assert everyone.origin_allowed("http://evil.example")
    assert everyone.host_allowed("evil.example:8150")


def test_host_names_and_lists() -> None:
    assert host_name("[::1]:8150") == "::1"
    assert host_name("Example.COM.:80") == "example.com"
    assert host_name("::1") == "::1"
    assert split_list("a.example, b.example c") == ["a.example", "b.example", "c"]
    assert split_list(None) == []
