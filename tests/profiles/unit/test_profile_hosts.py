"""`hosts:` and `host:` in profiles: where each service runs, where this machine reaches it, and
the rule that nothing answers on a network without a key. Mistakes name file and line."""

from __future__ import annotations

import textwrap

import pytest

from aitherctl.errors import ConfigError
from aitherctl.profiles.loader import load_profile_text
from aitherctl.profiles.problems import ConfigProblems
from aitherctl.routing.table import service_candidate

MODEL = "/models/m.gguf"


def load(text: str):  # type: ignore[no-untyped-def]
    return load_profile_text(textwrap.dedent(text), "two.yaml")


def problem(text: str) -> ConfigError:
    with pytest.raises((ConfigError, ConfigProblems)) as caught:
        load(text)
    error = caught.value
    if isinstance(error, ConfigProblems):
        return error.problems[0]
    assert isinstance(error, ConfigError)
    return error


def test_services_on_two_hosts_share_a_port_number_and_are_reached_at_the_host_address() -> None:
    profile = load(f"""
        name: two
        hosts:
          box2: {{docker: "ssh://me@box2:2222", address: 127.0.0.1}}
        services:
          here: {{engine: llamacpp, model: {MODEL}, port: 8080}}
          there: {{engine: llamacpp, model: {MODEL}, port: 8080, host: box2}}
    """)
    assert profile.services["here"].host == "local"
    assert profile.services["there"].host == "box2"
    assert profile.hosts["box2"].docker == "ssh://me@box2:2222"
    assert profile.host_names == ["local", "box2"]
    assert set(profile.on_host("box2").services) == {"there"}
    assert service_candidate(profile.services["there"]).base_url == "http://127.0.0.1:8080/v1"


def test_the_same_port_twice_on_one_host_is_refused_with_its_line() -> None:
    error = problem(f"""
        name: two
        hosts: {{box2: {{docker: "ssh://me@box2", address: 127.0.0.1}}}}
        services:
          a: {{engine: llamacpp, model: {MODEL}, port: 8080, host: box2, bind: 127.0.0.1}}
          b: {{engine: llamacpp, model: {MODEL}, port: 8080, host: box2}}
    """)
    assert "both use port 8080" in error.message
    assert error.line == 6


def test_an_undeclared_host_names_the_known_ones_and_the_line() -> None:
    error = problem(f"""
        name: two
        hosts: {{box2: "ssh://me@127.0.0.1"}}
        services:
          a: {{engine: llamacpp, model: {MODEL}, port: 8080, host: box3}}
    """)
    assert "host 'box3' is not declared under `hosts:`" in error.message
    assert "local, box2" in error.message
    assert error.line == 5


@pytest.mark.parametrize(
    ("hosts", "wanted"),
    [
        ("{local: ssh://me@box}", "`local` is this machine's own engine"),
        ("{box: mycontext}", "add `address:`"),
        ("{box: http://box:2375}", "is not a Docker endpoint"),
        ("{box: {address: 10.0.0.2}}", "needs `docker`"),
        ("[ssh://me@box]", "`hosts` must map a host name"),
    ],
)
def test_bad_hosts_say_what_to_write(hosts: str, wanted: str) -> None:
    error = problem(f"""
        name: two
        hosts: {hosts}
        services: {{}}
    """)
    assert wanted in error.message
    assert error.line is not None


def test_a_service_bound_to_loopback_on_a_network_host_is_refused() -> None:
    error = problem(f"""
        name: two
        hosts: {{box2: "ssh://me@10.0.0.2"}}
        services:
          a: {{engine: llamacpp, model: {MODEL}, port: 8080, host: box2}}
    """)
    assert "cannot reach at 10.0.0.2" in error.message
    assert "api_key_env" in error.message


def test_a_network_bind_needs_a_key_and_an_engine_that_checks_one() -> None:
    error = problem("""
        name: two
        hosts: {box2: "ssh://me@10.0.0.2"}
        services:
          a: {engine: vllm, model: m, port: 8000, host: box2, bind: 0.0.0.0}
    """)
    assert "without authentication" in error.message
    error = problem("""
        name: two
        hosts: {box2: "ssh://me@10.0.0.2"}
        services:
          a: {engine: ollama, port: 11434, host: box2, bind: 0.0.0.0, api_key_env: K}
    """)
    assert "checks no API key" in error.message


def test_a_keyed_service_on_a_network_host_sends_its_key_over_that_network() -> None:
    profile = load("""
        name: two
        hosts: {box2: "tcp://10.0.0.2:2376"}
        services:
          a: {engine: vllm, model: m, port: 8000, host: box2, bind: 0.0.0.0, api_key_env: BOX_KEY}
    """)
    candidate = service_candidate(profile.services["a"])
    assert candidate.base_url == "http://10.0.0.2:8000/v1"
    assert candidate.api_key_env == "BOX_KEY"
    assert candidate.key_over_http


def test_gpu_budgets_add_up_per_host() -> None:
    profile = load(f"""
        name: two
        hosts: {{box2: {{docker: "ssh://me@box2", address: 127.0.0.1}}}}
        services:
          a: {{engine: llamacpp, model: {MODEL}, port: 8080, gpu: 0, vram: 70%}}
          b: {{engine: llamacpp, model: {MODEL}, port: 8081, gpu: 0, vram: 70%, host: box2}}
    """)
    assert profile.services["b"].host == "box2"
    error = problem(f"""
        name: two
        hosts: {{box2: {{docker: "ssh://me@box2", address: 127.0.0.1}}}}
        services:
          a: {{engine: llamacpp, model: {MODEL}, port: 8080, gpu: 0, vram: 70%, host: box2}}
          b: {{engine: llamacpp, model: {MODEL}, port: 8081, gpu: 0, vram: 70%, host: box2}}
    """)
    assert "GPU 0 on host box2 budgets add up to 140%" in error.message


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.168.1.20", "::"])
def test_a_local_service_on_the_network_without_a_key_is_refused_with_file_and_line(
    bind: str,
) -> None:
    error = problem(f"""
        name: two
        services:
          chat:
            engine: llamacpp
            model: {MODEL}
            port: 8080
            bind: "{bind}"
    """)
    assert error.message == (
        f"two.yaml:8: service 'chat': it would answer on the network at {bind} without "
        "authentication: set `api_key_env` to the variable holding its API key, bind it to "
        "127.0.0.1, or say `allow_unauthenticated_network: true` in the profile"
    )


def test_a_local_network_service_with_a_key_or_explicitly_unauthenticated_loads() -> None:
    keyed = load(f"""
        services:
          chat: {{engine: llamacpp, model: {MODEL}, port: 8080, bind: 0.0.0.0, api_key_env: K}}
    """)
    assert keyed.open_services == []
    open_ = load(f"""
        allow_unauthenticated_network: true
        services:
          chat: {{engine: llamacpp, model: {MODEL}, port: 8080, bind: 0.0.0.0}}
          here: {{engine: llamacpp, model: {MODEL}, port: 8081}}
    """)
    assert open_.open_services == ["chat"]
    wrong = problem("""
        allow_unauthenticated_network: "yes"
        services: {}
    """)
    assert wrong.message == ("two.yaml:2: `allow_unauthenticated_network` must be true or false")
