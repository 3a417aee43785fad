"""`switching/export.py`: the built-in profiles and a multi-GPU one as Compose files and Kubernetes
manifests.

No Kubernetes API server can run on this machine, so the manifests are checked offline: every
document against the Kubernetes 1.37 OpenAPI schemas with `kubernetes-validate` (pinned in the
dev extra; `strict=True` also refuses fields the schema does not know), then by our own checks of
what a schema cannot see: `nvidia.com/gpu` only under limits and as a whole number, a startup
probe at least as long as the engine's load time, /dev/shm for vLLM, and the Docker path's own
arguments (`build_container`).

The Compose file is checked against the Compose specification's JSON schema as vendored by
`check-jsonschema` (pinned in the dev extra: `vendor.compose-spec`, from the compose-spec
project). `docker compose config` would be the better judge, but this machine's Docker (20.10)
has no compose plugin (`docker compose version`: "unknown command").
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aitherctl.engines.registry import build_container, driver_for
from aitherctl.errors import NotFoundError, RefusedError, UsageError
from aitherctl.profiles.loader import resolve_profile
from aitherctl.profiles.parse import parse_profile
from aitherctl.profiles.profile import Engine, Profile
from aitherctl.switching.export import (
    GPU_RESOURCE,
    ON_DEMAND_PROFILE,
    compose_healthcheck_script,
    export_specs,
    parse_gpu_memory,
    to_compose,
    to_kubernetes,
)
from aitherctl.switching.specs import restart_policy
from aitherctl.units import GIB

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"  # the newest schema kubernetes-validate 1.37.0 carries
BUILT_IN = ("cpu", "dev", "production", "creative")
TOTALS = {0: 24 * GIB, 1: 48 * GIB, 2: 80 * GIB}  # what --gpu-memory would give

MULTI_GPU = """
name: multi
services:
  big:
    engine: vllm
    model: Qwen/Qwen2.5-72B-Instruct-AWQ
    port: 8300
    gpu: [0, 1]
    vram: 80%
    env:
      HF_TOKEN: ${HF_TOKEN}
      GREETING: cost $$5
    args: [--max-model-len, "32768", --enable-sleep-mode]
  small:
    engine: llamacpp
    model: /models/tiny.gguf
    port: 8301
    gpu: 1
    vram: 4GiB
    health: {timeout: 1200}
    args: [--api-key-file, /run/$(whoami)/key, --ctx-size, "4096"]
    volumes:
      /srv/models: /models:ro
  chat:
    engine: ollama
    port: 8302
    gpu: 2
    vram: 30%
    keep_alive: 10m
  images:
    engine: comfyui
    port: 8303
    gpu: 2
    vram: 60%
    on_demand: true
  tools:
    engine: generic
    image: example/tools:1.0
    port: 8304
    gpu: none
    health: {path: /ready, timeout: 30}
    args: [serve, --price, "$3"]
"""


def _no_parents(name: str, below: str | None) -> Any:
    del below
    raise NotFoundError(name)


def load(text: str, source: str) -> Profile:
    """As `profile export` loads: `~` expanded, `${VAR}` in env kept as written."""
    raw = parse_profile(text, source, env={"HOME": "/home/user"})
    return resolve_profile(raw, _no_parents, env=None)


def built_in(name: str) -> Profile:
    return load((ROOT / "profiles" / f"{name}.yaml").read_text(), f"{name}.yaml")


def multi() -> Profile:
    return load(MULTI_GPU, "multi.yaml")


ALL = [*BUILT_IN, "multi"]


def profile_named(name: str) -> Profile:
    return multi() if name == "multi" else built_in(name)


def docker_commands(profile: Profile, totals: Mapping[int, int]) -> dict[str, tuple[str, ...]]:
    """What the Docker path runs: `build_container` with the profile's resident neighbours."""
    return {
        name: build_container(
            svc, totals, [other for other in profile.resident.values() if other.name != name]
        ).command
        for name, svc in profile.services.items()
    }


