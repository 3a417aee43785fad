"""What each hot command imports: a shell script calls `aitherctl` in a loop, and every heavy
module it imports is paid on every call (bench/bench_startup.py measures the time; no timed
assertion here). Each command runs in a fresh interpreter, as a user's shell starts it, and
reports `sys.modules` when it is done.

Heavy, measured on this project's machine (`python -X importtime`): the Docker SDK (with requests,
urllib3 and ssl), pydantic (what typer 0.2x coerces parameters with), textual, pynvml, httpx,
rich, and the profile loader (yaml and every engine driver, whose metrics parser imports
prometheus_client and with it ssl).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aitherctl import __version__
from aitherctl.cli.app import COMMANDS, AitherGroup

ROOT = Path(__file__).resolve().parents[2]
# click and pygments: httpx's own command-line tool, which `import httpx` loads when click is
# installed (the dev extra installs it); aitherctl marks it missing (cli/app.py `main`).
NEVER_AT_START = {
    "docker",
    "requests",
    "urllib3",
    "pydantic",
    "textual",
    "pynvml",
    "click",
    "pygments",
}
NOT_FOR_HELP = NEVER_AT_START | {"ssl", "httpx", "yaml", "prometheus_client", "psutil"}

# Runs `aitherctl ARGS...` in this interpreter, then writes what it imported to the file named by
# the first argument (stdout and stderr stay the command's own).
PROBE = """
import json, sys
report, *args = sys.argv[1:]
sys.argv = ["aitherctl", *args]
code = 0
try:
    from aitherctl.cli import fast_run  # the console script's entry point

    def exit_normally(code):  # instead of os._exit, so that this probe writes its report
        raise SystemExit(code)

    fast_run.exit_now = exit_normally
    fast_run.main()
except SystemExit as exc:
    code = exc.code
with open(report, "w") as out:
    loaded = sorted(name for name, module in sys.modules.items() if module is not None)
    json.dump({"code": code, "modules": loaded}, out)
"""


def _cli_env(*, typer: bool = False, **extra: str) -> dict[str, str]:
    """The test's environment at 100 columns; `typer`: the console script leaves every command
    to the Typer app."""
    env = {**os.environ, "COLUMNS": "100", **extra}
    if typer:
        env["AITHER_NO_FAST_RUN"] = "1"
    return env


def _python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in a fresh interpreter from the repository's root, no standard input."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def imported(tmp_path: Path, *args: str, typer: bool = False) -> tuple[set[str], int, str]:
    """(top-level and full module names imported, exit code, stdout) of `aitherctl ARGS...`;
    `typer`: through the Typer app even where the console script has a fast path."""
    report = tmp_path / "modules.json"
    done = _python("-c", PROBE, str(report), *args, env=_cli_env(typer=typer))
    assert report.exists(), done.stderr
    data = json.loads(report.read_text())
    modules = set(data["modules"])
    return modules | {name.split(".")[0] for name in modules}, int(data["code"] or 0), done.stdout


def command_modules(modules: set[str]) -> set[str]:
    return {
        name
        for name in modules
        if name.startswith("aitherctl.cli.")
        and name.rsplit(".", 1)[1] in {module for module, _ in COMMANDS.values()}
    }


@pytest.mark.parametrize("args", [("--version",), ("--help",), ()])
def test_version_and_root_help_import_no_command_and_nothing_heavy(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    modules, code, out = imported(tmp_path, *args)
    assert code == (2 if not args else 0)
    assert modules & (NOT_FOR_HELP | {"rich"}) == set()
    assert command_modules(modules) == set()
    if args == ("--help",):
        # Every command is still listed, with its summary.
        assert [line.split()[0] for line in out.split("Commands:")[1].strip().splitlines()] == list(
            COMMANDS
        )


def test_version_skips_typer_and_prints_what_typer_prints(tmp_path: Path) -> None:
    modules, code, out = imported(tmp_path, "--version")
    assert (code, out) == (0, f"aitherctl {__version__}\n")
    assert "typer" not in modules
    typer_out = _python("-m", "aitherctl", "--version", env=_cli_env(typer=True))
    assert (typer_out.returncode, typer_out.stdout) == (0, out)


@pytest.mark.parametrize(
    ("args", "module"),
    [
        (("profile", "switch", "--help"), "profile_cmd"),
        (("profile", "--help"), "profile_cmd"),
        (("ps", "--help"), "service_cmds"),
        (("run", "--help"), "run_cmd"),
        (("status", "--help"), "status_cmd"),
        (("monitor", "--help"), "monitor_cmd"),
    ],
)
def test_a_commands_help_imports_only_its_own_module(
    tmp_path: Path, args: tuple[str, ...], module: str
) -> None:
    modules, code, out = imported(tmp_path, *args)
    assert code == 0
    assert out.startswith(f"Usage: aitherctl {args[0]}")
    assert command_modules(modules) == {f"aitherctl.cli.{module}"}
    assert modules & NOT_FOR_HELP == set()


def test_root_help_summaries_are_the_commands_own() -> None:
    """`--help` lists commands from `COMMANDS` without importing them: its summaries must be
    what each command's own help says, and every registered command must be in it."""
    import typer

    group = typer.main.get_command(__import__("aitherctl.cli.app").cli.app.app)
    assert isinstance(group, AitherGroup)
    for name, (_, summary) in COMMANDS.items():
        command = group.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None, name
        first_paragraph = (command.help or "").split("\n\n")[0]
        assert " ".join(first_paragraph.split()) == summary, f"COMMANDS[{name!r}] is stale"
    assert set(group.commands) == set(COMMANDS)


