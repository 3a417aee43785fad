"""Contract double of the Hugging Face Hub's file and metadata API, for machines without the Hub.

Clients reach it through `HF_ENDPOINT` (huggingface_hub's `constants.ENDPOINT`; vLLM and
transformers read the same variable). What it follows, from huggingface_hub's source
(`hf_api.py` `model_info`, `file_download.py` `get_hf_file_metadata` / `http_get`,
`utils/_http.py` `hf_raise_for_status`, `constants.py`):

- `GET /api/models/{repo}/revision/{rev}` (`?blobs=true` adds each sibling's `size`, `blobId`
  and, for an LFS file, `lfs: {sha256, size, pointerSize}`): `{"id", "sha", "gated", "private",
  "siblings": [{"rfilename", ...}]}`.
- `HEAD` / `GET /{repo}/resolve/{rev}/{file}`: every answer carries `X-Repo-Commit` (the
  revision's commit). A regular (git) file answers 200 with `ETag: "<git blob sha1>"` and its
  bytes. An LFS file answers 302 with `Location` (an absolute URL on another host, the storage
  that holds the blob: `http://localhost:PORT/lfs-cdn/{sha256}?...` here, the Hub being
  `http://127.0.0.1:PORT`; the client follows redirects within the Hub's host only),
  `X-Linked-Etag: "<sha256>"` and `X-Linked-Size`; the
  storage honours `Range: bytes=N-` with 206 and `Content-Range` (how huggingface_hub resumes
  a `.incomplete` blob) and needs no token.
- Errors as the Hub sends them, told apart by `X-Error-Code` / `X-Error-Message`: an unknown
  repository 401 `RepoNotFound` (the Hub does not say whether a repository exists to someone
  who may not see it); a token the Hub does not know 401 with "Invalid credentials in
  Authorization header"; a gated repository without a token 401 `GatedRepo`, with a token not
  granted access 403 `GatedRepo`; a missing file 404 `EntryNotFound`; an unknown revision 404
  `RevisionNotFound`.

Conditions a test can set: a slow link (`rate_bytes_per_s`), a connection dropped after a
number of body bytes (`drop_after_bytes`, once), a transfer held after a number of bytes until
the test releases it (`hold_after_bytes`: the test can interrupt the client at a known point
with no sleep).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt")
LFS_MIN_BYTES = 10 * 1024 * 1024  # the Hub stores files above 10 MB with LFS (or Xet)
_CHUNK = 256 * 1024
_SHA256: dict[tuple[str, int, float], str] = {}  # a 500 MB file takes ~1 s: once per session


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(4 * 1024 * 1024):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


@dataclass
class HubFile:
    """One file of a repository, served from a real file on this machine."""

    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def lfs(self) -> bool:
        return self.path.suffix in LFS_SUFFIXES or self.size >= LFS_MIN_BYTES

    @property
    def etag(self) -> str:
        """LFS: the content's sha256; git: the blob's sha1 (`git hash-object`)."""
        if self.lfs:
            return _sha256(self.path)
        data = self.path.read_bytes()
        return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False


@dataclass
class HubState:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)  # tokens the Hub knows
    granted: set[str] = field(default_factory=set)  # of those, the ones a gated repo accepts
    rate_bytes_per_s: float | None = None
    drop_after_bytes: int | None = None  # the next transfer breaks after this many bytes
    hold_after_bytes: int | None = None  # the next transfer waits for `release` after these
    held: threading.Event = field(default_factory=threading.Event)  # set when it is waiting
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    body_bytes_sent: int = 0

    def add_repo(self, repo_id: str, files: dict[str, Path], *, gated: bool = False) -> HubRepo:
        repo = HubRepo(repo_id, {name: HubFile(path) for name, path in files.items()})
        repo.gated = gated
        self.repos[repo_id] = repo
        return repo

    def ranges(self) -> list[str | None]:
        """The Range header of every body transfer (storage GETs and git-file GETs)."""
        return [rng for method, path, rng, _ in self.requests if method == "GET" and (
            path.startswith("/lfs-cdn/") or "/resolve/" in path)]  # fmt: skip


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)$")
_CDN = re.compile(r"^/lfs-cdn/(?P<sha>[0-9a-f]{64})$")


class _Refused(Exception):
    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def _refuse(self, error: _Refused) -> None:
            body = json.dumps({"error": error.message}).encode()
            self.send_response(error.status)
            if error.code:
                self.send_header("X-Error-Code", error.code)
            self.send_header("X-Error-Message", error.message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization")
            if auth is None:
                return None
            token = auth.removeprefix("Bearer ").strip()
            if token not in state.tokens:
                raise _Refused(401, None, "Invalid credentials in Authorization header")
            return token

        def _repo(self, repo_id: str, rev: str) -> HubRepo:
            token = self._token()
            repo = state.repos.get(repo_id)
            if repo is None:
                raise _Refused(401, "RepoNotFound", "Repository not found")
            if repo.gated and token is None:
                raise _Refused(
                    401, "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it and "
                    "be authenticated to access it. Please log in.",
                )  # fmt: skip
            if repo.gated and token not in state.granted:
                raise _Refused(
                    403, "GatedRepo",
                    f"Access to model {repo_id} is restricted and you are not in the authorized "
                    f"list. Visit https://hub.invalid/{repo_id} to ask for access.",
                )  # fmt: skip
            if rev not in ("main", repo.commit):
                raise _Refused(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return repo

        def _route(self) -> None:
            state.requests.append(
                (self.command, self.path, self.headers.get("Range"),
                 self.headers.get("Authorization"))
            )  # fmt: skip
            url = urlsplit(self.path)
            path = unquote(url.path)
            try:
                if match := _API.match(path):
                    self._model_info(
                        self._repo(match["repo"], match["rev"]), "blobs=true" in url.query
                    )
                elif match := _RESOLVE.match(path):
                    repo = self._repo(match["repo"], match["rev"])
                    hub_file = repo.files.get(match["file"])
                    if hub_file is None:
                        raise _Refused(404, "EntryNotFound", "Entry not found")
                    self._resolve(repo, hub_file)
                elif match := _CDN.match(path):
                    found = [f for r in state.repos.values() for f in r.files.values()
                             if f.lfs and f.etag == match["sha"]]  # fmt: skip
                    if not found:
                        raise _Refused(404, None, "NoSuchKey")
                    self._body(found[0], {})
                else:
                    raise _Refused(404, None, "Not found")
            except _Refused as error:
                self._refuse(error)

        do_GET = _route
        do_HEAD = _route

        def _model_info(self, repo: HubRepo, blobs: bool) -> None:
            siblings = []
            for name, hub_file in repo.files.items():
                sibling: dict[str, Any] = {"rfilename": name}
                if blobs:
                    sibling["size"] = hub_file.size
                    sibling["blobId"] = hub_file.etag[:40]
                    if hub_file.lfs:
                        sibling["lfs"] = {"sha256": hub_file.etag, "size": hub_file.size,
                                          "pointerSize": 134}  # fmt: skip
                siblings.append(sibling)
            body = json.dumps({
                "_id": repo.commit[:24], "id": repo.repo_id, "sha": repo.commit,
                "private": False, "gated": "manual" if repo.gated else False,
                "siblings": siblings,
            }).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _resolve(self, repo: HubRepo, hub_file: HubFile) -> None:
            headers = {"X-Repo-Commit": repo.commit}
            if hub_file.lfs:
                # The storage is another host (the Hub's is a CDN): clients follow redirects
                # within the Hub and stop at one to storage, whose answer has no Hub headers.
                storage = f"localhost:{self.server.server_address[1]}"
                self.send_response(302)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("X-Linked-Etag", f'"{hub_file.etag}"')
                self.send_header("X-Linked-Size", str(hub_file.size))
                self.send_header("ETag", f'"{hub_file.etag[:40]}"')  # the pointer file's
                self.send_header(
                    "Location", f"http://{storage}/lfs-cdn/{hub_file.etag}?X-Amz-Signature=double"
                )
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers["ETag"] = f'"{hub_file.etag}"'
            self._body(hub_file, headers)

        def _body(self, hub_file: HubFile, headers: dict[str, str]) -> None:
            size = hub_file.size
            start = 0
            rng = self.headers.get("Range")
            if rng and (match := re.fullmatch(r"bytes=(\d+)-", rng.strip())):
                start = int(match[1])
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            self.send_response(206 if start else 200)
            for key, value in headers.items():
                self.send_header(key, value)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            if self.command == "HEAD":
                return
            self._send(hub_file.path, start, size)

        def _send(self, path: Path, start: int, size: int) -> None:
            drop, state.drop_after_bytes = state.drop_after_bytes, None
            hold, state.hold_after_bytes = state.hold_after_bytes, None
            sent = 0
            began = time.monotonic()
            with path.open("rb") as handle:
                handle.seek(start)
                while start + sent < size:
                    chunk = handle.read(_CHUNK)
                    if drop is not None and sent + len(chunk) >= drop:
                        self.wfile.write(chunk[: drop - sent])
                        self.wfile.flush()
                        state.body_bytes_sent += drop - sent
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if hold is not None and sent + len(chunk) >= hold:
                        self.wfile.write(chunk[: hold - sent])
                        self.wfile.flush()
                        state.body_bytes_sent += hold - sent
                        sent, chunk, hold = hold, chunk[hold - sent :], None
                        state.held.set()
                        state.release.wait(60)
                    try:
                        self.wfile.write(chunk)
                    except OSError:  # the client went away
                        self.close_connection = True
                        return
                    sent += len(chunk)
                    state.body_bytes_sent += len(chunk)
                    if state.rate_bytes_per_s:
                        ahead = sent / state.rate_bytes_per_s - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)  # the link's pace, not a synchronisation

    return Handler


@contextmanager
def serve_hub(state: HubState) -> Iterator[str]:
    """Run the double on a free loopback port; yields its URL (the `HF_ENDPOINT` value)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
