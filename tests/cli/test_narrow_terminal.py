"""At 80 columns nothing wraps mid-word: `profile show` model names, `plan`'s reasons."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from aitherctl.cli.app import app
from aitherctl.cli.render import plan_table
from aitherctl.docker.stack import ManagedContainer
from aitherctl.profiles.loader import load_profile_text
from aitherctl.switching.plan import compute_plan
from aitherctl.switching.specs import build_specs

runner = CliRunner()


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_profile_show_dev_at_80_columns_puts_model_names_below_whole() -> None:
    result = runner.invoke(app, ["profile", "show", "dev"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert lines(result.stdout)[1:] == [
        "Day-to-day development on one GPU: orchestrator, coding, vision and embeddings",
        "resident (35 + 18 + 12 + 5 = 70%, plus a 10% reserve for the desktop and CUDA",
        "contexts). Reasoning (40%) is on demand: the article's five services add up to",
        "110%, which no GPU has, so it is not started by a switch. Make room and start it",
        "with `aitherctl down coding vision && aitherctl up reasoning`.",
        "GPU reserve: 10%",
        "service       engine  port  gpu  vram  role          flags",
        "orchestrator  vllm    8120  0    35%   orchestrator  pinned",
        "reasoning     vllm    8176  0    40%   reasoning     on demand",
        "coding        vllm    8200  0    18%   coding",
        "vision        vllm    8201  0    12%   vision",
        "embeddings    vllm    8209  0    5%    embeddings",
        "  orchestrator  model cyankiwi/Nemotron-Orchestrator-8B-AWQ-4bit",
        "  reasoning     model casperhansen/deepseek-r1-distill-qwen-14b-awq",
        "  coding        model Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
        "  vision        model Qwen/Qwen2.5-VL-3B-Instruct-AWQ",
        "  embeddings    model nomic-ai/nomic-embed-text-v1.5",
        "  endpoint deepseek: deepseek-v4-flash at https://api.deepseek.com/v1 (key from",
        "$DEEPSEEK_API_KEY)",
        "  endpoint gemini: gemini-3.1-pro-preview at",
        "https://generativelanguage.googleapis.com/v1beta/openai (key from",
        "$GEMINI_API_KEY)",
        "  endpoint anthropic: claude-sonnet-4-6 at https://api.anthropic.com/v1 (key",
        "from $ANTHROPIC_API_KEY)",
        "  endpoint openai: gpt-5 at https://api.openai.com/v1 (key from $OPENAI_API_KEY)",
    ]


def test_profile_show_dev_at_200_columns_keeps_the_model_column() -> None:
    result = runner.invoke(app, ["profile", "show", "dev"], env={"COLUMNS": "200"})
    shown = lines(result.stdout)
    assert shown[4:7] == [
        "service       engine  model                                          port  gpu  vram  "
        "role          flags",
        "orchestrator  vllm    cyankiwi/Nemotron-Orchestrator-8B-AWQ-4bit     8120  0    35%   "
        "orchestrator  pinned",
        "reasoning     vllm    casperhansen/deepseek-r1-distill-qwen-14b-awq  8176  0    40%   "
        "reasoning     on demand",
    ]
    assert not any(line.startswith("  orchestrator  model") for line in shown)


def _running(service: str, image: str, port: int) -> ManagedContainer:
    return ManagedContainer(
        id="c1",
        name=f"aither-{service}",
        service=service,
        profile="old",
        spec_hash="x",
        state="running",
        image=image,
        engine="llamacpp",
        model="/models/m.gguf",
        served_model=None,
        port=port,
        bind="127.0.0.1",
        gpus=(),
        vram_bytes=None,
        role=None,
        pinned=False,
        on_demand=False,
        health_checks=(),
    )


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (
            80,
            [
                "plan → new",
                "action    service    engine    port  gpu  vram  why",
                "recreate  assistant  llamacpp  8091  cpu  -     spec changed: image",
                # One image reference longer than the column is the only thing folded.
                "                                                ghcr.io/ggml-org/llama.cpp:serve",
                "                                                r-b11206 →",
                "                                                aither-test/llamacpp:latest,",
                "                                                port 8090 → 8091",
            ],
        ),
        (
            200,
            [
                "plan → new",
                "action    service    engine    port  gpu  vram  why",
                "recreate  assistant  llamacpp  8091  cpu  -     spec changed: image "
                "ghcr.io/ggml-org/llama.cpp:server-b11206 → aither-test/llamacpp:latest, "
                "port 8090 → 8091",
            ],
        ),
    ],
)
def test_plan_reason_wraps_whole_instead_of_being_cut(columns: int, expected: list[str]) -> None:
    profile = load_profile_text(
        "services:\n  assistant: {engine: llamacpp, model: /models/m.gguf, port: 8091,"
        " image: 'aither-test/llamacpp:latest'}\n",
        "/p/new.yaml",
    )
    specs = build_specs(profile, {})
    current = _running("assistant", "ghcr.io/ggml-org/llama.cpp:server-b11206", 8090)
    plan = compute_plan("new", [current], specs.resident)
    console = Console(width=columns, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(plan_table(plan))
    assert lines(console.export_text()) == expected
