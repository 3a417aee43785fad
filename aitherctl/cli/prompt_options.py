"""Options `run` and `chat` share: one declaration, the same help in both. Their own module, so
that `chat` does not import `run`'s command module (which opens `chat` when no prompt is given:
an import cycle)."""

from __future__ import annotations

from typing import Annotated

import typer

SystemOpt = Annotated[str | None, typer.Option("--system", help="A system prompt.")]
MaxTokensOpt = Annotated[
    int | None,
    typer.Option("--max-tokens", min=1, help="Longest answer (default: routing.max_tokens)."),
]
TemperatureOpt = Annotated[
    float | None, typer.Option("--temperature", min=0.0, max=2.0, help="Sampling temperature.")
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Profile to route with (default: the active one)."),
]
