"""`aitherctl run` and `aitherctl usage` as a user and a script see them: streamed text on stdout,
one status line on stderr, --json shapes, --explain sending nothing, exit codes 9 and 10.

The backends are real HTTP servers started in the test (tests/doubles/chat_server.py); Docker is
made unreachable so the profile's endpoints and health probes alone decide.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitherctl.cli import runtime
from aitherctl.cli.app import app
from aitherctl.errors import DockerUnavailableError
from aitherctl.routing.static_embedding import score_effort
from tests.doubles.chat_server import RunningDouble, chat_double

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable() -> object:
        raise DockerUnavailableError("no Docker engine in this test")

    monkeypatch.setattr(runtime, "docker", unreachable)
    monkeypatch.setattr(runtime, "docker_reader", unreachable)


@pytest.fixture
def double() -> Iterator[RunningDouble]:
    with chat_double() as server:
        yield server


@pytest.fixture
def routed(write_profile: Callable[..., Path], double: RunningDouble) -> str:
    write_profile(
        "routed",
        f"""
        name: routed
        services: {{}}
        routing:
          tiers:
            small: {{effort: 1-5, candidates: [local]}}
            big: {{effort: 6-10, candidates: [cloud, local]}}
        endpoints:
          local: {{base_url: "{double.root}/v1", model: smol, engine: llamacpp, health: /health}}
          cloud: {{base_url: "https://api.example.invalid/v1", model: big-model,
                   api_key_env: ROUTED_TEST_KEY, price: {{input: 1, output: 4}}}}
        budget: {{daily_usd: 2}}
        """,
    )
    return "routed"


def invoke(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), input=stdin)


def test_run_streams_answer_and_one_status_line(routed: str) -> None:
    result = invoke("run", "--profile", routed, "hello")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Hello from the double.\n"
    (line,) = result.stderr.strip().splitlines()
    effort = score_effort("hello").score  # the scorer's own (tests/routing/unit/test_effort.py)
    assert effort <= 5
    assert line.startswith(f"effort {effort} · small · local (smol) · ttft ")
    assert line.endswith("$0.0000")


def test_an_answer_cut_at_max_tokens_says_so_on_its_status_line(routed: str) -> None:
    """An answer that stops mid-sentence because of the output limit (the profile's
    routing.max_tokens, or --max-tokens) used to look like the model's own end."""
    result = invoke("run", "--profile", routed, "--max-tokens", "2", "hello")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Hello from\n"
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("$0.0000 · stopped at max_tokens 2")


def test_run_reads_stdin_and_file(routed: str, tmp_path: Path, double: RunningDouble) -> None:
    assert invoke("run", "-p", routed, stdin="from stdin").exit_code == 0
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("from a file")
    assert invoke("run", "-p", routed, "-f", str(prompt_file)).exit_code == 0
    sent = [body["messages"][-1]["content"] for body in double.state.requests]
    assert sent == ["from stdin", "from a file"]


def test_run_sends_the_instruction_then_the_file(
    routed: str, tmp_path: Path, double: RunningDouble
) -> None:
    patch = tmp_path / "change.patch"
    patch.write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n")
    result = invoke("run", "-p", routed, "Summarise this diff", "-f", str(patch))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Hello from the double.\n"
    (sent,) = [body["messages"][-1]["content"] for body in double.state.requests]
    assert sent == "Summarise this diff\n\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n"


def test_run_sends_the_instruction_then_piped_stdin(routed: str, double: RunningDouble) -> None:
    assert invoke("run", "-p", routed, "Review this", stdin="def f():\n    pass\n").exit_code == 0
    assert invoke("run", "-p", routed, "Only this", stdin="").exit_code == 0
    sent = [body["messages"][-1]["content"] for body in double.state.requests]
    assert sent == ["Review this\n\ndef f():\n    pass\n", "Only this"]


