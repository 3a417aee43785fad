"""A minimal HTTP/1.1 client over a plain socket, for one request to a server on this machine
(loopback TCP, or a unix socket such as the Docker engine's).

`http.client` imports `ssl` and the `email` package (15-40 ms); the hot commands (`run`, `ps`)
need a few requests to local servers and a line-by-line read of a streamed answer, which this does
with `socket` alone: `Connection: close`, a `Content-Length` request body, a response read as
chunked, by Content-Length or to the end. Timeouts raise TimeoutError (the socket's), a refused
connection ConnectionRefusedError, anything else broken LoopbackError or another OSError.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator


class LoopbackError(OSError):
    """The server could not be reached or broke the HTTP exchange."""


class ClosedBeforeAnswer(LoopbackError):
    """The server closed the connection before its status line (`http.client`'s
    RemoteDisconnected)."""


class LoopbackResponse:
    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        self._sock = sock
        status_line = self._file.readline(65537)
        if not status_line:
            raise ClosedBeforeAnswer("the server closed the connection without answering")
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


def request(
    sock: socket.socket,
    method: str,
    host_header: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    read_timeout_s: float | None = None,
    on_sent: Callable[[], None] | None = None,
) -> LoopbackResponse:
    """Send one request on a connected socket and read the answer's head. The socket is the
    response's from then on (closed by `LoopbackResponse.close`, or here on failure).
    `on_sent` is called once the request is written, before waiting for the answer."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host_header}", "Connection: close"]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    try:
        if read_timeout_s is not None:
            sock.settimeout(read_timeout_s)
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        if on_sent is not None:
            on_sent()
        return LoopbackResponse(sock)
    except BaseException:
        sock.close()
        raise


def get(
    sock: socket.socket, host: str, path: str, read_timeout_s: float | None = None
) -> tuple[int, bytes]:
    """One GET on a connected socket: (status, body); the socket is closed after."""
    answer = request(sock, "GET", host, path, read_timeout_s=read_timeout_s)
    try:
        return answer.status, answer.read()
    finally:
        answer.close()


def host_header(host: str, port: int) -> str:
    """`host:port` as a Host header writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_tcp(host: str, port: int, timeout_s: float) -> socket.socket:
    # An ASCII name as bytes: a str makes getaddrinfo load the idna codec (3-7 ms of start-up).
    address = host.encode("ascii") if host.isascii() else host
    return socket.create_connection((address, port), timeout=timeout_s)  # type: ignore[arg-type]


def connect_unix(path: str, timeout_s: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def host_port(url: str) -> tuple[str, int]:
    """`http://HOST:PORT/...` as (HOST, PORT): an IPv6 address without its brackets, the host
    in lower case, 80 without a port, 127.0.0.1 without a host (as `urlsplit` reads them; that
    imports urllib.parse and ipaddress, a few ms of `run`'s way through `serve`)."""
    rest = url.partition("://")[2] if "://" in url else url
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = netloc.partition(":")
    return host.lower() or "127.0.0.1", int(port) if port.isdigit() else 80


def post(
    url: str, path: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> LoopbackResponse:
    host, port = host_port(url)
    try:
        sock = connect_tcp(host, port, timeout_s)
    except OSError as exc:
        raise LoopbackError(f"cannot connect to {url}: {exc.strerror or exc}") from None
    try:
        return request(sock, "POST", host_header(host, port), path, body=body, headers=headers)
    except OSError as exc:
        raise LoopbackError(f"{url}: {exc.strerror or exc}") from None
