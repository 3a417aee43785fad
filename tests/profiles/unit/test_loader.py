"""Profile loading: every mistake is one line with file:line, and extends merges by service."""

from __future__ import annotations

from pathlib import Path

import pytest

from aitherctl.errors import ConfigError, NotFoundError
from aitherctl.profiles.catalog import ProfileCatalog, builtin_profile_dir
from aitherctl.profiles.loader import load_profile_text
from aitherctl.profiles.problems import ConfigProblems
from aitherctl.profiles.profile import Engine
from aitherctl.units import GIB


@pytest.fixture
def catalog(profile_dir: Path) -> ProfileCatalog:
    return ProfileCatalog(user_dir=profile_dir)


def error_of(catalog: ProfileCatalog, name: str) -> str:
    with pytest.raises(ConfigError) as caught:
        catalog.load(name)
    return caught.value.message


def test_builtin_profiles_are_valid_and_fit(catalog: ProfileCatalog) -> None:
    assert {"dev", "production", "creative", "cpu"} <= set(catalog.names())
    dev = catalog.load("dev")
    resident = sum(svc.vram.fraction for svc in dev.resident.values() if svc.vram)  # type: ignore[misc]
    assert resident + (dev.gpu_reserve.fraction or 0) <= 1.0
    assert dev.services["reasoning"].on_demand
    assert "on demand" in dev.description
    assert catalog.load("production").services["orchestrator"].vram.fraction == 0.92  # type: ignore[union-attr]
    creative = catalog.load("creative")
    assert creative.services["orchestrator"].vram.fraction == 0.35  # type: ignore[union-attr]
    assert creative.services["comfyui"].engine is Engine.COMFYUI
    cpu = catalog.load("cpu")
    assert all(not svc.uses_gpu for svc in cpu.services.values())
    assert builtin_profile_dir().is_dir()


def test_yaml_syntax_error_names_where_the_construct_starts_and_where_parsing_stopped(
    catalog, write_profile
) -> None:
    path = write_profile(
        "broken",
        """
        name: broken
        services:
          a:
            engine: vllm
            model: m
            args: [--max-model-len, "8192"
            port: 8001
          b:
            engine: ollama
            port: 11434
        """,
    )
    assert error_of(catalog, "broken") == (
        f"{path}:6: unclosed '[' "
        "(parsing stopped at line 7: expected ',' or ']', but got '<scalar>')"
    )
    path = write_profile("quote", 'services:\n  a:\n    model: "org/m\n    port: 1\n')
    assert error_of(catalog, "quote") == (
        f'{path}:3: unclosed " (parsing stopped at line 5: found unexpected end of stream)'
    )


def test_unknown_key_suggests_the_right_one(catalog, write_profile) -> None:
    path = write_profile(
        "typo",
        """
        services:
          web:
            engine: llamacpp
            model: /m.gguf
            prot: 8080
        """,
    )
    assert error_of(catalog, "typo") == (
        f"{path}:5: unknown key 'prot' in service 'web' (did you mean 'port'?)"
    )


def test_wrong_type_names_the_field(catalog, write_profile) -> None:
    path = write_profile(
        "types",
        """
        services:
          web:
            engine: llamacpp
            model: /m.gguf
            port: "eighty"
        """,
    )
    assert error_of(catalog, "types") == (
        f"{path}:5: port: must be a port number from 1 to 65535, not 'eighty'"
    )


def test_budget_over_a_gpu_is_refused(catalog, write_profile) -> None:
    path = write_profile(
        "greedy",
        """
        gpu: {reserve: 10%}
        services:
          a: {engine: vllm, model: m1, port: 8001, gpu: 0, vram: 60%}
          b: {engine: vllm, model: m2, port: 8002, gpu: 0, vram: 35%}
        """,
    )
    assert error_of(catalog, "greedy") == (
        f"{path}:4: GPU 0 budgets add up to 95% (a 60% + b 35%) plus the 10% reserve, over 100%"
    )


def test_single_budget_over_100_percent(catalog, write_profile) -> None:
    path = write_profile(
        "huge",
        """
        services:
          a: {engine: vllm, model: m1, port: 8001, gpu: 0, vram: 120%}
        """,
    )
    assert error_of(catalog, "huge") == f"{path}:2: vram: 120% is outside 0–100% of a GPU"


