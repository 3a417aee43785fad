"""`profile validate`: every mistake of a file in one pass, each as `file:line: message`."""

from __future__ import annotations

from typer.testing import CliRunner

from aitherctl.cli.app import app

runner = CliRunner()


def test_validate_reports_all_five_mistakes_of_a_file_in_one_pass(
    write_profile, monkeypatch
) -> None:
    """A file like this took three rounds: the unset `${VAR}`, the port clash and the GPU shares
    of a service with another mistake showed only once that mistake was fixed."""
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    path = write_profile(
        "five",
        """
        services:
          chat:
            engine: vllm
            model: org/chat
            port: 8001
            gpu: 0
            vram: 80%
            env: {HF_TOKEN: "${NOT_SET_HERE}"}
            ollama_typo: 1
          code: {engine: vllm, port: 8001, gpu: 0, vram: 30%}
        """,
    )
    result = runner.invoke(app, ["profile", "validate", str(path)])
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:8: env: HF_TOKEN: ${{NOT_SET_HERE}} is not set "
        "(set it, or give a default: ${NOT_SET_HERE:-value})",
        f"{path}:9: unknown key 'ollama_typo' in service 'chat'",
        f"{path}:10: service 'code': engine vllm needs a `model` to serve",
        f"{path}:10: services 'chat' and 'code' both use port 8001",
        f"{path}:10: GPU 0 budgets add up to 110% (chat 80% + code 30%) plus the 5% reserve, "
        "over 100%",
    ]


def test_validate_reports_routing_mistakes_together_with_a_port_clash(write_profile) -> None:
    """Routing used to be checked only once every other mistake was fixed."""
    path = write_profile(
        "clash",
        """
        services:
          a: {engine: ollama, port: 11434}
          b: {engine: ollama, port: 11434}
        routing:
          tiers:
            all: {effort: 1-10, candidates: [nope]}
        """,
    )
    result = runner.invoke(app, ["profile", "validate", str(path)])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"{path}:3: services 'a' and 'b' both use port 11434",
        f"{path}:6: routing.tiers.all.candidates: no service, endpoint or node 'nope' "
        "(known: a, b)",
    ]


def test_validate_takes_a_profile_name_as_show_and_switch_do(write_profile) -> None:
    """`profile show mine` works, so a user types `profile validate mine` next: it used to say
    "mine: no such profile file"."""
    path = write_profile(
        "mine",
        """
        services:
          chat: {engine: ollama, port: 11434}
          code: {engine: ollama, port: 11434}
        """,
    )
    result = runner.invoke(app, ["profile", "validate", "mine"])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"{path}:3: services 'chat' and 'code' both use port 11434"
    ]
    typo = runner.invoke(app, ["profile", "validate", "mien"])
    assert typo.exit_code == 4
    assert typo.stderr.splitlines() == [
        "error: no profile named 'mien' (did you mean 'mine'?) (known: cpu, creative, dev, mine, "
        "production)"
    ]
    missing = runner.invoke(app, ["profile", "validate", "mine.yaml"])  # a file: not in this folder
    assert missing.exit_code == 3
    assert missing.stderr.splitlines() == ["mine.yaml: no such profile file"]