def test_run_prompt_errors_are_one_line(routed: str, tmp_path: Path) -> None:
    missing = invoke("run", "-p", routed, "Summarise", "-f", str(tmp_path / "nope.patch"))
    assert missing.exit_code == 2
    nope = tmp_path / "nope.patch"
    assert missing.stderr == f"error: cannot read {nope}: No such file or directory\n"
    empty = invoke("run", "-p", routed, stdin="  \n")
    assert empty.exit_code == 2
    assert empty.stderr == "error: the prompt is empty\n"


def test_console_script_sends_the_instruction_then_piped_stdin(
    routed: str, double: RunningDouble
) -> None:
    """The console script's own fast path (not Typer), as a shell pipe runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "aitherctl", "run", "-p", routed, "Review this"],
        input="x = 1\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from the double.\n"
    (sent,) = [body["messages"][-1]["content"] for body in double.state.requests]
    assert sent == "Review this\n\nx = 1\n"


def test_run_help_says_how_the_prompt_is_built() -> None:
    result = runner.invoke(app, ["run", "--help"], terminal_width=100)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert (
        "The prompt is the instruction, then the text of -f FILE or of piped standard input, a "
        'blank line between, as `llm` and `ollama run` combine them: `aitherctl run "Summarise '
        'this diff" -f change.patch`, `git diff | aitherctl run "Review this"`.'
    ) in text


def test_run_json_shape(routed: str) -> None:
    result = invoke("run", "-p", routed, "--json", "--max-tokens", "3", "--system", "terse", "hi")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == "Hello from the"
    assert data["backend"] == "local"
    assert data["model"] == "smol"
    assert data["tier"] == "small"
    assert data["tokens"]["out"] == 3
    # The double had more to say: the answer was cut at the limit, and says so.
    assert (data["finish_reason"], data["max_tokens"]) == ("length", 3)
    assert data["attempts"] == [
        {
            "backend": "local",
            "model": "smol",
            "outcome": "ok",
            "reason": None,
            "ttft_s": data["attempts"][0]["ttft_s"],
            "elapsed_s": data["attempts"][0]["elapsed_s"],
        }
    ]
    assert set(data) == {
        "answer",
        "outcome",
        "profile",
        "effort",
        "tier",
        "backend",
        "model",
        "attempts",
        "tokens",
        "finish_reason",
        "max_tokens",
        "ttft_s",
        "total_s",
        "tokens_per_s",
        "cost_usd",
        "budget",
        "warning",
        "via",
        "queue_wait_s",
        "load_wait_s",  # set through `serve`: the same shape both ways
    }
    assert (data["via"], data["queue_wait_s"], data["load_wait_s"]) == (None, None, None)


def test_explain_sends_nothing_and_says_why(
    routed: str, double: RunningDouble, tmp_path: Path
) -> None:
    double.state.health_status = 503  # a failed probe that `run` would remember
    result = invoke("run", "-p", routed, "--explain", "--effort", "8", "Prove it.")
    double.state.health_status = 200
    assert result.exit_code == 0, result.stderr
    assert not double.state.requests
    # Nothing recorded: no ledger (data folder), no remembered failure (state folder).
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "state" / "backend-failures.json").exists()
    assert result.stdout.splitlines()[-1] == (
        "  2. skip         local (smol, llamacpp, local): health: GET /health → 503"
    )
    result = invoke("run", "-p", routed, "--explain", "--effort", "8", "Prove it.")
    lines = result.stdout.splitlines()
    assert lines[1] == "effort   8/10 (forced)"
    assert "tier     big (effort 6-10)" in lines
    assert lines[-2] == (
        "  1. skip         cloud (big-model, openai, cloud): $ROUTED_TEST_KEY is not set"
    )
    assert lines[-1] == "  2. use          local (smol, llamacpp, local)"


def test_explain_json(routed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTED_TEST_KEY", "sk-never-printed")
    result = invoke(
        "run", "-p", routed, "--explain", "--json", "--tier", "big", "--local-only", "x"
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["tier"]["name"] == "big"
    assert data["tier"]["forced"] is True
    assert [c["would"] for c in data["candidates"]] == ["skip", "use"]
    assert data["candidates"][0]["reason"] == "--local-only: endpoint leaves the machine"
    assert "sk-never-printed" not in result.stdout + result.stderr


def test_all_fail_exit_9_lists_attempts(write_profile: Callable[..., Path]) -> None:
    with chat_double(mode="http500") as broken:
        write_profile(
            "broken",
            f"""
            name: broken
            services: {{}}
            endpoints:
              only: {{base_url: "{broken.root}/v1", model: m}}
            routing:
              tiers:
                all: {{effort: 1-10, candidates: [only]}}
            """,
        )
        result = invoke("run", "-p", "broken", "hi")
    assert result.exit_code == 9
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no backend answered (tier all, 1 candidate(s))",
        "  only (m) error: HTTP 500: internal error",
    ]


def test_budget_exit_10(write_profile: Callable[..., Path], double: RunningDouble) -> None:
    write_profile(
        "pricey",
        f"""
        name: pricey
        services: {{}}
        endpoints:
          paid: {{base_url: "{double.root}/v1", model: m, price: {{input: 100, output: 100}}}}
        routing:
          tiers:
            all: {{effort: 1-10, candidates: [paid]}}
        budget: {{daily_usd: 0.01}}
        """,
    )
    result = invoke("run", "-p", "pricey", "--max-tokens", "500", "hi")
    assert result.exit_code == 10
    assert result.stderr.startswith("error: the daily budget forbids this request")
    assert not double.state.requests


def test_no_profile_is_a_usage_error() -> None:
    result = invoke("run", "hi")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no active profile")


def test_usage_after_runs(routed: str) -> None:
    for prompt in ("one", "two", "three"):
        assert invoke("run", "-p", routed, prompt).exit_code == 0
    result = invoke("usage", "--json", "-p", routed)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["requests"] == 3
    assert data["per_tier"] == {"small": 3}
    assert data["local_share"] == 1.0
    assert data["budget"]["daily_usd"] == 2
    (backend,) = data["backends"]
    assert backend["backend"] == "local"
    assert backend["requests"] == 3
    assert backend["ttft_p50_s"] > 0
    assert backend["ttft_p95_s"] >= backend["ttft_p50_s"]
    text = invoke("usage", "-p", routed, "--since", "7d")
    assert text.exit_code == 0
    assert text.stdout.splitlines()[0] == "today: $0.0000 of $2 daily budget (0%, profile routed)"
    assert "last 7d: 3 requests, 3 answered (3 locally), $0.0000" in text.stdout


def test_usage_bad_since() -> None:
    result = invoke("usage", "--since", "yesterday-ish")
    assert result.exit_code == 2
    assert "--since 'yesterday-ish'" in result.stderr


def test_failure_mid_answer_keeps_partial_text_and_exits_9(
    write_profile: Callable[..., Path],
) -> None:
    with chat_double(mode="broken_after") as flaky, chat_double() as spare:
        write_profile(
            "flaky",
            f"""
            name: flaky
            services: {{}}
            endpoints:
              flaky: {{base_url: "{flaky.root}/v1", model: m1}}
              spare: {{base_url: "{spare.root}/v1", model: m2}}
            routing:
              tiers:
                all: {{effort: 1-10, candidates: [flaky, spare]}}
            """,
        )
        result = invoke("run", "-p", "flaky", "hi")
        assert not spare.state.requests
    assert result.exit_code == 9
    assert result.stdout == "Hello from\n"
    assert result.stderr.splitlines()[0] == (
        "error: flaky (m1) failed after the answer had started: stream ended without "
        "[DONE]; the partial answer is all there is"
    )


def test_validate_and_doctor_list_routing_mistakes_with_file_and_line(
    write_profile: Callable[..., Path],
) -> None:
    path = write_profile(
        "gappy",
        """
        name: gappy
        services: {}
        endpoints:
          x: {base_url: "https://api.example.invalid/v1", model: m, price: {input: -1, output: 1}}
        routing:
          tiers:
            a: {effort: 1-5, candidates: [x]}
        budget:
          daily_usd: -2
        """,
    )
    expected = [
        f"{path}:4: endpoints.x: price -1 must be a number >= 0 (USD per million tokens)",
        f"{path}:6: routing.tiers: no tier covers effort 6-10 (tiers must cover 1-10)",
        f"{path}:9: budget.daily_usd must be a number of US dollars >= 0",
    ]
    validated = invoke("profile", "validate", str(path))
    assert validated.exit_code == 3
    for line in expected:
        assert line in validated.stderr + validated.stdout
    doctor = invoke("doctor")
    assert doctor.exit_code != 0
    for line in expected:
        assert line in doctor.stdout + doctor.stderr


def test_chat_keeps_the_session_history(routed: str, double: RunningDouble) -> None:
    result = invoke("chat", "-p", routed, "local", stdin="My name is Ada.\nWhat is my name?\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (">>> Hello from the double.\n\n>>> Hello from the double.\n\n>>> \n")
    assert result.stderr == "profile routed: Ctrl-C stops an answer, Ctrl-D or /bye leaves\n"
    sent = [[m["content"] for m in body["messages"]] for body in double.state.requests]
    assert sent == [
        ["My name is Ada."],
        ["My name is Ada.", "Hello from the double.", "What is my name?"],
    ]


def test_chat_with_an_unknown_model_is_one_line(routed: str) -> None:
    result = invoke("chat", "-p", routed, "nope", stdin="")
    assert result.exit_code == 4
    assert result.stderr == (
        "error: profile 'routed' has no tier, service or endpoint 'nope' (tiers: small, big; "
        "services and endpoints: cloud, local)\n"
    )


def test_a_shared_first_candidate_falls_back_along_the_scored_tier(
    write_profile: Callable[..., Path], double: RunningDouble
) -> None:
    """Every tier starts with `first`, so `run` sends before the effort is scored; when `first`
    fails, the fallbacks are still those of the tier the score picks."""
    with chat_double(mode="http500") as broken, chat_double() as other:
        write_profile(
            "shared",
            f"""
            name: shared
            services: {{}}
            endpoints:
              first: {{base_url: "{broken.root}/v1", model: m1}}
              second: {{base_url: "{double.root}/v1", model: m2}}
              third: {{base_url: "{other.root}/v1", model: m3}}
            routing:
              tiers:
                small: {{effort: 1-5, candidates: [first, second]}}
                big: {{effort: 6-10, candidates: [first, third]}}
            """,
        )
        result = invoke("run", "-p", "shared", "--json", "hi")
        assert not other.state.requests
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["tier"], data["backend"]) == ("small", "second")
    assert data["effort"]["score"] == score_effort("hi").score
    assert [(a["backend"], a["outcome"]) for a in data["attempts"]] == [
        ("first", "error"),
        ("second", "ok"),
    ]


def _any_ttft(line: str) -> str:
    return re.sub(r"ttft \d+\.\d\ds", "ttft T", line)


@pytest.mark.parametrize("columns", [80, 200])
def test_a_long_status_line_breaks_between_its_parts_on_a_narrow_terminal(
    routed: str, columns: int
) -> None:
    """Before, the status line was one line whatever the width, which an 80-column terminal
    cut mid-word; a pipe or a file (no width) still gets one line, for scripts."""
    result = runner.invoke(
        app,
        ["run", "--profile", routed, "--max-tokens", "2", "hello"],
        env={"COLUMNS": str(columns)},
    )
    assert result.exit_code == 0, result.stderr
    # Each run's time to the first token is its own: the two are compared without it.
    lines = [_any_ttft(line) for line in result.stderr.strip().splitlines()]
    whole = invoke("run", "--profile", routed, "--max-tokens", "2", "hello").stderr.strip()
    whole = _any_ttft(whole)
    head = whole.removesuffix(" · stopped at max_tokens 2")
    # 92 characters (the time to the first token is the double's, so only its shape is fixed)
    assert head == "effort 1 · small · local (smol) · ttft T · tok/s N/A · $0.0000", whole
    if columns == 200:
        assert lines == [whole]
    else:
        assert lines == [head + " ·", "  stopped at max_tokens 2"]
