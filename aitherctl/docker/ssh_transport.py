"""Docker over SSH through the system `ssh`: kept-alive connections over one multiplexed session.

Why not the Docker SDK's own transport (`use_ssh_client=True`, docker 7.2,
docker/transport/sshconn.py): its adapter builds a new connection pool for every request, so
every HTTP request starts its own `ssh HOST docker system dial-stdio`, with its own TCP
connection, key exchange and authentication, and that ssh writes to the terminal. A switch on one
remote host started 24 of them (counted with a logging `ssh` wrapper on PATH), each 0.5-0.6 s
here on loopback: +8 s over the same switch on a local socket (bench/bench_hosts.py).

What this transport does instead (the public names: `docker_client`, `control_path`):

- **Kept-alive HTTP.** One urllib3 pool per client (`POOL_SIZE` idle connections kept; more are
  opened when threads ask at once and closed after use). Each connection is one
  `ssh ... -- HOST docker system dial-stdio` whose stdin and stdout are one end of a socketpair,
  so the client holds a real socket: the client's timeout bounds every read, and a connection
  whose ssh died reads as dropped and is replaced before it is reused.
- **One SSH connection per host, kept a while.** OpenSSH multiplexing: `ControlMaster=auto`,
  `ControlPath` in a private folder (`control_path`), `ControlPersist=60`. The first connection
  becomes the master; later ones, in this command and in the next commands within 60 s of the
  last use, open a session over it (no TCP handshake, key exchange or authentication). The master
  sends keepalives (`ServerAliveInterval=10`, `ServerAliveCountMax=3`), so a host that vanishes
  takes its master with it within about 30 s and the next connection reaches the host afresh
  (a command within that window waits for the client's own timeout, as with any broken
  connection). A master that dies or is killed leaves a stale socket, which the next `ssh` with
  `ControlMaster=auto` removes before it becomes the new master: nothing to clean up.
- **The user's ssh setup applies.** Only the options above are given on the command line (they
  win over ~/.ssh/config for these connections; a `ControlPath` of the user's own is therefore
  not shared with aitherctl). `HostName`, `User`, `Port`, keys, agents, `ProxyJump` and
  `ProxyCommand`, known hosts and prompts (on /dev/tty) are ssh's as always.
  `AITHER_SSH_MULTIPLEX=0` leaves the control options out altogether (the user's own config
  then decides, `ControlMaster` included); connections are still kept alive.
- **No ssh output on the terminal.** ssh's stderr (and what the far side's `dial-stdio` writes)
  is captured. When a request fails because its ssh ended, the last thing ssh said becomes the
  error's one line ("ssh: connect to host box port 22: Connection refused", "the Docker engine
  behind ssh does not answer (dial unix /var/run/docker.sock: connect: connection refused)").

Trade-offs: a master process (`ssh: PATH [mux]`) stays up to 60 s after the last command; it is
the user's own process, reachable only through its socket, which ssh creates mode 0600 in a
folder that is the user's and mode 0700 (checked: owner, not a symlink). A session opened over a
master counts against the server's `MaxSessions` (sshd's default 10): one command keeps at most
`POOL_SIZE` connections per client. A remote host's processes see one SSH login per minute of
use instead of one per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.exceptions
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

if TYPE_CHECKING:
    import docker

CONTROL_PERSIST_S = 60
"""How long a master connection outlives its last session (`ControlPersist`)."""
ALIVE_INTERVAL_S = 10
ALIVE_COUNT_MAX = 3
POOL_SIZE = 8
"""Idle connections kept per client; below sshd's default `MaxSessions` of 10."""
MULTIPLEX_ENV = "AITHER_SSH_MULTIPLEX"
DIAL_STDIO = "docker system dial-stdio"

# A unix socket's path holds at most 107 bytes on Linux (sun_path[108]) and 103 on macOS, and
# ssh binds the master first at PATH + "." + 16 random characters, then renames it.
_SOCKET_PATH_MAX = 103 - 17
_NAME_LENGTH = 16
_EXIT_WAIT_S = 1.0
_STDERR_MAX = 65536
_REASON_MAX = 200
# Lines that say nothing about a failure: ssh's note on a host key it added, and what
# `docker system dial-stdio` logs when its stdin closes first (a normal end).
_NOISE = ("Warning: Permanently added", "error while CloseWrite")
_LOG_MESSAGE = re.compile(r'\bmsg="((?:[^"\\]|\\.)*)"')

_current = threading.local()


