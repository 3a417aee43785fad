"""What `aitherctl serve` reads from its upstreams and its keys file, through the real process:
no compressed body passed through, the stream's end read from the SSE event, a keys file parsed
strictly. The OpenAI contract double (tests/doubles/chat_server.py) plays the provider."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.doubles.chat_server import chat_double
from tests.serve.docker.serve_helpers import curl, serving

HI = {"model": "all", "messages": [{"role": "user", "content": "Hi"}]}


def _profile(write_profile: Callable[..., Path], root: str) -> None:
    write_profile(
        "up",
        services={},
        endpoints={
            "cloud": {
                "base_url": f"{root}/v1",
                "model": "gpt-double",
                "price": {"input": 1, "output": 1},
            }
        },
        routing={"max_tokens": 16, "tiers": {"all": {"effort": "1-10", "candidates": ["cloud"]}}},
    )


def _rows(data: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        rows: list[dict[str, Any]] = []
        if (data / "ledger.sqlite3").exists():
            db = sqlite3.connect(data / "ledger.sqlite3")
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY id")]
            db.close()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_a_provider_that_compresses_is_decoded_and_its_usage_read(
    write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    """A client that never asked for compression (curl without --compressed) gets plain JSON,
    and the ledger row has the provider's token counts."""
    with chat_double(mode="complete", compress=True) as cloud:
        _profile(write_profile, cloud.root)
        with serving("up") as served:
            answer = curl("POST", served.v1 + "/chat/completions", HI)
    assert answer.status == 200
    assert "content-encoding" not in answer.headers
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from the double."
    assert cloud.state.headers[-1]["accept-encoding"] == "identity"
    row = _rows(tmp_path / "data", 1)[0]
    assert (row["outcome"], row["tokens_in"], row["tokens_out"]) == ("ok", 9, 5)


def test_done_in_the_models_text_is_not_the_end_of_the_stream(
    write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    """The model writes "[DONE]" and the connection then drops before the real `data: [DONE]`
    event: the answer is partial (the client gets the error event), not complete."""
    words = ("The marker is ", "data: [DONE]", " and then", " more")
    with chat_double(mode="no_done", words=words) as cloud:
        _profile(write_profile, cloud.root)
        with serving("up") as served:
            stream = curl("POST", served.v1 + "/chat/completions", {**HI, "stream": True})
    assert stream.status == 200
    assert "data: [DONE]" in stream.body  # the model's text, passed on
    assert "failed after the answer had started" in stream.body
    row = _rows(tmp_path / "data", 1)[0]
    assert row["outcome"] == "partial"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            "sk-0123456789abcdef#rest",
            "'#' inside a word: put comments on their own line or after a space "
            "(a key may not contain '#')",
        ),
        (
            "sk-0123456789abcdef,sk-second-key-0123456",
            "',' in a keys file: one key per line (commas separate keys only in $AITHER_API_KEYS)",
        ),
        ("sk-0123456789abcdef batch editor extra", "4 words; expected KEY [priority] [NAME]"),
    ],
)
def test_a_keys_file_line_that_would_be_cut_is_refused_with_its_line(
    tmp_path: Path, line: str, error: str
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(line + "\n")
    result = run_cli("serve", "--keys-file", str(keys), "--port", "1")
    assert result.returncode == 2
    assert result.stderr == f"error: {keys}:1: {error}\n"


def test_a_keys_file_with_comments_and_priorities_is_read(tmp_path: Path) -> None:
    from aitherctl.serve.app import parse_keys

    keys = parse_keys(
        "# editors\nsk-0123456789abcdef interactive editor  # mine\n\n"
        "  sk-fedcba9876543210 batch\n",
        "keys",
    )
    assert [(k.name, k.secret, k.priority.label) for k in keys] == [
        ("editor", "sk-0123456789abcdef", "interactive"),
        ("key-4", "sk-fedcba9876543210", "batch"),
    ]
    env = parse_keys("sk-0123456789abcdef, sk-fedcba9876543210 batch", "$AITHER_API_KEYS", env=True)
    assert [k.name for k in env] == ["key-1", "key-2"]
