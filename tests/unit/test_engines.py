"""Each engine's translation of a service into a container, checked against the engines' docs."""

from __future__ import annotations

from aitherctl.core.engines import build_container
from aitherctl.core.profile import Engine, Health, Service
from aitherctl.core.units import GIB, MemoryAmount

GPU = {0: 24 * GIB, 1: 24 * GIB}


def service(**fields: object) -> Service:
    base: dict[str, object] = {"name": "svc", "engine": Engine.VLLM, "image": "img", "port": 9000}
    return Service(**{**base, **fields})  # type: ignore[arg-type]


def test_vllm_utilization_is_budget_over_total_rounded_down() -> None:
    spec = build_container(
        service(model="org/model", gpus=(0,), vram=MemoryAmount.parse("10GiB")), GPU
    )
    args = list(spec.command)
    assert args[:6] == ["--model", "org/model", "--served-model-name", "org/model", "--port", "8000"]
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.416"  # 10/24 = 0.41666…
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
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.500"
    assert spec.gpus == (0, 1)


def test_vllm_on_cpu_has_no_gpu_flags() -> None:
    spec = build_container(service(model="/models/smol", served_name="smol"), {})
    assert "--gpu-memory-utilization" not in spec.command
    assert spec.gpus == ()


def test_llamacpp_arguments() -> None:
    cpu = build_container(service(engine=Engine.LLAMACPP, model="/m.gguf", port=8090), {})
    assert list(cpu.command) == [
        "-m", "/m.gguf", "--host", "0.0.0.0", "--port", "8080", "--metrics", "--alias", "svc"
    ]
    assert cpu.container_port == 8080 and cpu.host_port == 8090
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


def test_comfyui_reserves_what_is_not_its_budget() -> None:
    spec = build_container(
        service(engine=Engine.COMFYUI, gpus=(0,), vram=MemoryAmount.parse("15GiB")), GPU
    )
    args = list(spec.command)
    assert args[:4] == ["--listen", "0.0.0.0", "--port", "8188"]
    assert args[args.index("--reserve-vram") + 1] == "9"
    assert dict(spec.env)["CLI_ARGS"].endswith("--reserve-vram 9")
    assert [c.path for c in spec.readiness.checks] == ["/system_stats"]


def test_spec_hash_changes_with_the_container_not_with_flags() -> None:
    base = service(model="m")
    same = build_container(base, {})
    assert same.spec_hash() == build_container(service(model="m", pinned=True), {}).spec_hash()
    assert same.spec_hash() == build_container(
        service(model="m", health=Health(timeout_s=5)), {}
    ).spec_hash()
    assert same.spec_hash() != build_container(service(model="m2"), {}).spec_hash()
    assert same.spec_hash() != build_container(service(model="m", args=("--x",)), {}).spec_hash()
    assert same.spec_hash() != build_container(service(model="m", port=9001), {}).spec_hash()
