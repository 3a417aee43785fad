"""Profile loading: every mistake is one line with file:line, and extends merges by service."""

from __future__ import annotations

from pathlib import Path

import pytest

from aitherctl.core.loader import ProfileCatalog, builtin_profile_dir
from aitherctl.core.profile import Engine
from aitherctl.core.units import GIB
from aitherctl.errors import ConfigError, NotFoundError


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


def test_yaml_syntax_error_names_file_and_line(catalog, write_profile) -> None:
    path = write_profile("broken", "services:\n  a:\n    engine: [vllm\n    port: 1\n")
    message = error_of(catalog, "broken")
    assert message.startswith(f"{path}:4: YAML syntax error")


def test_unknown_key_suggests_the_right_one(catalog, write_profile) -> None:
    path = write_profile("typo", """
        services:
          web:
            engine: llamacpp
            model: /m.gguf
            prot: 8080
        """)
    assert error_of(catalog, "typo") == (
        f"{path}:5: unknown key 'prot' in service 'web' (did you mean 'port'?)"
    )


def test_wrong_type_names_the_field(catalog, write_profile) -> None:
    path = write_profile("types", """
        services:
          web:
            engine: llamacpp
            model: /m.gguf
            port: "eighty"
        """)
    assert error_of(catalog, "types") == (
        f"{path}:5: port: must be a port number from 1 to 65535, not 'eighty'"
    )


def test_budget_over_a_gpu_is_refused(catalog, write_profile) -> None:
    path = write_profile("greedy", """
        gpu: {reserve: 10%}
        services:
          a: {engine: vllm, model: m1, port: 8001, gpu: 0, vram: 60%}
          b: {engine: vllm, model: m2, port: 8002, gpu: 0, vram: 35%}
        """)
    assert error_of(catalog, "greedy") == (
        f"{path}:4: GPU 0 budgets add up to 95% (a 60% + b 35%) plus the 10% reserve, over 100%"
    )


def test_single_budget_over_100_percent(catalog, write_profile) -> None:
    path = write_profile("huge", """
        services:
          a: {engine: vllm, model: m1, port: 8001, gpu: 0, vram: 120%}
        """)
    assert error_of(catalog, "huge") == f"{path}:2: vram: 120% is outside 0–100% of a GPU"


def test_two_services_on_one_port(catalog, write_profile) -> None:
    path = write_profile("clash", """
        services:
          a: {engine: llamacpp, model: /a.gguf, port: 8080}
          b: {engine: llamacpp, model: /b.gguf, port: 8080}
        """)
    assert error_of(catalog, "clash") == f"{path}:3: services 'a' and 'b' both use port 8080"


def test_gpu_service_without_budget(catalog, write_profile) -> None:
    path = write_profile("nobudget", """
        services:
          a: {engine: vllm, model: m, port: 8001, gpu: 0}
        """)
    assert error_of(catalog, "nobudget") == (
        f"{path}:2: service 'a': runs on GPU 0 but has no `vram` budget (e.g. 35%)"
    )


def test_duplicate_key_is_reported(catalog, write_profile) -> None:
    path = write_profile("dup", "services:\n  a: {engine: ollama, port: 1}\n  a: {engine: ollama, port: 2}\n")
    assert error_of(catalog, "dup") == f"{path}:3: duplicate key 'a' (the earlier one is on line 2)"


def test_unknown_profile_is_not_found(catalog) -> None:
    with pytest.raises(NotFoundError, match=r"no profile named 'devv' \(did you mean 'dev'\?\)"):
        catalog.load("devv")


def test_extends_overrides_services_by_name_and_keeps_routing(catalog, write_profile) -> None:
    write_profile("small", """
        extends: dev
        description: dev with a smaller coder and no vision
        services:
          coding: {vram: 10%}
          vision: null
        """)
    small = catalog.load("small")
    dev = catalog.load("dev")
    assert small.services["coding"].vram.fraction == 0.10  # type: ignore[union-attr]
    assert small.services["coding"].model == dev.services["coding"].model
    assert "vision" not in small.services
    assert small.services["orchestrator"] == dev.services["orchestrator"]
    assert small.routing == dev.routing


def test_user_profile_of_the_same_name_wins_and_can_extend_the_builtin(catalog, write_profile) -> None:
    write_profile("cpu", """
        extends: cpu
        services:
          assistant: {port: 9999}
        """)
    cpu = catalog.load("cpu")
    assert cpu.services["assistant"].port == 9999
    assert cpu.services["assistant"].engine is Engine.LLAMACPP
    entry = next(e for e in catalog.entries() if e.name == "cpu")
    assert not entry.builtin and entry.overrides_builtin


def test_extends_cycle_and_unknown_parent(catalog, write_profile) -> None:
    write_profile("a", "extends: b\nservices: {}\n")
    path_b = write_profile("b", "extends: a\nservices: {}\n")
    assert error_of(catalog, "a") == f"{path_b}:1: `extends` makes a cycle: a -> b -> a"
    path = write_profile("orphan", "extends: nowhere\nservices: {}\n")
    assert error_of(catalog, "orphan").startswith(f"{path}:1: extends: no profile named 'nowhere'")


def test_absolute_budget_and_volumes(catalog, write_profile, tmp_path) -> None:
    write_profile("abs", """
        services:
          a:
            engine: ollama
            port: 11434
            gpu: [0, 1]
            vram: 12GiB
            keep_alive: 10m
            volumes: ["./models:/root/.ollama", "cache:/cache:ro"]
        """)
    service = catalog.load("abs").services["a"]
    assert service.vram.resolve(24 * GIB) == 12 * GIB  # type: ignore[union-attr]
    assert service.gpus == (0, 1)
    assert str(service.volumes[0]) == f"{tmp_path / 'profiles' / 'models'}:/root/.ollama"
    assert str(service.volumes[1]) == "cache:/cache:ro"


def test_ollama_settings_only_on_ollama(catalog, write_profile) -> None:
    path = write_profile("wrong", """
        services:
          a: {engine: vllm, model: m, port: 1, keep_alive: 5m}
        """)
    assert error_of(catalog, "wrong") == (
        f"{path}:2: service 'a': `keep_alive` is an Ollama setting; this service's engine is vllm"
    )


def test_name_must_match_file(catalog, write_profile) -> None:
    path = write_profile("right", "name: wrong\nservices: {}\n")
    assert error_of(catalog, "right") == (
        f"{path}:1: `name: wrong` does not match the file name 'right.yaml' (rename one of them)"
    )
