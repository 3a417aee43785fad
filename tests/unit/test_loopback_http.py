"""`loopback_http.host_port` reads a URL's host and port as `urllib.parse.urlsplit` does (it is
what `run` through `serve` connects to; urlsplit would cost that path its import)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from aitherctl.loopback_http import host_port


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8150",
        "http://127.0.0.1:8150/",
        "http://127.0.0.1:8150/v1",
        "http://LOCALHOST:9000/v1?x=1",
        "http://localhost/v1",
        "http://[::1]:8150/v1",
        "http://[::1]/",
        "http://user:secret@127.0.0.1:8150/v1",
        "http://127.0.0.1:8150?a=b",
    ],
)
def test_host_and_port_as_urlsplit_reads_them(url: str) -> None:
    parts = urlsplit(url)
    assert host_port(url) == (parts.hostname or "127.0.0.1", parts.port or 80)