def test_two_services_on_one_port(catalog, write_profile) -> None:
    path = write_profile(
        "clash",
        """
        services:
          a: {engine: llamacpp, model: /a.gguf, port: 8080}
          b: {engine: llamacpp, model: /b.gguf, port: 8080}
        """,
    )
    assert error_of(catalog, "clash") == f"{path}:3: services 'a' and 'b' both use port 8080"


def test_gpu_service_without_budget(catalog, write_profile) -> None:
    path = write_profile(
        "nobudget",
        """
        services:
          a: {engine: vllm, model: m, port: 8001, gpu: 0}
        """,
    )
    assert error_of(catalog, "nobudget") == (
        f"{path}:2: service 'a': runs on GPU 0 but has no `vram` budget (e.g. 35%)"
    )


def test_duplicate_key_is_reported(catalog, write_profile) -> None:
    path = write_profile(
        "dup", "services:\n  a: {engine: ollama, port: 1}\n  a: {engine: ollama, port: 2}\n"
    )
    assert error_of(catalog, "dup") == f"{path}:3: duplicate key 'a' (the earlier one is on line 2)"


def test_unknown_profile_is_not_found(catalog) -> None:
    with pytest.raises(NotFoundError, match=r"no profile named 'devv' \(did you mean 'dev'\?\)"):
        catalog.load("devv")


def test_extends_overrides_services_by_name_and_keeps_routing(catalog, write_profile) -> None:
    write_profile(
        "small",
        """
        extends: dev
        description: dev with a smaller coder and no vision
        services:
          coding: {vram: 10%}
          vision: null
        """,
    )
    small = catalog.load("small")
    dev = catalog.load("dev")
    assert small.services["coding"].vram.fraction == 0.10  # type: ignore[union-attr]
    assert small.services["coding"].model == dev.services["coding"].model
    assert "vision" not in small.services
    assert small.services["orchestrator"] == dev.services["orchestrator"]
    assert small.routing == dev.routing


def test_user_profile_of_the_same_name_wins_and_can_extend_the_builtin(
    catalog, write_profile
) -> None:
    write_profile(
        "cpu",
        """
        extends: cpu
        services:
          assistant: {port: 9999}
        """,
    )
    cpu = catalog.load("cpu")
    assert cpu.services["assistant"].port == 9999
    assert cpu.services["assistant"].engine is Engine.LLAMACPP
    entry = next(e for e in catalog.entries() if e.name == "cpu")
    assert not entry.builtin
    assert entry.overrides_builtin


def test_extends_cycle_and_unknown_parent(catalog, write_profile) -> None:
    write_profile("a", "extends: b\nservices: {}\n")
    path_b = write_profile("b", "extends: a\nservices: {}\n")
    assert error_of(catalog, "a") == f"{path_b}:1: `extends` makes a cycle: a -> b -> a"
    path = write_profile("orphan", "extends: nowhere\nservices: {}\n")
    assert error_of(catalog, "orphan").startswith(f"{path}:1: extends: no profile named 'nowhere'")


def test_absolute_budget_and_volumes(catalog, write_profile, tmp_path) -> None:
    write_profile(
        "abs",
        """
        services:
          a:
            engine: ollama
            port: 11434
            gpu: [0, 1]
            vram: 12GiB
            keep_alive: 10m
            volumes: ["./models:/root/.ollama", "cache:/cache:ro"]
        """,
    )
    service = catalog.load("abs").services["a"]
    assert service.vram.resolve(24 * GIB) == 12 * GIB  # type: ignore[union-attr]
    assert service.gpus == (0, 1)
    assert str(service.volumes[0]) == f"{tmp_path / 'profiles' / 'models'}:/root/.ollama"
    assert str(service.volumes[1]) == "cache:/cache:ro"


def test_ollama_settings_only_on_ollama(catalog, write_profile) -> None:
    path = write_profile(
        "wrong",
        """
        services:
          a: {engine: vllm, model: m, port: 1, keep_alive: 5m}
        """,
    )
    assert error_of(catalog, "wrong") == (
        f"{path}:2: service 'a': `keep_alive` is an Ollama setting; this service's engine is vllm"
    )


