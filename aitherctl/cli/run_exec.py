"""What `aitherctl run` does once its options are read, without Typer: the console script's fast
path (`aitherctl.cli.fast_run`) and the Typer command (`aitherctl.cli.run_cmd`) both call these,
so the answer, the status line, the JSON and the exit codes are one code path.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aitherctl.cli.output import Output

if TYPE_CHECKING:
    from aitherctl.routing.router import RunResult


def status_line(result: RunResult) -> str:
    """`effort 5 · orchestrator · assistant (smollm2) · ttft 0.12s · 104 tok/s · $0.0000`, broken
    between its parts where the terminal is narrower."""
    from aitherctl.cli.terminal import stderr_width
    from aitherctl.routing.run_report import fold
    from aitherctl.routing.run_report import status_line as line

    return fold(line(result.to_json()), stderr_width())


def answer_direct(
    text: str, json_output: bool, options: Mapping[str, Any], profile: str | None
) -> None:
    """Route and stream the answer straight to the backends. Raises AitherError (the caller
    prints it and exits with its code)."""
    from aitherctl.cli import runtime
    from aitherctl.errors import BackendFailedError, BudgetExceededError
    from aitherctl.routing.router import RunOptions, open_router, resolve_profile

    out = Output(json_mode=json_output)
    run_options = RunOptions(prompt=text, **options)
    chosen, stack = resolve_profile(profile, runtime.catalog(), runtime.docker_reader)
    stream = sys.stdout  # the answer is plain text: no Rich console needed to write it
    wrote: list[str] = []

    def on_text(piece: str) -> None:
        if not json_output:
            stream.write(piece)
            stream.flush()
            wrote.append(piece)

    if chosen.nodes:  # rented nodes that run: their addresses, from this machine's records
        from aitherctl.nodes.records import running_addresses

        nodes = running_addresses(chosen.name)
    else:
        nodes = {}
    with open_router(chosen, stack, nodes=nodes) as router:
        try:
            result = router.run(run_options, on_text)
        except (BackendFailedError, BudgetExceededError) as exc:
            if wrote and not wrote[-1].endswith("\n"):
                stream.write("\n")
                stream.flush()
            if json_output and exc.result is not None:
                out.data({**exc.result.to_json(), "error": exc.message})
            raise
    if json_output:
        out.data(result.to_json())
    else:
        if not result.answer.endswith("\n"):
            stream.write("\n")
            stream.flush()
        out.info(status_line(result))
    if result.warning:
        out.warn(result.warning)
