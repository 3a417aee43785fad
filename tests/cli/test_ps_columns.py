"""`aitherctl ps` fits the terminal by `status`'s rule: at 80 columns no cell is split (before,
a RAM reading broke between its number and its unit, over three lines, and the uptime lost its
last letter), the columns left out for want of space are named under the table; at 200
columns every reading is on its line. Exact output at both widths (tests/cli/expected/ps.txt)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from aitherctl.cli.service_cmds import ps_table
from aitherctl.monitor.services import ServiceListing, ServiceRow
from tests.cli.expected_text import sections

GiB = 1 << 30
MiB = 1 << 20


def _row(name: str, engine: str, model: str | None, port: int, **readings: object) -> ServiceRow:
    fields: dict[str, object] = {
        "service": name,
        "profile": "mine",
        "engine": engine,
        "model": model,
        "state": "running",
        "health": "healthy",
        "port": port,
        "bind": "127.0.0.1",
        "gpus": (),
        "vram_budget_bytes": None,
        "vram_used_bytes": None,
        "container": f"aither-{name}",
        "container_id": f"id-{name}",
        "image": "img",
        "uptime_s": 3725.0,
    }
    fields.update(readings)
    return ServiceRow(**fields)  # type: ignore[arg-type]


CPU_ONLY = (
    _row(
        "assistant",
        "llamacpp",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        8080,
        cpu_pct=12.5,
        ram_used_bytes=int(1.3 * GiB),
        ram_budget_bytes=4 * GiB,
    ),
    _row(
        "embed",
        "llamacpp",
        "nomic-embed-text-v1.5.Q8_0.gguf",
        8081,
        cpu_pct=0.1,
        ram_used_bytes=int(146.2 * MiB),
        ram_budget_bytes=1 * GiB,
    ),
    _row("web", "generic", None, 8090, cpu_pct=0.0, ram_used_bytes=12 * MiB, uptime_s=120.0),
)

GPU_AND_CPU = (
    _row(
        "chat",
        "vllm",
        "Qwen/Qwen2.5-7B-Instruct-AWQ",
        8000,
        gpus=(0,),
        vram_budget_bytes=int(9.6 * GiB),
        vram_used_bytes=int(9.1 * GiB),
        cpu_pct=3.2,
        ram_used_bytes=int(2.1 * GiB),
    ),
    _row("embed", "ollama", "nomic-embed-text", 11434, gpus=(0,), vram_budget_bytes=1 * GiB),
    CPU_ONLY[0],
)


def _ps(rows: tuple[ServiceRow, ...], width: int, *, hosts: bool = False) -> str:
    listing = ServiceListing(
        "mine",
        "default",
        "unix:///var/run/docker.sock",
        rows,
        pending_switch=False,
        hosts=(("node-a", "ssh://node-a"),) if hosts else (),
    )
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(
        ps_table(listing)
    )
    return buffer.getvalue()


def expected() -> dict[str, list[str]]:
    return sections("ps.txt")


CASES = {"cpu": (CPU_ONLY, False), "gpu": (GPU_AND_CPU, False), "hosts": (GPU_AND_CPU, True)}


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("case", list(CASES))
def test_ps_prints_each_case_exactly(case: str, width: int) -> None:
    rows, hosts = CASES[case]
    lines = [line.rstrip() for line in _ps(rows, width, hosts=hosts).splitlines()]
    assert lines == expected()[f"{case} @ {width}"]


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize("case", list(CASES))
def test_on_a_narrow_terminal_ps_cuts_no_reading(case: str, width: int) -> None:
    """Every word `ps` prints narrow is one it prints at 200 columns, or a model name
    shortened with `…`: never the half of a size, nor an uptime without its last letter."""
    rows, hosts = CASES[case]
    lines = _ps(rows, width, hosts=hosts).splitlines()
    assert all(len(line) <= width for line in lines)
    note = next(i for i, line in enumerate(lines) if line.startswith("not shown at"))
    words = {word for line in lines[:note] for word in line.split()}
    wide = set(_ps(rows, 200, hosts=hosts).split())
    models = [row.model or "" for row in rows]
    stray = {
        word
        for word in words - wide
        if not (word.endswith("…") and any(m.startswith(word[:-1]) for m in models))
    }
    assert not stray, stray
