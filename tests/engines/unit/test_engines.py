"""Each engine's driver: the container it builds, checked against the engines' docs and images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction

import pytest

from aitherctl.engines.container import ContainerSpec, HttpCheck
from aitherctl.engines.metrics import EngineMetrics
from aitherctl.engines.registry import (
    EngineContainer,
    GpuShare,
    HttpRequest,
    MetricsEndpoint,
    allocates_gpu_at_start,
    build_container,
    driver_for,
    drivers,
    health_paths,
    queue_metrics,
    register,
    release_requests,
    unregister,
)
from aitherctl.errors import RefusedError
from aitherctl.profiles.profile import Engine, Health, Service, Volume
from aitherctl.units import GIB, MemoryAmount

GPU = {0: 24 * GIB, 1: 24 * GIB}


def service(**fields: object) -> Service:
    base: dict[str, object] = {"name": "svc", "engine": Engine.VLLM, "image": "img", "port": 9000}
    return Service(**{**base, **fields})  # type: ignore[arg-type]


def test_vllm_utilization_is_budget_over_total_rounded_down() -> None:
    spec = build_container(
        service(model="org/model", gpus=(0,), vram=MemoryAmount.parse("10GiB")), GPU
    )
    args = list(spec.command)
    assert args[:4] == ["--model", "org/model", "--served-model-name", "org/model"]
    assert args[4:6] == ["--port", "8000"]
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.4166"  # 10/24 = 0.41666…
    assert spec.ipc_host
    assert [c.path for c in spec.readiness.checks] == ["/health", "/v1/models"]
    assert spec.readiness.checks[1].model == "org/model"
    assert spec.vram_bytes == 10 * GIB


def test_vllm_two_gpus_get_tensor_parallel() -> None:
    spec = build_container(
        service(model="m", gpus=(0, 1), vram=MemoryAmount.parse("50%"), served_name="big"), GPU
    )
    args = list(spec.command)
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.5"
    assert spec.gpus == (0, 1)


def test_vllm_on_cpu_has_no_gpu_flags() -> None:
    spec = build_container(service(model="/models/smol", served_name="smol"), {})
    assert "--gpu-memory-utilization" not in spec.command
    assert spec.gpus == ()


def test_llamacpp_arguments() -> None:
    cpu = build_container(service(engine=Engine.LLAMACPP, model="/m.gguf", port=8090), {})
    assert list(cpu.command) == [
        "-m",
        "/m.gguf",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--metrics",
        "--alias",
        "svc",
    ]
    assert (cpu.container_port, cpu.host_port) == (8080, 8090)
    gpu = build_container(
        service(engine=Engine.LLAMACPP, model="/m.gguf", gpus=(0,), vram=MemoryAmount.parse("20%")),
        GPU,
    )
    assert gpu.command[-2:] == ("-ngl", "999")
    assert [c.path for c in gpu.readiness.checks] == ["/health"]


def test_ollama_settings_become_environment() -> None:
    spec = build_container(
        service(engine=Engine.OLLAMA, keep_alive="10m", max_loaded_models=2, num_parallel=4), {}
    )
    env = dict(spec.env)
    assert env["OLLAMA_KEEP_ALIVE"] == "10m"
    assert env["OLLAMA_MAX_LOADED_MODELS"] == "2"
    assert env["OLLAMA_NUM_PARALLEL"] == "4"
    assert env["OLLAMA_HOST"] == "0.0.0.0:11434"
    assert [c.path for c in spec.readiness.checks] == ["/api/version"]
    assert any(v.container == "/root/.ollama" for v in spec.volumes)


def test_comfyui_alone_reserves_what_is_not_its_budget() -> None:
    spec = build_container(
        service(engine=Engine.COMFYUI, gpus=(0,), vram=MemoryAmount.parse("15GiB")), GPU
    )
    assert spec.command == ()  # the image's CMD (its entrypoint script) must run
    assert dict(spec.env)["CLI_ARGS"] == "--reserve-vram 9"
    assert [c.path for c in spec.readiness.checks] == ["/system_stats"]


def test_spec_hash_changes_with_the_container_not_with_flags() -> None:
    base = service(model="m")
    same = build_container(base, {})
    assert same.spec_hash() == build_container(service(model="m", pinned=True), {}).spec_hash()
    assert (
        same.spec_hash()
        == build_container(service(model="m", health=Health(timeout_s=5)), {}).spec_hash()
    )
    assert same.spec_hash() != build_container(service(model="m2"), {}).spec_hash()
    assert same.spec_hash() != build_container(service(model="m", args=("--x",)), {}).spec_hash()
    assert same.spec_hash() != build_container(service(model="m", port=9001), {}).spec_hash()


# --- exact percentages, each GPU's own total ------------------------------------------------------

MIXED = {0: 24 * GIB, 1: 48 * 10**9}  # a 24 GiB card beside a 48 GB one


@pytest.mark.parametrize("total", [24 * GIB, 48 * 10**9, 80 * GIB, 16_884_424_704, 12_884_901_887])
def test_a_percentage_reaches_vllm_exactly(total: int) -> None:
    amount = MemoryAmount.parse("35%")
    spec = build_container(service(model="m", gpus=(0,), vram=amount), {0: total})
    args = list(spec.command)
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.35"
    assert spec.vram_bytes == total * 35 // 100  # bytes round down, exactly


def test_fractional_percentages_stay_exact() -> None:
    amount = MemoryAmount.parse("12.5%")
    assert amount.share == Fraction(1, 8)
    assert str(amount) == "12.5%"
    assert str(MemoryAmount.parse("35%")) == "35%"
    assert MemoryAmount.parse("33.3%").resolve(1000) == 333
    spec = build_container(service(model="m", gpus=(0,), vram=amount), GPU)
    assert spec.command[list(spec.command).index("--gpu-memory-utilization") + 1] == "0.125"


def test_budgets_resolve_against_each_gpus_own_total() -> None:
    spec = build_container(service(model="m", gpus=(0, 1), vram=MemoryAmount.parse("35%")), MIXED)
    assert spec.gpu_vram == ((0, 24 * GIB * 35 // 100), (1, 48 * 10**9 * 35 // 100))
    assert spec.vram_bytes == 24 * GIB * 35 // 100  # the smallest, for labels
    args = list(spec.command)
    # one utilisation for every rank, each against its own card: the share itself
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.35"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"


def test_a_byte_budget_on_unequal_cards_fits_the_largest() -> None:
    amount = MemoryAmount.parse("12GiB")
    spec = build_container(service(model="m", gpus=(0, 1), vram=amount), MIXED)
    args = list(spec.command)
    utilization = Fraction(args[args.index("--gpu-memory-utilization") + 1])
    assert utilization == Fraction(2684, 10000)  # 12 GiB / 48 GB = 0.26843…, rounded down
    assert all(utilization * total <= 12 * GIB for total in MIXED.values())
    assert spec.gpu_vram == ((0, 12 * GIB), (1, 12 * GIB))


# --- ComfyUI's reserve ----------------------------------------------------------------------------


def test_comfyui_reserve_leaves_it_its_budget_beside_neighbours() -> None:
    comfy = service(
        name="comfy", engine=Engine.COMFYUI, gpus=(0,), vram=MemoryAmount.parse("10GiB")
    )
    chat = service(name="chat", model="m", gpus=(0,), vram=MemoryAmount.parse("8GiB"))
    other_gpu = service(name="embed", model="e", gpus=(1,), vram=MemoryAmount.parse("20GiB"))
    spec = build_container(comfy, GPU, [chat, other_gpu])
    # ComfyUI keeps `reserve` free of what is free: 24 - 8 (chat) - 6 = its 10 GiB.
    assert dict(spec.env)["CLI_ARGS"] == "--reserve-vram 6"
    # Only resident neighbours count (the caller passes those); itself never does.
    assert build_container(comfy, GPU, [chat, comfy]).env == spec.env


def test_comfyui_reserve_rounds_up_to_whole_mib() -> None:
    comfy = service(engine=Engine.COMFYUI, gpus=(0,), vram=MemoryAmount.parse("35%"))
    spec = build_container(comfy, GPU)
    # 24 GiB - 35% = 15.6 GiB = 15974.4 MiB → 15975 MiB = 15.6005859375 GiB
    assert dict(spec.env)["CLI_ARGS"] == "--reserve-vram 15.6005859375"
    reserve = Fraction("15.6005859375") * GIB
    assert 24 * GIB - reserve <= spec.vram_bytes  # ComfyUI never gets more than its budget
    assert spec.vram_bytes - (24 * GIB - reserve) < 1024**2


def test_comfyui_on_the_cpu_and_its_arguments() -> None:
    spec = build_container(
        service(engine=Engine.COMFYUI, container_port=8189, args=("--preview-method", "auto")), {}
    )
    assert spec.command == ()
    assert dict(spec.env)["CLI_ARGS"] == "--port 8189 --cpu --preview-method auto"
    with pytest.raises(RefusedError, match="CLI_ARGS"):
        build_container(service(engine=Engine.COMFYUI, args=("--output-directory", "/a b")), {})


def test_comfyui_user_data_lives_in_named_volumes_unless_mounted() -> None:
    spec = build_container(service(engine=Engine.COMFYUI), {})
    mounts = {volume.container: volume.host for volume in spec.volumes}
    for path in (
        "/root/ComfyUI/custom_nodes",
        "/root/ComfyUI/models",
        "/root/ComfyUI/user",
        "/root/ComfyUI/output",
        "/root/ComfyUI/input",
    ):
        assert mounts[path].startswith("aither-comfyui-")  # a name, not a host path
    mine = Volume("/srv/models", "/root/ComfyUI/models")
    spec = build_container(service(engine=Engine.COMFYUI, volumes=(mine,)), {})
    assert [v for v in spec.volumes if v.container == "/root/ComfyUI/models"] == [mine]


# --- one driver per engine ---------------------------------------------------------------------


def test_every_engine_has_a_driver_with_a_pinned_default_image() -> None:
    assert set(drivers()) >= {engine.value for engine in Engine}
    for engine in Engine:
        driver = driver_for(engine)
        for uses_gpu in (True, False):
            image = driver.default_image(uses_gpu)
            if engine is Engine.GENERIC:
                assert image is None
                continue
            assert image is not None
            name, _, tag = image.rpartition(":")
            assert "/" in name, image
            assert tag, image
            assert tag not in ("latest", "server", "server-cuda", "cu130-slim-v2"), image
            assert any(ch.isdigit() for ch in tag), f"{image} is not pinned to a version"


def test_a_changed_image_tag_is_a_changed_spec() -> None:
    old = build_container(service(model="m", image="vllm/vllm-openai:v0.29.0"), {})
    new = build_container(service(model="m", image="vllm/vllm-openai:v0.30.0"), {})
    assert old.spec_hash() != new.spec_hash()


def test_ollama_keeps_its_serve_command() -> None:
    assert build_container(service(engine=Engine.OLLAMA), {}).command == ()  # CMD ["serve"]
    spec = build_container(service(engine=Engine.OLLAMA, args=("--verbose",)), {})
    assert spec.command == ("serve", "--verbose")


def gpu_spec(engine: Engine, **fields: object) -> ContainerSpec:
    return build_container(
        service(engine=engine, model="/m", gpus=(0,), vram=MemoryAmount.parse("20%"), **fields),
        GPU,
    )


def test_which_engines_allocate_gpu_memory_as_they_start() -> None:
    assert allocates_gpu_at_start(gpu_spec(Engine.VLLM))
    assert allocates_gpu_at_start(gpu_spec(Engine.LLAMACPP))
    assert not allocates_gpu_at_start(gpu_spec(Engine.LLAMACPP, args=("-ngl", "0")))
    assert not allocates_gpu_at_start(gpu_spec(Engine.OLLAMA))
    assert not allocates_gpu_at_start(gpu_spec(Engine.COMFYUI))
    assert allocates_gpu_at_start(gpu_spec(Engine.GENERIC, image="x:1", health=Health(path="/h")))
    assert not allocates_gpu_at_start(build_container(service(model="m"), {}))  # on the CPU


def test_router_and_monitor_read_engine_knowledge_from_the_drivers() -> None:
    assert queue_metrics() == {
        "vllm": "vllm:num_requests_waiting",
        "llamacpp": "llamacpp:requests_deferred",
    }
    assert health_paths()["ollama"] == "/api/version"
    assert [e.path for e in driver_for(Engine.COMFYUI).metrics] == ["/queue", "/system_stats"]
    assert release_requests("ollama", ["a:1b"]) == (
        HttpRequest("POST", "/api/generate", {"model": "a:1b", "keep_alive": 0}),
    )
    assert release_requests("ollama", ["a:1b"]) != (
        HttpRequest("POST", "/api/generate", {"model": "b:1b", "keep_alive": 0}),
    )
    assert release_requests("vllm", []) is None
    assert driver_for(Engine.LLAMACPP).default_concurrency(service(engine=Engine.LLAMACPP)) == 4
    assert driver_for(Engine.VLLM).default_concurrency(service(args=("--max-num-seqs", "32"))) == 32


class ThrowawayDriver:
    """A new engine in one class: what adding SGLang would take."""

    engine = "sglang"
    default_port = 30000
    default_timeout_s = 600.0
    health_path = "/health"
    queue_metric = "sglang:num_queue_reqs"
    metrics = (MetricsEndpoint("/metrics", "prometheus", lambda _text: EngineMetrics()),)
    release_needs_models = False

    def default_image(self, uses_gpu: bool) -> str | None:
        del uses_gpu
        return "lmsysorg/sglang:v0.5.0"

    def container(self, service: Service, port: int, gpus: Sequence[GpuShare]) -> EngineContainer:
        share = gpus[0].budget_bytes / gpus[0].total_bytes if gpus else 0
        return EngineContainer(
            command=(
                "--model-path",
                str(service.model),
                "--port",
                str(port),
                "--mem-fraction-static",
                f"{share:.2f}",
            ),
            ipc_host=True,
        )

    def readiness(self, service: Service) -> tuple[HttpCheck, ...]:
        del service
        return (HttpCheck("/health"),)

    def allocates_gpu_at_start(self, spec: ContainerSpec) -> bool:
        return bool(spec.gpus)

    def default_concurrency(self, service: Service) -> int | None:
        del service
        return None

    def release_memory(self, loaded_models: Sequence[str]) -> tuple[HttpRequest, ...] | None:
        del loaded_models
        return (HttpRequest("POST", "/release_memory_occupation", {}),)


@pytest.fixture
def sglang() -> Iterator[ThrowawayDriver]:
    driver = ThrowawayDriver()
    previous = register(driver)
    yield driver
    unregister(driver.engine, previous)


def test_a_new_engine_is_one_driver_and_one_registration(sglang: ThrowawayDriver) -> None:
    from aitherctl.monitor.scrape import endpoints_of

    svc = service(
        engine="sglang",
        image="lmsysorg/sglang:v0.5.0",
        model="org/m",
        gpus=(0,),
        vram=MemoryAmount.parse("50%"),
    )
    spec = build_container(svc, GPU)
    assert spec.command == (
        "--model-path",
        "org/m",
        "--port",
        "30000",
        "--mem-fraction-static",
        "0.50",
    )
    assert spec.container_port == 30000
    assert spec.ipc_host
    assert spec.readiness.timeout_s == 600.0
    assert allocates_gpu_at_start(spec)
    assert queue_metrics()["sglang"] == "sglang:num_queue_reqs"
    assert endpoints_of("sglang") == sglang.metrics
    assert release_requests("sglang", []) == (
        HttpRequest("POST", "/release_memory_occupation", {}),
    )


def test_vllm_keeps_its_downloads_in_a_named_volume() -> None:
    spec = build_container(service(model="org/m"), {})
    assert [(v.host, v.container) for v in spec.volumes] == [
        ("aither-hf-cache", "/root/.cache/huggingface")
    ]
    mine = Volume("/srv/hf", "/root/.cache/huggingface/")
    assert build_container(service(model="org/m", volumes=(mine,)), {}).volumes == (mine,)


def test_comfyui_reserve_counts_only_resident_neighbours() -> None:
    from aitherctl.profiles.profile import Profile
    from aitherctl.switching.specs import build_specs

    def gpu_service(name: str, engine: Engine, vram: str, **extra: object) -> Service:
        return service(
            name=name, engine=engine, model="m", gpus=(0,), vram=MemoryAmount.parse(vram), **extra
        )

    services = {
        "comfy": gpu_service("comfy", Engine.COMFYUI, "10GiB"),
        "chat": gpu_service("chat", Engine.VLLM, "8GiB"),
        "lazy": gpu_service("lazy", Engine.VLLM, "4GiB", on_demand=True),
    }
    profile = Profile("p", "", services, MemoryAmount.parse("5%"), "p.yaml")
    specs = build_specs(profile, GPU)
    assert dict(specs.resident["comfy"].env)["CLI_ARGS"] == "--reserve-vram 6"


def test_every_engine_a_profile_may_name_has_its_client_facts() -> None:
    """The router reads health paths, API roots and queue gauges from engines/facts.py without
    loading the drivers; each driver answers the same, and no engine is missing there."""
    from aitherctl.engines.facts import BUILT_IN
    from aitherctl.engines.registry import driver_for
    from aitherctl.profiles.profile import Engine

    assert set(BUILT_IN) == {engine.value for engine in Engine}
    for engine in Engine:
        driver = driver_for(engine)
        assert (driver.health_path, driver.client_path, driver.queue_metric) == BUILT_IN[engine][:3]


def test_a_spare_connection_is_opened_only_to_servers_that_close_after_a_stream() -> None:
    """llama.cpp (cpp-httplib) closes its connection after each streamed answer; vLLM, Ollama
    and ComfyUI keep theirs, so the gateway's pool has one already."""
    from aitherctl.engines.facts import spare_connection_url

    assert spare_connection_url("llamacpp", "http://127.0.0.1:8080/v1", None) == (
        "http://127.0.0.1:8080/health"
    )
    assert spare_connection_url("llamacpp", "http://h:1/v1", "http://h:1/ready") == (
        "http://h:1/ready"
    )
    for engine in ("vllm", "ollama", "comfyui", "generic", "openai"):
        assert spare_connection_url(engine, "http://127.0.0.1:8080/v1", None) is None