def test_plain_values_skip_pydantic_and_keep_typers_errors(tmp_path: Path) -> None:
    # A bad number still gets typer's own message and exit code 2.
    modules, code, _ = imported(tmp_path, "run", "--effort", "11", "hi")
    assert code == 2
    assert "pydantic" in modules
    # Plain values (strings, an int and a float in range) do not import pydantic. Without a
    # Docker engine `run --profile` still explains (its services are then judged by probes).
    modules, code, out = imported(
        tmp_path,
        "run",
        "--explain",
        "--json",
        "--profile",
        "cpu",
        "--max-tokens",
        "8",
        "--temperature",
        "0.5",
        "--effort",
        "3",
        "hi",
    )
    assert code == 0
    explained = json.loads(out)
    assert (explained["max_tokens"], explained["effort"]["score"]) == (8, 3)
    assert modules & NEVER_AT_START == set()
    # A forced effort scores nothing: neither the effort weights nor the embedding (numpy,
    # tokenizers) are loaded.
    assert modules & {"numpy", "tokenizers", "aitherctl.routing.effort_weights"} == set()


def test_a_profile_loaded_before_costs_no_yaml_parser(tmp_path: Path) -> None:
    """Once a profile is in the memo (profiles/memo.py), `run` loads it without importing the
    YAML parser, the schema, the checks or any engine driver. The memo is written here as a
    command run minutes after the last edit writes it (a fresh file is never memoised)."""
    import time

    from aitherctl.cli import runtime
    from aitherctl.profiles.catalog import ProfileCatalog

    memo = runtime.catalog().memo
    assert memo is not None
    memo.clock = lambda: time.time() + 60
    ProfileCatalog(memo=memo).load("cpu")
    args = ("run", "--explain", "--json", "--profile", "cpu", "--effort", "3", "hi")
    modules, code, out = imported(tmp_path, *args)
    assert code == 0, out
    assert json.loads(out)["profile"] == "cpu"
    loader = {
        "yaml",
        "aitherctl.profiles.loader",
        "aitherctl.profiles.schema",
        "aitherctl.profiles.checks",
        "aitherctl.engines.registry",
    }
    assert modules & loader == set()


@pytest.mark.docker
def test_ps_json_reads_the_engine_without_the_docker_sdk(
    tmp_path: Path,
    clean_namespace: object,
    write_profile,
    base_image: str,  # type: ignore[no-untyped-def]
) -> None:
    from tests.conftest import free_port, run_cli, web_service

    write_profile("two", services={"a": web_service(free_port()), "b": web_service(free_port())})
    assert run_cli("profile", "switch", "two", "--yes").returncode == 0
    modules, code, out = imported(tmp_path, "ps", "--json")
    assert code == 0
    listing = json.loads(out)
    assert [(row["service"], row["state"], row["health"]) for row in listing["services"]] == [
        ("a", "running", "healthy"),
        ("b", "running", "healthy"),
    ]
    assert all(row["uptime_s"] is not None for row in listing["services"])
    assert listing["active_profile"] == "two"
    assert modules & NEVER_AT_START == set()
    assert "typer" not in modules  # `ps --json` skips the Typer app
    # The Typer command prints the same document (uptime, CPU and memory aside, which move).
    typer_out = run_cli("ps", "--json", env={"AITHER_NO_FAST_RUN": "1"})
    assert typer_out.returncode == 0, typer_out.stderr

    def steady(document: dict[str, object]) -> object:
        moving = ("uptime_s", "cpu_pct", "ram_used_bytes")
        rows = [{k: v for k, v in row.items() if k not in moving} for row in document["services"]]  # type: ignore[attr-defined]
        return {**document, "services": rows}

    assert steady(json.loads(typer_out.stdout)) == steady(listing)