@dataclass(frozen=True, slots=True)
class SshTarget:
    """`ssh://[user@]host[:port]` as ssh is given it (`-l user -p port -- host`)."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, endpoint: str) -> SshTarget:
        parts = urlsplit(endpoint)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError(f"{endpoint!r} is not ssh://[user@]host[:port]")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{endpoint!r}: the port is not a number") from None
        return cls(host=parts.hostname, user=parts.username or None, port=port)

    def describe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


def multiplexing_wanted() -> bool:
    """False when `AITHER_SSH_MULTIPLEX` is 0, no, off or false."""
    value = os.environ.get(MULTIPLEX_ENV, "").strip().lower()
    return value not in {"0", "no", "off", "false"}


def control_path(endpoint: str) -> str | None:
    """Where the master connection for `endpoint` listens: `<folder>/<16 hex>`, the name a hash
    of aitherctl's state folder and the endpoint (so separate state folders, tests' included,
    never share a master). The folder is the first of `<state>/ssh`,
    `$XDG_RUNTIME_DIR/aitherctl-ssh` and `/tmp/aitherctl-ssh-<uid>` that keeps the socket's path
    short enough and is private (this user's, mode 0700, not a symlink). None when multiplexing
    is off or no folder qualifies."""
    if not multiplexing_wanted():
        return None
    from aitherctl.paths import state_dir_text

    state = state_dir_text()
    name = hashlib.sha256(f"{state}\0{endpoint}".encode()).hexdigest()[:_NAME_LENGTH]
    for folder in _control_folders(state):
        if len(folder) + 1 + _NAME_LENGTH > _SOCKET_PATH_MAX:
            continue
        if any(char.isspace() or char in "\"'\\" for char in folder):
            continue  # ssh would split or unquote it
        if _private_folder(folder):
            return f"{folder}/{name}"
    return None


def _control_folders(state: str) -> list[str]:
    # Another user's state or runtime folder (root under `sudo` that keeps the user's
    # environment) is not ours to put a socket in.
    folders = []
    state = os.path.abspath(state)
    if not os.path.exists(state) or _owned(state):
        folders.append(os.path.join(state, "ssh"))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and _owned(runtime):
        folders.append(os.path.join(runtime, "aitherctl-ssh"))
    folders.append(f"/tmp/aitherctl-ssh-{os.geteuid()}")
    return folders


def _owned(path: str) -> bool:
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False


def _private_folder(folder: str) -> bool:
    """Create `folder` mode 0700 if need be; True when it is a folder this user owns that no one
    else may enter (a folder with wider modes of ours is narrowed)."""
    try:
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False
        if info.st_mode & 0o077:
            os.chmod(folder, 0o700)
    except OSError:
        return False
    return True


def ssh_command(target: SshTarget, control: str | None) -> list[str]:
    """The `ssh` command line for one connection to the engine behind `target`."""
    command = ["ssh", "-T"]
    if control is not None:
        command += [
            "-o", "ControlMaster=auto",
            "-o", "ControlPath=" + control.replace("%", "%%"),
            "-o", f"ControlPersist={CONTROL_PERSIST_S}",
            "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}",
            "-o", f"ServerAliveCountMax={ALIVE_COUNT_MAX}",
        ]  # fmt: skip
    if target.user:
        command += ["-l", target.user]
    if target.port:
        command += ["-p", str(target.port)]
    return [*command, "--", target.host, DIAL_STDIO]


def summarize_stderr(text: str) -> str | None:
    """One line from what ssh (and the far side's dial-stdio) wrote, or None if it said nothing
    that explains a failure."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not any(noise in line for noise in _NOISE)]
    if not lines:
        return None
    for line in reversed(lines):
        # docker's CLI on the far side could not reach its engine:
        # "failed to open the raw stream connection: dial unix ...: connect: connection refused"
        if "failed to open the raw stream connection" in line:
            detail = line.split(": ", 1)[1] if ": " in line else line
            return _clip(f"the Docker engine behind ssh does not answer ({detail})")
    line = lines[-1]
    logged = _LOG_MESSAGE.search(line)  # docker's CLI logs `time=... level=error msg="..."`
    if logged:
        line = logged.group(1)
    return _clip(line if line.startswith("ssh:") else f"ssh: {line}")


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _REASON_MAX else flat[: _REASON_MAX - 1] + "…"


# ---- one connection: one ssh process -----------------------------------------------------------


class _ChannelSocket(socket.socket):
    """Our end of the socketpair. The SDK finds the socket of a streamed response (to lift its
    timeout while following logs) as `response.raw._fp.fp.channel` on ssh:// clients
    (docker/api/client.py, `_get_raw_response_socket`), so the files made from it carry
    `channel`."""

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        file = super().makefile(*args, **kwargs)
        with contextlib.suppress(AttributeError):
            file.channel = self
        return file


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole foreground process group: ssh must outlive it so that a switch
    # interrupted by the user can still roll back over its connections (the SDK does the same).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ssh_environment() -> dict[str, str]:
    env = dict(os.environ)
    # As the SDK: a bundled Python's library path and CA file are not for ssh.
    env.pop("LD_LIBRARY_PATH", None)
    env.pop("SSL_CERT_FILE", None)
    return env


class SshConnection(urllib3.connection.HTTPConnection):
    """HTTP over one `ssh ... docker system dial-stdio` process."""

    def __init__(self, command: Sequence[str], timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.command = list(command)
        self.process: subprocess.Popen[bytes] | None = None
        self.failure: str | None = None

    def _new_conn(self) -> socket.socket:
        self.failure = None  # urllib3 reconnects a closed connection object: a new ssh
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                self.command,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=subprocess.PIPE,
                env=_ssh_environment(),
                close_fds=True,
                preexec_fn=_ignore_sigint,  # noqa: PLW1509 (what the SDK does; see _ignore_sigint)
            )
        except OSError as exc:
            ours.close()
            self.failure = (
                f"no `{self.command[0]}` on PATH: install the OpenSSH client"
                if isinstance(exc, FileNotFoundError)
                else f"cannot run `{self.command[0]}`: {exc.strerror}"
            )
            raise urllib3.exceptions.NewConnectionError(self, self.failure) from None
        finally:
            theirs.close()
        sock = _ChannelSocket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=ours.detach())
        sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _current.connection = self  # which connection a failing request used (SshAdapter.send)
        super().request(*args, **kwargs)

    def close(self) -> None:
        ended = self.sock is not None and _at_eof(self.sock)
        try:
            super().close()
        finally:
            self._finish(ended=ended)

    def _finish(self, *, ended: bool) -> None:
        """Stop and reap the ssh process. When it had already hung up (`ended`), wait for it to
        exit and keep the reason it gave in `failure`."""
        process, self.process = self.process, None
        if process is None:
            return
        if ended:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_EXIT_WAIT_S)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(_EXIT_WAIT_S)
        text = _drain(process)
        if ended and text:
            self.failure = summarize_stderr(text)