def test_name_must_match_file(catalog, write_profile) -> None:
    path = write_profile("right", "name: wrong\nservices: {}\n")
    assert error_of(catalog, "right") == (
        f"{path}:1: `name: wrong` does not match the file name 'right.yaml' (rename one of them)"
    )


def test_merge_keys_share_an_anchor_between_services(catalog, write_profile) -> None:
    write_profile(
        "anchors",
        """
        x-vllm: &vllm
          engine: vllm
          gpu: 0
          args: [--max-model-len, "8192"]
        services:
          chat:
            <<: *vllm
            model: org/chat
            port: 8001
            vram: 30%
          code:
            <<: *vllm
            model: org/code
            port: 8002
            vram: 20%
            args: [--max-model-len, "4096"]
        """,
    )
    profile = catalog.load("anchors")
    chat, code = profile.services["chat"], profile.services["code"]
    assert (chat.engine, chat.gpus, chat.args) == (Engine.VLLM, (0,), ("--max-model-len", "8192"))
    assert (code.engine, code.gpus, code.args) == (Engine.VLLM, (0,), ("--max-model-len", "4096"))


def test_a_mistake_in_a_merged_anchor_points_at_the_anchor(catalog, write_profile) -> None:
    path = write_profile(
        "badanchor",
        """
        x-base: &base
          engine: vllm
          port: eighty
        services:
          a: {<<: *base, model: m}
        """,
    )
    assert error_of(catalog, "badanchor") == (
        f"{path}:3: port: must be a port number from 1 to 65535, not 'eighty'"
    )


@pytest.mark.parametrize("order", ["wildcard first", "wildcard last"])
def test_port_clash_is_found_whatever_the_order(catalog, write_profile, order) -> None:
    wide = "wide: {engine: llamacpp, model: /a.gguf, port: 8080, bind: 0.0.0.0, api_key_env: K}"
    local = "local: {engine: llamacpp, model: /b.gguf, port: 8080}"
    first, second = (wide, local) if order == "wildcard first" else (local, wide)
    path = write_profile("clash", f"services:\n  {first}\n  {second}\n")
    names = ("wide", "local") if order == "wildcard first" else ("local", "wide")
    assert error_of(catalog, "clash") == (
        f"{path}:3: services {names[0]!r} and {names[1]!r} both use port 8080"
    )


def test_different_addresses_may_share_a_port(catalog, write_profile) -> None:
    write_profile(
        "lan",
        """
        services:
          a: {engine: llamacpp, model: /a.gguf, port: 8080, bind: 127.0.0.1}
          b: {engine: llamacpp, model: /b.gguf, port: 8080, bind: 192.168.1.20, api_key_env: K}
        """,
    )
    assert set(catalog.load("lan").services) == {"a", "b"}


def test_port_clash_across_extends_blames_the_child(catalog, write_profile) -> None:
    write_profile(
        "base",
        """
        services:
          a: {engine: llamacpp, model: /a.gguf, port: 8080}
          b: {engine: llamacpp, model: /b.gguf, port: 8081}
        """,
    )
    child = write_profile(
        "child",
        """
        extends: base
        services:
          b: {port: 8080}
        """,
    )
    assert error_of(catalog, "child") == f"{child}:3: services 'a' and 'b' both use port 8080"
    # The same clash written the other way round in the child: still found, still the child.
    other = write_profile(
        "other",
        """
        extends: base
        services:
          a: {port: 8081}
        """,
    )
    assert error_of(catalog, "other") == f"{other}:3: services 'b' and 'a' both use port 8081"


