"""`aitherctl serve` as people expect a server to behave (issue 20): a log line per request and
one at shutdown, an honest model list, the truest status for a request it cannot serve, and one
`serve` per machine.

`serve` runs as its own process (tests/serve/docker/serve_helpers.py) and is spoken to with the
official `openai` client and curl. Its backends are the chat contract double
(tests/doubles/chat_server.py) and, for the route a backend lacks, a real llama.cpp server.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, llama_service, run_cli
from tests.doubles.chat_server import RunningDouble, chat_double
from tests.serve.docker.serve_helpers import Served, curl, openai_client, serving

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
SECRET = "s3cret-key-never-logged-0123"
PROMPT = "the secret plan is purple elephants"
LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?P<who>[^ ]+(?: [^ ]+)?) (?P<model>\S+) → (?P<backend>\S+) "
    r"(?P<status>\d{3}) queue (?P<queue>\d+\.\d\ds|-) load (?P<load>\d+\.\d\ds|-) "
    r"tokens (?P<tokens>\S+) \d+\.\d\ds"
)


@pytest.fixture
def double() -> Iterator[RunningDouble]:
    with chat_double() as server:
        yield server


@pytest.fixture
def profiles(write_profile: Callable[..., Path], double: RunningDouble) -> str:
    for name in ("front", "other"):
        write_profile(
            name,
            services={},
            endpoints={
                "local": {"base_url": f"{double.root}/v1", "model": "smol", "engine": "llamacpp"},
                "cloud": {
                    "base_url": "https://api.example.invalid/v1",
                    "model": "big-model",
                    "api_key_env": "SERVE_TEST_UNSET_KEY",
                },
            },
            routing={"tiers": {"all": {"effort": "1-10", "candidates": ["local"]}}},
        )
    return "front"


def _stop(served: Served) -> str:
    """SIGTERM, wait, and the whole log (the helper removes it after the block)."""
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(timeout=60)
    return served.log()


def _request_lines(log: str) -> list[re.Match[str]]:
    return [m for line in log.splitlines() if (m := LINE.fullmatch(line))]


def test_one_line_per_request_and_one_at_shutdown(profiles: str) -> None:
    env = {**NO_DOCKER, "AITHER_API_KEYS": f"{SECRET} interactive editor"}
    with serving(profiles, env=env) as served:
        client = openai_client(served, api_key=SECRET)
        stream = client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        unknown = curl(
            "POST",
            served.v1 + "/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": PROMPT}]},
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        assert unknown.status == 404
        log = _stop(served)
    assert PROMPT not in log
    assert SECRET not in log
    lines = _request_lines(log)
    assert [(m["who"], m["model"], m["backend"], m["status"]) for m in lines] == [
        ("127.0.0.1 editor", "local", "local", "200"),
        ("127.0.0.1 editor", "nope", "-", "404"),
    ]
    assert (lines[0]["queue"], lines[0]["load"], lines[0]["tokens"]) == (
        "0.00s",
        "0.00s",
        "14/5",
    )  # as the double counts
    last = log.splitlines()[-1]
    assert re.fullmatch(
        rf"stopped serving on {re.escape(served.url)} after \d+s: 2 request\(s\), 1 failed", last
    ), last


def test_quiet_keeps_only_the_start_and_stop_lines(profiles: str) -> None:
    with serving(profiles, env=NO_DOCKER, args=["--quiet"]) as served:
        openai_client(served).chat.completions.create(
            model="local", messages=[{"role": "user", "content": "hi"}]
        )
        log = _stop(served)
    lines = log.splitlines()
    assert len(lines) == 2, log
    assert lines[0] == (f"serving profile front on {served.v1} (Ctrl-C or SIGTERM to stop)")
    assert lines[1].endswith(": 1 request(s)")


def test_models_says_which_need_a_key_and_refusals_get_the_truest_status(profiles: str) -> None:
    openai = pytest.importorskip("openai")
    with serving(profiles, env=NO_DOCKER) as served:
        models = {m["id"]: m["aither"] for m in curl("GET", served.v1 + "/models").json()["data"]}
        assert models["cloud"] == {
            "kind": "backend",
            "backend": "cloud",
            "state": "unavailable",
            "apis": ["chat.completions", "responses", "messages"],
            "apis_translated": ["responses", "messages"],
            "apis_tried": ["rerank", "score", "audio.transcriptions"],
            "reason": "$SERVE_TEST_UNSET_KEY is not set where `aitherctl serve` runs",
        }
        assert models["local"]["state"] == "ready"
        client = openai_client(served)
        hello = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.AuthenticationError) as missing_key:
            client.chat.completions.create(model="cloud", messages=hello)
        assert missing_key.value.status_code == 401
        assert "$SERVE_TEST_UNSET_KEY is not set" in str(missing_key.value)
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model="no-such-model", messages=hello)
        assert unknown.value.status_code == 404


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "aitherctl", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **NO_DOCKER},
        stdin=subprocess.DEVNULL,
    )


def test_a_second_serve_refuses_unless_told_another_port_and_profile(profiles: str) -> None:
    with serving(profiles, env=NO_DOCKER) as served:
        pid = served.process.pid
        expected = (
            f"error: `aitherctl serve` already runs here (profile front on {served.url}, pid "
            f"{pid}): two would fight over this machine's memory; stop it, or pass both --port "
            "and --profile to serve another profile beside it\n"
        )
        other_port = str(free_port())
        for args in (
            (),
            ("--port", other_port),
            ("--profile", "other"),
            ("--port", other_port, "--profile", "front"),
        ):
            refused = _serve(*args)
            assert (refused.returncode, refused.stdout, refused.stderr) == (8, "", expected), args
        with serving("other", port=int(other_port), env=NO_DOCKER) as beside:
            assert curl("GET", beside.url + "/health").status == 200
        # Another Docker engine ($DOCKER_HOST) has its own memory: its serve may start.
        other_engine = {"DOCKER_HOST": "unix:///nonexistent/another-engine.sock"}
        with serving("front", env=other_engine) as elsewhere:
            assert curl("GET", elsewhere.url + "/health").status == 200


@pytest.mark.docker
def test_a_route_the_backend_lacks_is_501(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    """llama.cpp started without --embeddings answers /v1/embeddings with 501: so does serve,
    not a 503 that official clients retry."""
    del llama_image
    write_profile("noembed", services={"llama": llama_service(free_port())})
    assert run_cli("profile", "switch", "noembed", "--yes", timeout=300).returncode == 0
    with serving("noembed") as served:
        reply = curl("POST", served.v1 + "/embeddings", {"model": "llama", "input": "hi"})
        assert reply.status == 501, reply.body
        assert reply.json()["error"]["type"] == "not_implemented"