def _at_eof(sock: socket.socket) -> bool:
    """Whether the far end of the socketpair hung up (ssh exited or closed its stdout)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _drain(process: subprocess.Popen[bytes]) -> str:
    """What ssh wrote to its stderr, without waiting: a master that ssh forked for
    `ControlPersist` keeps nothing of it (it moves its stdio to /dev/null)."""
    stream = process.stderr
    if stream is None:
        return ""
    chunks: list[bytes] = []
    try:
        fd = stream.fileno()
        os.set_blocking(fd, False)
        size = 0
        while size < _STDERR_MAX:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            stream.close()
    return b"".join(chunks).decode("utf-8", "replace")


class SshConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, command: Sequence[str], timeout: float, maxsize: int) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=maxsize)
        self.command = list(command)

    def _new_conn(self) -> SshConnection:
        return SshConnection(self.command, self.timeout.connect_timeout)  # type: ignore[arg-type]


class SshAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter that sends every request to one Docker engine over ssh."""

    def __init__(
        self, target: SshTarget, command: Sequence[str], timeout: float, pool_size: int = POOL_SIZE
    ) -> None:
        self.target = target
        self.pool = SshConnectionPool(command, timeout, pool_size)
        super().__init__()

    # requests passes these by keyword: the names stay, unused (one pool, no TLS, no proxies).
    def get_connection(self, url: str | bytes, proxies: Any = None) -> SshConnectionPool:  # noqa: ARG002
        return self.pool

    def get_connection_with_tls_context(
        self,
        request: Any,  # noqa: ARG002
        verify: Any,  # noqa: ARG002
        proxies: Any = None,  # noqa: ARG002
        cert: Any = None,  # noqa: ARG002
    ) -> SshConnectionPool:
        return self.pool

    def request_url(self, request: Any, proxies: Any) -> str:  # noqa: ARG002
        return str(request.path_url)  # no proxies, no host: the path is the whole URL

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        _current.connection = None
        try:
            return super().send(request, *args, **kwargs)
        except requests.exceptions.ConnectionError as exc:
            reason = _failure_of(getattr(_current, "connection", None))
            if reason is None:
                raise
            raise requests.exceptions.ConnectionError(reason, request=request) from exc
        finally:
            _current.connection = None

    def close(self) -> None:
        super().close()
        self.pool.close()


def _failure_of(connection: SshConnection | None) -> str | None:
    if connection is None:
        return None
    if connection.process is not None:  # not closed by urllib3 yet: it is broken either way
        connection.close()
    return connection.failure


def docker_client(endpoint: str, *, timeout: int = 60) -> docker.DockerClient:
    """A Docker SDK client for `ssh://[user@]host[:port]` over this transport. The API version
    is the engine's (`GET /version` → `ApiVersion`, as the SDK's `version="auto"` asks), read
    over the connection the client then keeps using. Raises `docker.errors.DockerException` or
    `requests.exceptions.RequestException` (with ssh's reason) when the engine cannot be used."""
    import docker
    import docker.errors

    target = SshTarget.parse(endpoint)
    adapter = SshAdapter(target, ssh_command(target, control_path(endpoint)), timeout)
    try:
        request = requests.Request("GET", "http+docker://ssh/version").prepare()
        response = adapter.send(request, timeout=timeout)
        if response.status_code != 200:
            raise docker.errors.DockerException(
                f"GET /version answered {response.status_code}: {response.text[:_REASON_MAX]}"
            )
        try:
            version = str(response.json()["ApiVersion"])
        except (ValueError, KeyError, TypeError):
            raise docker.errors.DockerException(
                "GET /version gave no ApiVersion: is that a Docker engine?"
            ) from None
        client = docker.DockerClient(
            base_url=endpoint, use_ssh_client=True, timeout=timeout, version=version
        )
    except BaseException:
        adapter.close()
        raise
    # Replaces the SDK's own ssh adapter, which has opened nothing yet.
    client.api.mount("http+docker://ssh", adapter)
    return client