def manifests(profile: Profile) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(to_kubernetes(profile, TOTALS).text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def deployment_of(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    found = [
        doc
        for doc in docs
        if doc["kind"] == "Deployment"
        and doc["metadata"]["annotations"]["ai.aitherctl.service"] == service
    ]
    assert len(found) == 1, service
    return found[0]


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def unescape_compose(value: str) -> str:
    return value.replace("$$", "$")


# ---- Kubernetes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_manifest_validates_against_the_kubernetes_schemas(name: str) -> None:
    docs = manifests(profile_named(name))
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_validator_is_not_a_rubber_stamp() -> None:
    doc = deployment_of(manifests(built_in("production")), "orchestrator")
    container_of(doc)["gpus"] = 1  # a field Kubernetes does not have
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", ALL)
def test_gpus_only_in_limits_and_as_whole_counts(name: str) -> None:
    """The schema takes `nvidia.com/gpu: 0.5` and a GPU in requests alone; the device plugin
    does not (extended resources are integers, and the limit is what Kubernetes allocates)."""
    profile = profile_named(name)
    docs = manifests(profile)
    for svc in profile.services.values():
        resources = container_of(deployment_of(docs, svc.name)).get("resources", {})
        assert GPU_RESOURCE not in resources.get("requests", {})
        count = resources.get("limits", {}).get(GPU_RESOURCE)
        if svc.gpus:
            assert type(count) is int
            assert count == len(svc.gpus) >= 1
        else:
            assert count is None


@pytest.mark.parametrize("name", ALL)
def test_startup_probe_outlasts_the_engines_load_time(name: str) -> None:
    profile = profile_named(name)
    docs = manifests(profile)
    for svc in profile.services.values():
        driver = driver_for(svc.engine)
        load_time = svc.health.timeout_s or driver.default_timeout_s
        container = container_of(deployment_of(docs, svc.name))
        startup, ready = container["startupProbe"], container["readinessProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= load_time
        path = svc.health.path or driver.health_path
        assert startup["httpGet"]["path"] == ready["httpGet"]["path"] == path
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        expected_port = build_container(svc, TOTALS).container_port
        assert ports[startup["httpGet"]["port"]] == expected_port
        assert "livenessProbe" not in container


@pytest.mark.parametrize("name", ALL)
def test_same_arguments_as_the_docker_path(name: str) -> None:
    profile = profile_named(name)
    docs = manifests(profile)
    for service, command in docker_commands(profile, TOTALS).items():
        container = container_of(deployment_of(docs, service))
        args = [arg.replace("$$(", "$(") for arg in container.get("args", [])]
        assert tuple(args) == command
        assert container["image"] == profile.services[service].image


@pytest.mark.parametrize("name", ALL)
def test_deployments_recreate_one_pod_and_vllm_gets_dev_shm(name: str) -> None:
    profile = profile_named(name)
    docs = manifests(profile)
    services = by_kind(docs, "Service")
    claims = by_kind(docs, "PersistentVolumeClaim")
    for svc in profile.services.values():
        deployment = deployment_of(docs, svc.name)
        spec = deployment["spec"]
        assert spec["strategy"] == {"type": "Recreate"}
        assert spec["replicas"] == (0 if svc.on_demand else 1)
        assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
        pod = spec["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container_of(deployment)["volumeMounts"]}
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory"
        if svc.engine is Engine.VLLM:
            assert "sizeLimit" not in shm  # Docker runs vLLM with the host's IPC namespace
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        service = services[deployment["metadata"]["name"]]
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
        assert service["spec"]["ports"][0]["port"] == svc.port


def test_on_demand_is_scaled_to_zero_with_an_annotation() -> None:
    reasoning = deployment_of(manifests(built_in("dev")), "reasoning")
    annotations = reasoning["metadata"]["annotations"]
    assert annotations["ai.aitherctl.on-demand"] == "true"
    assert annotations["ai.aitherctl.scale-up"] == (
        "kubectl scale deployment/aither-reasoning --replicas=1"
    )


def test_services_packed_on_one_gpu_warn_and_are_annotated() -> None:
    dev = built_in("dev")
    exported = to_kubernetes(dev)
    sharing = [w for w in exported.warnings if "whole GPUs" in w]
    assert sharing == [
        "profile dev packs several services onto one GPU by budget (GPU 0: orchestrator 35%, "
        "reasoning 40%, coding 18%, vision 12%, embeddings 5%). Kubernetes allocates whole GPUs: "
        "its resident pods ask for 4 nvidia.com/gpu where Docker uses 1 GPU. To keep them "
        "together, the cluster must share GPUs: the NVIDIA device plugin's time-slicing (memory "
        "is not isolated: each engine keeps to its budget only as far as it does under Docker) "
        "or MIG slices sized to the budgets (a percentage then applies to the slice, not the GPU)"
    ]
    docs = [doc for doc in yaml.safe_load_all(exported.text) if doc]
    for name in dev.services:
        note = deployment_of(docs, name)["metadata"]["annotations"]["ai.aitherctl.gpu-sharing"]
        assert note.endswith("needs time-slicing or MIG")
    assert "# GPU 0 is shared by budget with orchestrator (35%)" in exported.text
    # One service alone on its GPU needs no sharing.
    production = to_kubernetes(built_in("production"))
    assert not [w for w in production.warnings if "whole GPUs" in w]
    assert "gpu-sharing" not in production.text


def test_multi_gpu_profile_shares_gpus_1_and_2() -> None:
    warning = next(w for w in to_kubernetes(multi(), TOTALS).warnings if "whole GPUs" in w)
    assert "GPU 1: big 80%, small 4.0 GiB; GPU 2: chat 30%, images 60%" in warning
    assert "its resident pods ask for 4 nvidia.com/gpu where Docker uses 3 GPUs" in warning


def test_env_references_come_from_a_secret_and_literals_stay_literal() -> None:
    exported = to_kubernetes(multi(), TOTALS)
    docs = [doc for doc in yaml.safe_load_all(exported.text) if doc]
    env = {e["name"]: e for e in container_of(deployment_of(docs, "big"))["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "aither-multi-env", "key": "HF_TOKEN"}},
    }
    assert env["GREETING"]["value"] == "cost $5"  # `$$` is the profile's literal `$`
    assert env["VLLM_SERVER_DEV_MODE"]["value"] == "1"  # the driver's, for sleep mode
    assert "kubectl create secret generic aither-multi-env --from-literal=HF_TOKEN=..." in (
        exported.text
    )
    assert any("NetworkPolicy" in w for w in exported.warnings)
    # Kubernetes would expand `$(whoami)` in args: it is escaped as `$$(`.
    small = container_of(deployment_of(docs, "small"))
    assert "/run/$$(whoami)/key" in small["args"]


# ---- GPU totals ---------------------------------------------------------------------------------


def test_percentage_budgets_need_no_gpu_total() -> None:
    for name in ("dev", "production"):
        profile = built_in(name)
        specs = export_specs(profile)
        for service, command in docker_commands(profile, TOTALS).items():
            assert specs[service].command == command
            assert specs[service].vram_bytes is None  # not resolved: no total was given


def test_byte_budgets_for_vllm_and_comfyui_need_the_total() -> None:
    # llama.cpp's command has no memory flag: a byte budget does not change it.
    llama = load(
        "name: llama\nservices:\n  lm:\n    engine: llamacpp\n    model: /m.gguf\n"
        "    port: 8400\n    gpu: 0\n    vram: 4GiB\n",
        "llama.yaml",
    )
    assert export_specs(llama)["lm"].command == export_specs(llama, TOTALS)["lm"].command
    with pytest.raises(RefusedError) as refused:
        to_kubernetes(multi())
    assert "the container of images depends on the GPU's memory" in str(refused.value)
    with pytest.raises(RefusedError, match="comfyui"):
        to_compose(built_in("creative"))
    in_bytes = load(
        "name: bytes\nservices:\n  lm:\n    engine: vllm\n    model: m/m\n    port: 8400\n"
        "    gpu: 0\n    vram: 12GiB\n",
        "bytes.yaml",
    )
    with pytest.raises(RefusedError, match="the container of lm depends"):
        to_kubernetes(in_bytes)
    # Given the total, the utilisation is the driver's: 12 GiB of 24 GiB.
    command = export_specs(in_bytes, {0: 24 * GIB})["lm"].command
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.5"
    with pytest.raises(UsageError, match="no total for GPU 2"):
        export_specs(multi(), {0: GIB, 1: GIB})


def test_parse_gpu_memory() -> None:
    assert parse_gpu_memory("24GiB", [0, 1]) == {0: 24 * GIB, 1: 24 * GIB}
    assert parse_gpu_memory("0=24GiB, 1=48GiB", [0, 1]) == {0: 24 * GIB, 1: 48 * GIB}
    with pytest.raises(UsageError, match="--gpu-memory 'lots'"):
        parse_gpu_memory("lots", [0])


# ---- Compose ------------------------------------------------------------------------------------


def compose_schema_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_compose_files_validate_against_the_compose_spec(tmp_path: Path) -> None:
    for name in ALL:
        done = compose_schema_check(to_compose(profile_named(name), TOTALS).text, tmp_path)
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
    broken = to_compose(built_in("cpu")).text.replace("restart:", "restart_when:")
    assert compose_schema_check(broken, tmp_path).returncode == 1


@pytest.mark.parametrize("name", ALL)
def test_compose_services_are_the_docker_paths_containers(name: str) -> None:
    profile = profile_named(name)
    document = yaml.safe_load(to_compose(profile, TOTALS).text)
    assert document["name"] == f"aither-{name}"
    commands = docker_commands(profile, TOTALS)
    for service, svc in profile.services.items():
        spec = build_container(
            svc, TOTALS, [o for o in profile.resident.values() if o.name != service]
        )
        entry = document["services"][service]
        assert entry["image"] == svc.image
        assert tuple(unescape_compose(arg) for arg in entry.get("command", [])) == commands[service]
        assert entry["ports"] == [
            {
                "target": spec.container_port,
                "published": str(svc.port),
                "host_ip": svc.bind,
                "protocol": "tcp",
            }
        ]
        assert entry["restart"] == restart_policy(svc.gpus)
        assert entry.get("ipc") == ("host" if spec.ipc_host else None)
        if svc.gpus:
            device = entry["deploy"]["resources"]["reservations"]["devices"]
            assert device == [
                {
                    "driver": "nvidia",
                    "device_ids": [str(i) for i in svc.gpus],
                    "capabilities": ["gpu"],
                }
            ]
        else:
            assert "deploy" not in entry
        assert entry.get("profiles") == ([ON_DEMAND_PROFILE] if svc.on_demand else None)
        health = entry["healthcheck"]
        assert health["start_period"] == f"{int(spec.readiness.timeout_s)}s"
        assert health["test"][:3] == ["CMD", "bash", "-c"]
        path = svc.health.path or driver_for(svc.engine).health_path
        assert f"'GET {path} HTTP/1.0'" in health["test"][3]
        mounts = {
            (m["source"], m["target"], m.get("read_only", False)) for m in entry.get("volumes", [])
        }
        assert mounts == {(v.host, v.container, v.read_only) for v in spec.volumes}
        assert "ai.aitherctl.managed" not in entry["labels"]
        assert entry["labels"]["ai.aitherctl.service"] == service


def test_compose_keeps_env_references_and_escapes_literal_dollars() -> None:
    document = yaml.safe_load(to_compose(multi(), TOTALS).text)
    big = document["services"]["big"]["environment"]
    assert big["HF_TOKEN"] == "${HF_TOKEN}"  # Compose reads it at `up`, as aitherctl does
    assert big["GREETING"] == "cost $$5"  # as written: Compose's `$$` is aitherctl's
    assert document["services"]["tools"]["command"] == ["serve", "--price", "$$3"]
    assert document["services"]["chat"]["environment"]["OLLAMA_KEEP_ALIVE"] == "10m"


def test_compose_declares_named_volumes_under_their_own_names() -> None:
    document = yaml.safe_load(to_compose(built_in("creative"), TOTALS).text)
    assert document["volumes"]["aither-comfyui-custom-nodes"] == {
        "name": "aither-comfyui-custom-nodes"
    }
    binds = [m for m in document["services"]["comfyui"]["volumes"] if m["type"] == "bind"]
    assert binds[0]["source"] == "/home/user/comfyui/models"
    assert binds[0]["bind"] == {"create_host_path": True}


def test_compose_healthcheck_script() -> None:
    assert compose_healthcheck_script(8080, "/health", 200) == (
        "exec 3<>/dev/tcp/127.0.0.1/8080 && printf '%s\\r\\n\\r\\n' 'GET /health HTTP/1.0' >&3"
        ' && read -r _ code _ <&3 && [ "$code" = 200 ]'
    )


def test_docker_restarts_cpu_services_only() -> None:
    """The one restart policy, which the switch sets and the export writes: a GPU service waits
    for `up --restore` after a reboot, a CPU one comes back by itself."""
    assert [restart_policy(gpus) for gpus in ((), (0,), (0, 1))] == ["unless-stopped", "no", "no"]
