"""The Hugging Face Hub's file API over httpx: what a repository holds, one file's metadata, and
its bytes from a given offset. The routes and headers are huggingface_hub's (`hf_api.py`
`model_info`, `file_download.py` `get_hf_file_metadata`, `utils/_http.py`
`hf_raise_for_status`):

- `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`: `sha` (the commit) and
  `siblings` (`rfilename`, `size`).
- `HEAD {endpoint}/{repo}/resolve/{rev}/{file}`, redirects within the Hub followed, one to
  another host (the storage of an LFS file) not: `X-Repo-Commit`, `X-Linked-Etag` (an LFS
  file's sha256) else `ETag`, `X-Linked-Size` else `Content-Length`, `Location`.
- `GET` of that location with `Range: bytes=N-` continues a transfer (206).
- Errors: `X-Error-Code` `GatedRepo` (401 without a token, 403 without access), `RepoNotFound`
  (401 also for a private repository), `EntryNotFound`, `RevisionNotFound`; 401 "Invalid
  credentials in Authorization header" for a token the Hub does not know.

The token (`HF_TOKEN`) is sent as `Authorization: Bearer`, only to the Hub's own host (httpx
drops it on a redirect to another host), and never appears in a message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

from aitherctl.errors import AitherError, NotFoundError, RefusedError

if TYPE_CHECKING:
    import httpx

DEFAULT_ENDPOINT = "https://huggingface.co"


class HubAccessError(RefusedError):
    """The Hub refused: a gated repository, a wrong token (exit 5: nothing was changed)."""


class HubUnreachableError(AitherError):
    """The Hub could not be reached, or a transfer broke (`done_bytes` were received)."""

    done_bytes = 0


@dataclass(frozen=True, slots=True)
class RepoListing:
    """What a Hub repository holds at a revision: the commit it resolved to, and each file with
    its size."""

    commit: str
    files: tuple[tuple[str, int | None], ...]  # rfilename, size


@dataclass(frozen=True, slots=True)
class FileMeta:
    """One file's metadata, from a `HEAD` of its `resolve` URL: the commit, its etag, its size
    and where its bytes are."""

    commit: str
    etag: str  # an LFS file's sha256, else the git blob id
    size: int | None
    location: str  # where its bytes are (the storage's signed URL for an LFS file)


def hub_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """`HF_ENDPOINT`, as huggingface_hub, vLLM and transformers read it."""
    env = os.environ if environ is None else environ
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token(environ: Mapping[str, str] | None = None) -> str | None:
    """`HF_TOKEN` (huggingface_hub's variable); never printed."""
    env = os.environ if environ is None else environ
    return env.get("HF_TOKEN") or None


def _normalize_etag(value: str | None) -> str | None:
    if value is None:
        return None
    return value.removeprefix("W/").strip('"')


class HubClient:
    def __init__(self, client: httpx.Client, endpoint: str, token: str | None) -> None:
        self.client = client
        self.endpoint = endpoint
        self._token = token

    @classmethod
    def open(cls, environ: Mapping[str, str] | None = None) -> HubClient:
        import httpx

        timeout = httpx.Timeout(30.0, connect=10.0)
        return cls(httpx.Client(timeout=timeout), hub_endpoint(environ), hub_token(environ))

    def close(self) -> None:
        self.client.close()

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity", "User-Agent": "aitherctl"}
        if self._token and urlsplit(url).netloc == urlsplit(self.endpoint).netloc:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _refusal(self, response: httpx.Response, repo: str, what: str) -> AitherError:
        code = response.headers.get("X-Error-Code")
        message = response.headers.get("X-Error-Message") or ""
        status = response.status_code
        if status == 401 and message == "Invalid credentials in Authorization header":
            return HubAccessError(
                f"the Hub at {self.endpoint} does not accept the token in HF_TOKEN: "
                "set a valid one (huggingface.co/settings/tokens) or unset it"
            )
        if code == "GatedRepo":
            if self._token is None:
                return HubAccessError(
                    f"{repo} is a gated repository: accept its terms on the Hub, then set "
                    "HF_TOKEN to a token of that account"
                )
            return HubAccessError(
                f"{repo} is a gated repository and the account of HF_TOKEN has no access yet: "
                "ask for it on the repository's page"
            )
        if code == "RepoNotFound" or status == 401:
            hint = "" if self._token else " (a private repository needs HF_TOKEN)"
            return NotFoundError(f"no repository {repo} on the Hub at {self.endpoint}{hint}")
        if code == "RevisionNotFound":
            return NotFoundError(f"{repo} has no revision {what}")
        if code == "EntryNotFound" or status == 404:
            return NotFoundError(f"{repo} has no file {what}")
        if status == 403:
            return HubAccessError(f"the Hub refused {repo}/{what}: {message or 'forbidden'}")
        return HubUnreachableError(f"the Hub answered {status} for {repo}/{what}")

    def _send(self, method: str, url: str) -> httpx.Response:
        import httpx

        try:
            return self.client.request(method, url, headers=self._headers(url))
        except httpx.HTTPError as exc:
            raise HubUnreachableError(
                f"cannot reach the Hub at {self.endpoint} ({type(exc).__name__}): "
                "check the network, or HF_ENDPOINT"
            ) from None

    def listing(self, repo: str, revision: str) -> RepoListing:
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}?blobs=true"
        response = self._send("GET", url)
        if response.status_code != 200:
            raise self._refusal(response, repo, revision)
        try:
            body = response.json()
            files = tuple(
                (str(item["rfilename"]), item.get("size")) for item in body.get("siblings", [])
            )
            return RepoListing(str(body["sha"]), files)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise HubUnreachableError(
                f"the Hub at {self.endpoint} answered {repo}'s listing with something else "
                "than its JSON: is HF_ENDPOINT a Hub?"
            ) from None

    def file_meta(self, repo: str, revision: str, filename: str) -> FileMeta:
        url = f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(filename)}"
        for _ in range(5):  # redirects within the Hub (a renamed repository)
            response = self._send("HEAD", url)
            location = response.headers.get("Location")
            if response.is_redirect and location:
                target = urljoin(url, location)
                if urlsplit(target).netloc == urlsplit(url).netloc:
                    url = target
                    continue
            break
        if response.status_code >= 400:
            raise self._refusal(response, repo, filename)
        commit = response.headers.get("X-Repo-Commit")
        etag = _normalize_etag(
            response.headers.get("X-Linked-Etag") or response.headers.get("ETag")
        )
        if not commit or not etag:
            raise HubUnreachableError(
                f"{self.endpoint} answered without the Hub's X-Repo-Commit and ETag headers: "
                "is HF_ENDPOINT a Hub?"
            )
        size_text = response.headers.get("X-Linked-Size") or (
            None if response.is_redirect else response.headers.get("Content-Length")
        )
        return FileMeta(
            commit=commit,
            etag=etag,
            size=int(size_text) if size_text and size_text.isdigit() else None,
            location=urljoin(url, location) if response.is_redirect and location else url,
        )

    def read_json(self, repo: str, revision: str, filename: str, limit: int = 16 << 20) -> Any:
        """A small JSON file of the repository (an index), read whole; None when it is not
        JSON or larger than `limit`."""
        meta = self.file_meta(repo, revision, filename)
        if meta.size is not None and meta.size > limit:
            return None
        data = b"".join(self.stream(meta, 0, f"{repo}/{filename}"))
        try:
            return json.loads(data)
        except ValueError:
            return None

    def stream(self, meta: FileMeta, start: int, label: str) -> Iterator[bytes]:
        """The file's bytes from offset `start` (a Range request when `start` > 0).
        `HubUnreachableError` when the transfer breaks."""
        import httpx

        headers = self._headers(meta.location)
        if start:
            headers["Range"] = f"bytes={start}-"
        received = 0
        try:
            with self.client.stream(
                "GET", meta.location, headers=headers, follow_redirects=True
            ) as response:
                if response.status_code == 416:
                    return  # nothing past `start`: the file was complete
                if response.status_code >= 400:
                    response.read()
                    raise self._refusal(response, label, label)
                if start and response.status_code != 206:
                    raise HubUnreachableError(f"{label}: the server cannot continue a transfer")
                for chunk in response.iter_bytes():  # as received: a break loses nothing
                    received += len(chunk)
                    yield chunk
        except httpx.HTTPError as exc:
            error = HubUnreachableError(
                f"{label}: the transfer broke after {start + received:,} bytes "
                f"({type(exc).__name__})"
            )
            error.done_bytes = start + received
            raise error from None
