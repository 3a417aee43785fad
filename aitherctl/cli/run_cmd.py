"""`aitherctl run`: send a prompt through the routing layer and stream the answer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.cli.prompt_options import MaxTokensOpt, ProfileOpt, SystemOpt, TemperatureOpt
from aitherctl.errors import UsageError

if TYPE_CHECKING:
    from aitherctl.routing.router import Choice, Verdict


NO_PROMPT = 'no prompt: aitherctl run "PROMPT", or pipe it on stdin, or -f FILE'


def explain_data(choice: Choice, verdicts: list[Verdict]) -> dict[str, object]:
    return {
        "profile": choice.profile,
        "effort": {
            "score": choice.effort.score,
            "forced": choice.effort_forced,
            "reasons": list(choice.effort.reasons),
        },
        "tier": {
            "name": choice.tier.name,
            "forced": choice.tier_forced,
            "effort": [choice.tier.effort_min, choice.tier.effort_max],
            "max_queue": choice.tier.max_queue,
        },
        "max_tokens": choice.max_tokens,
        "candidates": [
            {
                "backend": v.candidate.name,
                "origin": v.candidate.origin,
                "engine": v.candidate.engine,
                "model": v.candidate.model,
                "url": v.candidate.base_url,
                "local": v.candidate.local,
                "would": ("use" if v.usable and first else "fall back to") if v.usable else "skip",
                "reason": v.reason,
            }
            for first, v in _firsts(verdicts)
        ],
    }


def _firsts(verdicts: list[Verdict]) -> list[tuple[bool, Verdict]]:
    seen = False
    marked = []
    for verdict in verdicts:
        marked.append((verdict.usable and not seen, verdict))
        seen = seen or verdict.usable
    return marked


def _print_explain(out: Output, data: dict[str, object]) -> None:
    effort = data["effort"]
    tier = data["tier"]
    assert isinstance(effort, dict)
    assert isinstance(tier, dict)
    forced = " (forced)" if effort["forced"] else ""
    out.print(f"profile  {data['profile']}", markup=False)
    out.print(f"effort   {effort['score']}/10{forced}", markup=False)
    for reason in effort["reasons"]:
        out.print(f"         {reason}", markup=False)
    low, high = tier["effort"]
    tier_forced = " (forced)" if tier["forced"] else ""
    out.print(f"tier     {tier['name']} (effort {low}-{high}){tier_forced}", markup=False)
    out.print("candidates (in order; nothing was sent or recorded):", markup=False)
    candidates = data["candidates"]
    assert isinstance(candidates, list)
    for index, item in enumerate(candidates, 1):
        where = "local" if item["local"] else "cloud"
        reason = f": {item['reason']}" if item["reason"] else ""
        out.print(
            f"  {index}. {item['would']:<12} {item['backend']} ({item['model']}, "
            f"{item['engine']}, {where}){reason}",
            markup=False,
        )


def run(  # noqa: PLR0917 - Typer passes options by position
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="The instruction. -f FILE or piped standard input is sent after it, a blank "
            "line between ('-': read the instruction itself from standard input).",
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="Send this file's text after the instruction (or alone)."
        ),
    ] = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    effort: Annotated[
        int | None, typer.Option("--effort", min=1, max=10, help="Force the effort score (1-10).")
    ] = None,
    tier: Annotated[str | None, typer.Option("--tier", help="Force a tier by name.")] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Force one service or endpoint by name.")
    ] = None,
    local_only: Annotated[
        bool, typer.Option("--local-only", help="Never send the prompt off this machine.")
    ] = False,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Show the effort, tier and candidates; send nothing."),
    ] = False,
    profile: ProfileOpt = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of streaming.")
    ] = False,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            help="Go straight to the backends even when `aitherctl serve` is running.",
        ),
    ] = False,
) -> None:
    """Send a prompt to the right model: score its effort, pick the tier, fall back on failure.

    The prompt is the instruction, then the text of -f FILE or of piped standard input, a
    blank line between, as `llm` and `ollama run` combine them: `aitherctl run "Summarise
    this diff" -f change.patch`, `git diff | aitherctl run "Review this"`. (In a `while read`
    loop, give `< /dev/null` so that `run` does not read the loop's input.) With no prompt on
    a terminal, `run` opens a chat as `aitherctl chat` does.

    The answer streams to stdout; one status line (effort, tier, backend, model, time to first
    token, tokens/s, cost) goes to stderr. When `aitherctl serve` runs for the same profile, the
    request goes through it (on-demand services start, it queues with everyone else's, the
    gateway writes the ledger row); --direct bypasses it. Exit code 9 when no backend answered
    (or one failed mid-answer), 10 when the daily budget forbids the request.
    """
    from aitherctl.cli.prompt_input import read_prompt

    out = Output(json_mode=json_output)
    text = read_prompt(prompt, str(file) if file is not None else None)
    if text is None:  # nothing given, on a terminal: a chat, as `ollama run` opens one
        if explain or json_output:
            raise UsageError(NO_PROMPT)
        from aitherctl.cli.chat_cmd import open_chat

        code = open_chat(
            None,
            {
                "system": system,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "effort": effort,
                "tier": tier,
                "backend": backend,
                "local_only": local_only,
            },
            profile,
            direct,
        )
        if code:
            raise typer.Exit(code)
        return
    if not direct and not explain:
        from aitherctl.serve.discovery import find_gateway

        found = find_gateway()
        if found is not None and profile in (None, found[1]):
            from aitherctl.cli.fast_run import answer_via_gateway

            code = answer_via_gateway(
                found[0],
                text,
                json_output,
                {
                    "system": system,
                    "max_tokens": max_tokens,
                    "temperature": temperature,
                    "effort": effort,
                    "tier": tier,
                    "backend": backend,
                    "local_only": local_only,
                },
            )
            if code:
                raise typer.Exit(code)
            return

    keywords = {
        "system": system,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "effort": effort,
        "tier": tier,
        "backend": backend,
        "local_only": local_only,
    }
    if not explain:
        from aitherctl.cli.run_exec import answer_direct

        answer_direct(text, json_output, keywords, profile)
        return
    from aitherctl.routing.router import RunOptions, open_router, resolve_profile

    chosen, stack = resolve_profile(profile, runtime.catalog(), runtime.docker_reader)
    with open_router(chosen, stack) as router:
        data = explain_data(*router.explain(RunOptions(prompt=text, **keywords)))  # type: ignore[arg-type]
    if json_output:
        out.data(data)
    else:
        _print_explain(out, data)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