@pytest.mark.docker
def test_run_explain_learns_what_runs_without_the_docker_sdk(
    tmp_path: Path,
    clean_namespace: object,
    write_profile,
    base_image: str,  # type: ignore[no-untyped-def]
) -> None:
    from tests.conftest import free_port, run_cli, web_service

    write_profile(
        "routed",
        services={"up": web_service(free_port())},
        routing={"tiers": {"all": {"effort": "1-10", "candidates": ["up", "off"]}}},
        endpoints={"off": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}},
    )
    assert run_cli("profile", "switch", "routed", "--yes").returncode == 0
    modules, code, out = imported(tmp_path, "run", "--explain", "--json", "--max-tokens", "8", "hi")
    assert code == 0, out
    candidates = {item["backend"]: item for item in json.loads(out)["candidates"]}
    assert candidates["up"]["would"] == "use"
    assert modules & NEVER_AT_START == set()


@pytest.mark.docker
def test_a_switch_with_nothing_to_download_imports_no_downloader(
    tmp_path: Path,
    clean_namespace: object,
    write_profile,
    base_image: str,  # type: ignore[no-untyped-def]
) -> None:
    """The switch asks what each service it starts would download (models/targets.py); the
    downloader (the Hub client, the transfers, the hosts' copies: 10-20 ms) is imported only for a
    model that is missing."""
    from tests.conftest import free_port, web_service

    write_profile("plain", services={"a": web_service(free_port())})
    modules, code, out = imported(tmp_path, "profile", "switch", "plain", "--yes", "--json")
    assert code == 0, out
    assert json.loads(out)["profile"] == "plain"
    assert "aitherctl.models.targets" in modules  # it did look
    assert {"aitherctl.models.pull", "aitherctl.models.hub"} & modules == set()
    assert {"typer", "aitherctl.cli.app"} & modules == set()  # the console script's fast path
    # The engines' metric parsers (with datetime) are the monitor's, imported when they run.
    assert "aitherctl.engines.metrics" not in modules


# What `run` through a running gateway may import: no Typer/click, no http.client (with ssl and
# the email package), no httpx, no profile loader, no Rich.
NOT_FOR_RUN_VIA_GATEWAY = NOT_FOR_HELP | {
    "typer",
    "click",
    "http",
    "rich",
    "aitherctl.cli.app",
    "aitherctl.routing.router",
    # typing (with contextlib and warnings): a few ms of a path whose whole budget is 40 ms
    "typing",
    "contextlib",
    # urllib.parse imports ipaddress: 2-7 ms to split the gateway's URL (loopback_http.host_port)
    "urllib.parse",
}


def test_run_through_a_gateway_skips_typer_and_everything_heavy(
    tmp_path: Path,
    write_profile,  # type: ignore[no-untyped-def]
) -> None:
    """A real `aitherctl serve` (a profile whose one backend is an endpoint nobody answers: no
    Docker needed); `run` goes through it and reports the gateway's answer (503: no backend)."""
    import time

    import httpx

    from tests.conftest import free_port

    write_profile(
        "gwonly",
        services={},
        routing={"tiers": {"all": {"effort": "1-10", "candidates": ["off"]}}},
        endpoints={"off": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}},
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "serve", "--port", str(port), "--profile", "gwonly"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        modules, code, _out = imported(tmp_path, "run", "--max-tokens", "4", "hi")
        assert code == 9  # the gateway answered 503: no backend answered
        assert "aitherctl.routing.gateway_client" in modules
        assert modules & NOT_FOR_RUN_VIA_GATEWAY == set()
        # --explain and --direct are Typer's: they still work the usual way.
        modules, code, _out = imported(tmp_path, "run", "--explain", "--json", "hi")
        assert "typer" in modules
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_fast_run_options_are_the_typer_commands() -> None:
    """Every option `run` handles without Typer is one of the Typer command's, so the two cannot
    drift apart silently."""
    from aitherctl.cli import fast_run
    from aitherctl.cli.app import _load

    command = _load("run_cmd")["run"]
    typer_options = {opt for param in command.params for opt in param.opts}
    assert set(fast_run.VALUED) | set(fast_run.FLAGS) <= typer_options


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["hi", "--max-tokens", "8"], {"prompt": "hi", "max_tokens": 8}),
        (["--tier=all", "--json", "hi"], {"prompt": "hi", "tier": "all", "json": True}),
        (["--effort", "11", "hi"], None),  # out of range: Typer says so
        (["--explain", "hi"], None),
        (["--direct", "hi"], {"prompt": "hi", "direct": True}),
        (["--help"], None),
        (["a", "b"], None),
    ],
)
def test_fast_run_parses_what_it_can_and_leaves_the_rest_to_typer(
    args: list[str], expected: dict[str, object] | None
) -> None:
    from aitherctl.cli.fast_run import parse

    assert parse(args) == expected


