"""`${VAR}` in a profile's `env:` reaches the real container, expanded from the environment of
the `aitherctl` process that switches (a real CLI process, a real HTTP server in the base image).
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import free_port, run_cli, web_service

pytestmark = pytest.mark.docker


def test_env_references_are_expanded_when_the_profile_is_used(
    clean_namespace, write_profile, base_image
) -> None:
    port = free_port()
    service = web_service(port)
    service["args"] = [
        "sh",
        "-c",
        'mkdir -p /srv && printf "%s %s" "$GREETING" "$MODE" > /srv/index.html '
        f"&& cd /srv && exec python3 -m http.server {port}",
    ]
    service["env"] = {"GREETING": "${AITHER_TEST_GREETING}", "MODE": "${AITHER_TEST_MODE:-calm}"}
    path = write_profile("envy", services={"site": service})

    missing = run_cli("profile", "switch", "envy", "--yes")
    assert missing.returncode == 3
    assert missing.stderr.strip().startswith(f"error: {path}:"), missing.stderr
    assert missing.stderr.strip().endswith(
        "env: GREETING: ${AITHER_TEST_GREETING} is not set "
        "(set it, or give a default: ${AITHER_TEST_GREETING:-value})"
    )
    assert list(clean_namespace.list_managed()) == []

    switched = run_cli(
        "profile", "switch", "envy", "--yes", env={"AITHER_TEST_GREETING": "hello-from-env"}
    )
    assert switched.returncode == 0, switched.stderr
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text == "hello-from-env calm"

    shown = run_cli(
        "profile", "show", "envy", "--json", env={"AITHER_TEST_GREETING": "hello-from-env"}
    )
    assert "hello-from-env" not in shown.stdout
    assert run_cli("down", "--all", "--yes").returncode == 0
