"""A minimal HTTP/1.1 client over a plain socket, for one request to a local server.

`http.client` imports `ssl` and the `email` package (about 40 ms); `aitherctl run` through the
gateway needs one POST to loopback and a line-by-line read of the streamed answer, which this
does with `socket` alone: `Connection: close`, a `Content-Length` request body, a response read
as chunked, by Content-Length or to the end.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit


class LoopbackError(OSError):
    """The server could not be reached or broke the HTTP exchange."""


class LoopbackResponse:
    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        self._sock = sock
        status_line = self._file.readline(65537)
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise LoopbackError(f"not an HTTP answer: {status_line[:80]!r}")
        self.status = int(parts[1])
        self.headers: list[tuple[str, str]] = []
        while True:
            line = self._file.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers.append((name.strip(), value.strip()))
        lowered = {name.lower(): value for name, value in self.headers}
        self._chunked = "chunked" in lowered.get("transfer-encoding", "").lower()
        length = lowered.get("content-length")
        self._remaining = int(length) if length and length.isdigit() else None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def _chunks(self) -> Iterator[bytes]:
        if self._chunked:
            while True:
                size_line = self._file.readline(1024)
                if not size_line:
                    return
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    return
                data = self._file.read(size)
                self._file.readline(8)  # the CRLF after the chunk
                yield data
        elif self._remaining is not None:
            if self._remaining:
                yield self._file.read(self._remaining)
        else:
            while data := self._file.read1(65536):
                yield data

    def lines(self) -> Iterator[bytes]:
        """The body, line by line as it arrives (each without its line end)."""
        pending = b""
        for chunk in self._chunks():
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                yield line.rstrip(b"\r")
        if pending:
            yield pending

    def read(self) -> bytes:
        return b"".join(self._chunks())

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def post(
    url: str, path: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> LoopbackResponse:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise LoopbackError(f"cannot connect to {url}: {exc.strerror or exc}") from None
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        return LoopbackResponse(sock)
    except OSError as exc:
        sock.close()
        raise LoopbackError(f"{url}: {exc.strerror or exc}") from None