def test_the_fast_switch_takes_every_option_of_the_typer_command() -> None:
    """`profile switch` without Typer knows exactly the Typer command's options (less --help),
    so a script's switch never behaves differently from one typed at a terminal."""
    from aitherctl.cli import fast_run
    from aitherctl.cli.app import _load

    command = _load("profile_cmd")["profile"].commands["switch"]
    typer_options = {opt for param in command.params for opt in param.opts} - {"--help"}
    assert {*fast_run.SWITCH_FLAGS, "--lock-timeout"} == typer_options - {"name"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dev", "--yes", "--json"], {"name": "dev", "yes": True, "json_out": True}),
        (["-y", "dev", "--no-pull"], {"name": "dev", "yes": True, "no_pull": True}),
        (["dev", "--lock-timeout", "5"], {"name": "dev", "lock_timeout": 5.0}),
        (["--lock-timeout=0.5", "--dry-run", "dev"],
         {"name": "dev", "lock_timeout": 0.5, "dry_run": True}),
        (["dev", "--lock-timeout", "nope"], None),  # Typer says what is wrong with it
        (["dev", "--lock-timeout", "-1"], None),
        (["dev", "--lock-timeout"], None),
        (["dev", "--help"], None),
        (["dev", "other"], None),
        (["--yes"], None),  # no name: Typer asks for it
        ([], None),
    ],
)  # fmt: skip
def test_the_fast_switch_parses_what_it_can_and_leaves_the_rest_to_typer(
    args: list[str], expected: dict[str, object] | None
) -> None:
    from aitherctl.cli.fast_run import parse_switch

    assert parse_switch(args) == expected


KNOWN = "cpu, creative, dev, production"  # the built-in profiles
NO_ENGINE = "unix:///tmp/aither-no-engine-here.sock"


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (("no-such-profile", "--yes"), 4, f"no profile named 'no-such-profile' (known: {KNOWN})"),
        (("no-such-profile", "--dry-run", "--json"), 4,
         f"no profile named 'no-such-profile' (known: {KNOWN})"),
        # A dead Docker engine (the socket is not there): nothing can change, and it says why.
        (("cpu", "--yes"), 7,
         f"cannot reach the Docker engine at {NO_ENGINE}: no such file or directory (is dockerd "
         "running? set DOCKER_HOST or `docker context use`)"),
    ],
    ids=["unknown profile", "unknown profile, dry run", "no engine"],
)  # fmt: skip
def test_a_switch_fails_alike_with_or_without_typer(
    tmp_path: Path, args: tuple[str, ...], code: int, said: str
) -> None:
    """The same message on stderr, nothing on stdout and the same exit code, whichever way the
    console script runs the command."""
    runs = []
    for typer in (False, True):
        env = _cli_env(typer=typer, AITHER_PROFILE_DIR=str(tmp_path), DOCKER_HOST=NO_ENGINE)
        done = _python("-m", "aitherctl", "profile", "switch", *args, env=env)
        runs.append((done.returncode, done.stdout, done.stderr))
    assert runs[0] == runs[1]
    assert runs[0] == (code, "", f"error: {said}\n")


def test_a_finished_command_still_runs_atexit_and_flushes_its_output(tmp_path: Path) -> None:
    """`exit_now` skips the interpreter's teardown, not what a normal exit does for the user:
    atexit functions run, piped output arrives whole, the exit code is the command's."""
    mark = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(mark)!r}, 'w').write('yes'))\n"
        "sys.argv = ['aitherctl', 'profile', 'show', 'no-such-profile']\n"
        "sys.stdout.write('x' * 100000)\n"  # still in the buffer when the command ends
        "from aitherctl.cli.fast_run import main\n"
        "main()\n"
    )
    done = _python("-c", code, env=_cli_env())
    assert done.returncode != 0
    assert "no-such-profile" in done.stderr
    assert done.stdout == "x" * 100000
    assert mark.read_text() == "yes"


def test_a_default_of_the_parameters_own_type_skips_pydantic(tmp_path: Path) -> None:
    """`profile switch`'s `--lock-timeout` defaults to the float 900.0 (not a string): typer
    coerces defaults too, and that alone imported pydantic (0.1-0.2 s of every switch)."""
    modules, _, _ = imported(
        tmp_path, "profile", "switch", "no-such-profile", "--yes", "--json", typer=True
    )
    assert "aitherctl.cli.profile_cmd" in modules
    assert "pydantic" not in modules
    modules, code, _ = imported(tmp_path, "profile", "switch", "x", "--lock-timeout", "nope")
    assert code == 2  # a bad value still gets typer's own message
    assert "pydantic" in modules
