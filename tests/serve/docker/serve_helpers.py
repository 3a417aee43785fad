"""Running the real `aitherctl serve` in its own process, as a user or a systemd unit would, and
the outside clients the gateway's tests talk to it with (the official `openai` client, curl).

`serving(...)` starts `python -m aitherctl serve --port P [--profile NAME] [extra args]`, waits
until `GET /health` answers 200, yields a `Served` (base URL, the Popen, the port, its log), and
on the way out sends SIGTERM and checks the exit status (0 by default: `serve` drains and exits
cleanly on SIGTERM). stdout and stderr go to a file, never a pipe, so a chatty server can never
block on a full pipe; the log's tail is put into every failure message.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

HEALTH_TIMEOUT_S = 60.0  # `serve` asks Docker what runs before it listens: a second or two here
STOP_TIMEOUT_S = 60.0  # SIGTERM drains requests in flight (`--drain`, 30 s by default) first
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Served:
    """A running `aitherctl serve`: `url` is its root (`http://127.0.0.1:P`, no `/v1`)."""

    url: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def __iter__(self) -> Iterator[Any]:  # `url, process = served` reads as the brief says
        return iter((self.url, self.process))

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log()[-chars:]

    def status(self) -> dict[str, Any]:
        """`GET /status`: the scheduler's snapshot (backends, pools, the last events)."""
        response = httpx.get(self.url + "/status", timeout=10, trust_env=False)
        response.raise_for_status()
        snapshot: dict[str, Any] = response.json()
        return snapshot

    def backend(self, name: str) -> dict[str, Any]:
        """One backend's entry of `GET /status`."""
        for entry in self.status()["backends"]:
            if entry["backend"] == name:
                return dict(entry)
        raise AssertionError(f"no backend {name!r} in /status")

    def wait_state(self, name: str, *states: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Poll `GET /status` until backend `name` is in one of `states`."""
        deadline = time.monotonic() + timeout_s
        while True:
            entry = self.backend(name)
            if entry["state"] in states:
                return entry
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} stayed {entry['state']!r}, wanted {states}: {entry}\n"
                    f"events: {json.dumps(self.status()['events'], indent=1)}\n"
                    f"serve log:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def events(self) -> list[dict[str, Any]]:
        """The last scheduler events `GET /status` reports (oldest first)."""
        return list(self.status()["events"])


def serve_command(port: int, profile: str | None, args: Sequence[str] = ()) -> list[str]:
    command = [sys.executable, "-m", "aitherctl", "serve", "--port", str(port)]
    if profile is not None:
        command += ["--profile", profile]
    return [*command, *args]


@contextlib.contextmanager
def serving(
    profile: str | None = None,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    health_timeout_s: float = HEALTH_TIMEOUT_S,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    expect_exit: int | None = 0,
) -> Iterator[Served]:
    """Run `aitherctl serve` for the `with` block. `env` is added to this process's environment
    (the test's namespace and directories come from there); `args` go after `--profile` (e.g.
    `["--drain", "5"]`, `["--host", "0.0.0.0", "--keys-file", f]`). `expect_exit=None` skips the
    exit-status check (a test that kills it on purpose)."""
    port = port or free_port()
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    url = f"http://{reach}:{port}"
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept until the server is gone
        prefix=f"aither-serve-{port}-", suffix=".log", delete=False
    )
    command = serve_command(
        port, profile, [*(["--host", host] if host != "127.0.0.1" else []), *args]
    )
    process = subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    served = Served(url, process, port, Path(log_file.name))
    body_failed = False
    try:
        _wait_healthy(served, health_timeout_s)
        yield served
    except BaseException:
        body_failed = True
        _report(served)  # pytest shows this output with the failure
        raise
    finally:
        code = _stop(process, stop_timeout_s)
        log_file.close()
        if not body_failed and expect_exit is not None and code != expect_exit:
            raise AssertionError(
                f"aitherctl serve exited {code} after SIGTERM, expected {expect_exit}\n"
                f"serve log:\n{served.log_tail()}"
            )
        if not body_failed:
            with contextlib.suppress(OSError):
                served.log_path.unlink()


def _report(served: Served) -> None:
    """What the scheduler last did and what serve wrote, for a failing test's output."""
    try:
        events = json.dumps(served.events(), indent=1)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        events = f"(GET /status failed: {exc!r})"
    code = served.process.poll()
    alive = "still running" if code is None else f"had already exited with {code}"
    print(f"--- aitherctl serve on {served.url} ({alive}): last events ---\n{events}")
    print(f"--- serve log ({served.log_path}) ---\n{served.log_tail()}")


def _wait_healthy(served: Served, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(trust_env=False, timeout=2) as client:
        while True:
            code = served.process.poll()
            if code is not None:
                raise AssertionError(
                    f"aitherctl serve exited {code} before answering /health\n"
                    f"serve log:\n{served.log_tail()}"
                )
            try:
                response = client.get(served.url + "/health")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"aitherctl serve did not answer /health in {timeout_s:.0f}s ({last})\n"
                    f"serve log:\n{served.log_tail()}"
                )
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, wait; SIGKILL only if it never exits (reported as -9 by the caller's check)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


# ---- outside clients ---------------------------------------------------------------------------


def openai_client(served: Served, *, api_key: str = "none", timeout_s: float = 600.0) -> Any:
    """The official `openai` client pointed at the gateway (its own httpx client without proxy
    settings from the environment: the gateway is on loopback)."""
    from openai import OpenAI

    return OpenAI(
        base_url=served.v1,
        api_key=api_key,
        timeout=timeout_s,
        max_retries=0,  # a retry would hide what the gateway answered first
        http_client=httpx.Client(trust_env=False, timeout=timeout_s),  # type: ignore[arg-type]
    )


@dataclass(frozen=True, slots=True)
class CurlReply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def curl(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 300.0,
) -> CurlReply:
    """One request with the curl binary: status, response headers and body as it sent them."""
    with tempfile.NamedTemporaryFile(suffix=".headers") as head:
        command = [
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-X",
            method,
            "-D",
            head.name,
            "--max-time",
            str(timeout_s),
            url,
        ]
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        if body is not None:
            command += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        result = subprocess.run(
            command,
            input=None if body is None else json.dumps(body).encode(),
            capture_output=True,
            timeout=timeout_s + 10,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"curl failed ({result.returncode}): {result.stderr.decode()}")
        raw = Path(head.name).read_text(errors="replace")
    status, parsed = 0, dict[str, str]()
    for line in raw.splitlines():
        if line.startswith("HTTP/"):
            status, parsed = int(line.split()[1]), {}  # the last response (after any 100)
        elif ":" in line:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
    return CurlReply(status, parsed, result.stdout.decode(errors="replace"))


__all__ = ["CurlReply", "Served", "curl", "openai_client", "serve_command", "serving"]


def ledger_rows(data_dir: Path) -> list[dict[str, Any]]:
    """Every row of the request ledger `serve` wrote in `data_dir`, oldest first."""
    import sqlite3

    db = sqlite3.connect(data_dir / "ledger.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        db.close()
