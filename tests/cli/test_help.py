"""Help says what a value is (`NAME`, `PORT`, `SECONDS`), never typer's types (`{name}`,
`<int range>`, `<float range>`, `<str>`)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from aitherctl.cli.app import COMMANDS, app

runner = CliRunner()

PROFILE_COMMANDS = ["list", "show", "validate", "plan", "switch", "export"]
EVERY = [[name] for name in COMMANDS if name != "profile"] + [
    ["profile", name] for name in PROFILE_COMMANDS
]
TYPER_TYPES = re.compile(
    r"(?<!\$)\{\w+\}|<(?:int|float|str|path|list\[str\]|int range|float range)>"
)


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("command", EVERY, ids=" ".join)
def test_help_names_values_not_types(command: list[str], columns: int) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert not TYPER_TYPES.findall(result.stdout), result.stdout


@pytest.mark.parametrize("columns", [80, 200])
def test_logs_help_exactly(columns: int) -> None:
    result = runner.invoke(app, ["logs", "--help"], env={"COLUMNS": str(columns)})
    assert result.stdout.splitlines() == [
        "Usage: aitherctl logs [OPTIONS] SERVICE",
        "",
        "  Print a service's container log.",
        "",
        "Arguments:",
        "  SERVICE  Service name.  [required]",
        "",
        "Options:",
        "  -f, --follow  Keep printing new lines.",
        "  -n, --tail N  Lines from the end.  [default: 100]",
        "  -h, --help    Show this message and exit.",
    ]


def test_serve_and_status_help_name_ports_and_seconds() -> None:
    serve = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "80"}).stdout
    assert "  --port PORT " in serve
    assert "  --drain SECONDS " in serve
    status = runner.invoke(app, ["status", "--help"], env={"COLUMNS": "80"}).stdout
    assert "  -n, --interval SECONDS " in status
    show = runner.invoke(app, ["profile", "show", "--help"], env={"COLUMNS": "80"}).stdout
    assert show.splitlines()[0] == "Usage: aitherctl profile show [OPTIONS] NAME"