def test_env_references_expand_from_the_given_environment(profile_dir, write_profile) -> None:
    path = write_profile(
        "secrets",
        """
        services:
          a:
            engine: ollama
            port: 11434
            env:
              HF_TOKEN: ${HF_TOKEN}
              MODE: ${MODE:-fast}
              PRICE: "$$5 ${CURRENCY-usd}"
        """,
    )
    environ = {"HF_TOKEN": "hf_secret", "CURRENCY": ""}
    profile = ProfileCatalog(user_dir=profile_dir, environ=environ).load("secrets")
    assert dict(profile.services["a"].env) == {
        "HF_TOKEN": "hf_secret",
        "MODE": "fast",
        "PRICE": "$5 ",
    }
    written = ProfileCatalog(user_dir=profile_dir, environ=environ).load("secrets", expand=False)
    assert dict(written.services["a"].env)["HF_TOKEN"] == "${HF_TOKEN}"
    with pytest.raises(ConfigError) as caught:
        ProfileCatalog(user_dir=profile_dir, environ={}).load("secrets")
    assert caught.value.message == (
        f"{path}:6: env: HF_TOKEN: ${{HF_TOKEN}} is not set "
        "(set it, or give a default: ${HF_TOKEN:-value})"
    )


def test_malformed_reference_is_an_error_even_unexpanded(catalog, write_profile) -> None:
    path = write_profile(
        "badref",
        """
        services:
          a:
            engine: ollama
            port: 11434
            env: {A: "${1BAD}", B: "${OPEN"}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        catalog.load("badref", expand=False)
    assert caught.value.message == (
        f"{path}:5: env: A: `${{1BAD}}` is not a variable reference (write ${{NAME}})"
    )


def test_every_problem_in_a_file_is_reported(catalog, write_profile) -> None:
    path = write_profile(
        "many",
        """
        services:
          a: {engine: vllm, model: m, port: 8001, gpu: 0}
          b: {engine: llamacpp, port: 8002}
          c: {engine: ollama, prot: 8003}
          d: {engine: ollama, port: 8001, bind: 0.0.0.0}
        allow_unauthenticated_network: true
        """,
    )
    with pytest.raises(ConfigProblems) as caught:
        catalog.load("many")
    assert [problem.message for problem in caught.value.problems] == [
        f"{path}:2: service 'a': runs on GPU 0 but has no `vram` budget (e.g. 35%)",
        f"{path}:3: service 'b': engine llamacpp needs a `model` to serve",
        f"{path}:4: unknown key 'prot' in service 'c' (did you mean 'port'?)",
        # 'a' did not build, but its port is checked as written (issue 20: it used to show only
        # once 'a' was fixed).
        f"{path}:5: services 'a' and 'd' both use port 8001",
    ]
    assert caught.value.message == caught.value.problems[0].message
    assert caught.value.detail is not None
    assert len(caught.value.detail.splitlines()) == 3


def test_the_core_parses_text_without_files() -> None:
    """The pure loader takes text, a source name and an environment: no folder, no file."""
    profile = load_profile_text(
        "services:\n  a: {engine: ollama, port: 1, env: {K: '${K}'}, volumes: ['~/m:/m']}\n",
        "/nowhere/solo.yaml",
        env={"K": "v", "HOME": "/home/u"},
    )
    assert profile.name == "solo"
    assert profile.services["a"].env == (("K", "v"),)
    assert str(profile.services["a"].volumes[0]) == "/home/u/m:/m"
    with pytest.raises(ConfigError, match=r"^/nowhere/x.yaml:1: extends: no profile named 'dev'"):
        load_profile_text("extends: dev\nservices: {}\n", "/nowhere/x.yaml")


def test_merge_key_precedence_and_loops() -> None:
    """YAML 1.1 merge: keys written beside `<<` win, then earlier mappings in a `<<` list."""
    from aitherctl.yamlsrc import parse_yaml

    doc = parse_yaml(
        "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n", "m.yaml"
    )
    assert doc.data["c"] == {"x": 1, "y": 1, "z": 3}
    assert doc.line(("c", "x")) == 1  # where the merged value was written
    assert doc.line(("c", "z")) == 5
    for text, message in [
        ("a: &a [*a]\n", "m.yaml:1: an alias refers to a value that contains it"),
        (
            "a: 1\nb: {<<: 3}\n",
            "m.yaml:2: `<<` merges a mapping (an alias like *base, or a list of them)",
        ),
        (
            "a: &a {x: 1}\nb: {<<: *a, y: 1, y: 2}\n",
            "m.yaml:2: duplicate key 'y' (the earlier one is on line 2)",
        ),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_yaml(text, "m.yaml")
        assert caught.value.message == message
