"""A profile as a Compose file or as Kubernetes manifests (`aitherctl profile export`).

The containers are the ones `profile switch` runs: every service goes through `build_specs`
(`switching/specs.py`, which calls each engine driver through `build_container`), so the image,
arguments, environment and volumes are the Docker path's own. What the Docker adapter adds when it
creates a container (`docker/engine.py` `create`: an init process, host IPC for vLLM or a
1 GiB /dev/shm otherwise, NVIDIA device requests) and the restart policy a switch sets
(`switching/specs.py` `restart_policy`, the one both use) are written the same way here.

GPU memory: export reads no GPU. `build_specs` needs each GPU's total only to turn a budget into
bytes; vLLM's `--gpu-memory-utilization` for a percentage budget is the share itself (35% →
0.35, `engines/vllm.py` `utilization`) and needs no total. Whether a service's container depends
on the totals is found by building it against two different totals: when the command,
environment or volumes differ (a byte budget for vLLM, ComfyUI's `--reserve-vram`), the export is
refused unless the totals are given (`--gpu-memory`).

Kubernetes (`to_kubernetes`): per service a Deployment (`strategy: Recreate`: a second pod of a
GPU server would not fit beside the first) and a ClusterIP Service on the profile's port.
- GPUs: `nvidia.com/gpu` under `resources.limits` only (the device plugin's extended resource;
  Kubernetes takes the request from the limit), the number of the service's GPUs. The device
  plugin hands out whole GPUs and chooses which: several services that share one GPU by budget
  each get their own unless the cluster shares GPUs (time-slicing or MIG); that is warned about
  and annotated.
- Probes: a startup probe on the engine's health path that allows the driver's
  `default_timeout_s` (or the profile's `health.timeout`), then a readiness probe on the same
  path. No liveness probe: a busy server that answers its health check late would be restarted,
  and a restart reloads the model.
- /dev/shm: an emptyDir with `medium: Memory`, unbounded for services Docker runs with host IPC
  (vLLM: tensor-parallel workers exchange through it), 1 GiB otherwise (Docker's `shm_size`).
- Volumes: every volume becomes a PersistentVolumeClaim (ReadWriteOnce), named after the Docker
  volume or, for a host folder, after its path. Not hostPath: it ties a pod to one node's disk
  and the Pod Security "baseline" standard forbids it. A claim's size is a placeholder
  (`PVC_SIZE`) to edit, not a measurement; a host folder's files must be copied into its claim.
- `${VAR}` in a profile's `env:` becomes a value from the Secret `aither-PROFILE-env` (key VAR).

Compose (`to_compose`): one service per profile service, ports bound to the service's `bind`,
named Docker volumes under their own names (so the Compose stack and aitherctl share the caches),
on-demand services under the Compose profile `on-demand`. `${VAR}` references in `env:` stay as
written: Compose reads them from the shell or an `.env` file, with the same syntax as aitherctl;
every other `$` is doubled so Compose keeps it. The labels are aitherctl's, less the ones that
would make aitherctl take the Compose containers for its own (managed, namespace, spec hash).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from aitherctl.engines.container import (
    LABEL_HASH,
    LABEL_MANAGED,
    LABEL_NAMESPACE,
    LABEL_TXN,
    ContainerSpec,
    container_name,
)
from aitherctl.engines.registry import driver_for
from aitherctl.errors import RefusedError, UsageError
from aitherctl.profiles.profile import Profile, Service, Volume
from aitherctl.profiles.redact import is_reference, is_secret_name
from aitherctl.switching.specs import ProfileSpecs, build_specs, restart_policy
from aitherctl.units import GIB, parse_size

FORMATS = ("compose", "k8s")
ON_DEMAND_PROFILE = "on-demand"  # the Compose profile that holds on-demand services
PVC_SIZE = "100Gi"  # a placeholder for each claim's size, not a measurement: edit it
PROBE_PERIOD_S = 10
PROBE_TIMEOUT_S = 5
READY_FAILURES = 3
SHM_SIZE = "1Gi"  # Docker's `shm_size="1g"` for containers without host IPC (docker_engine.py)
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource
# Two GPU totals that only need to differ: a container built against both that comes out the same
# does not depend on the GPU's memory.
_PROBE_TOTALS = (80 * GIB, 141 * GIB)
_NOT_EXPORTED = (LABEL_MANAGED, LABEL_NAMESPACE, LABEL_HASH, LABEL_TXN)
_WHOLE_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-[^}]*)?\}$")
_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True, slots=True)
class Export:
    """The exported text and what the user should know about it (printed on stderr)."""

    text: str
    warnings: tuple[str, ...]


def export_profile(
    profile: Profile, fmt: str, gpu_memory: Mapping[int, int] | None = None
) -> Export:
    """`profile` as `fmt` (`compose` or `k8s`); `gpu_memory` maps GPU index → total bytes."""
    if fmt == "compose":
        return to_compose(profile, gpu_memory)
    if fmt == "k8s":
        return to_kubernetes(profile, gpu_memory)
    raise UsageError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")


def parse_gpu_memory(text: str, indices: Sequence[int]) -> dict[int, int]:
    """`--gpu-memory`: one size for every GPU in `indices` (`24GiB`), or one per GPU
    (`0=24GiB,1=48GiB`)."""
    try:
        if "=" not in text:
            total = parse_size(text.strip())
            return dict.fromkeys(indices, total)
        totals: dict[int, int] = {}
        for part in text.split(","):
            index, _, size = part.partition("=")
            totals[int(index.strip())] = parse_size(size.strip())
    except ValueError as exc:
        raise UsageError(
            f"--gpu-memory {text!r}: {exc}; one per GPU is written 0=24GiB,1=48GiB"
        ) from None
    return totals


def require_totals(gpu_memory: Mapping[int, int], indices: Sequence[int]) -> None:
    """UsageError unless `--gpu-memory` gave a total for every GPU in `indices`."""
    missing = [str(index) for index in indices if index not in gpu_memory]
    if missing:
        raise UsageError(f"--gpu-memory gives no total for GPU {','.join(missing)}")


def export_specs(
    profile: Profile, gpu_memory: Mapping[int, int] | None = None
) -> dict[str, ContainerSpec]:
    """Every service's container, built by `build_specs` as a switch builds it.

    Without `gpu_memory`, each container is built against two different GPU totals and must come
    out the same (its budget-in-bytes labels are then left out): otherwise it is refused.
    """
    indices = sorted({index for svc in profile.services.values() for index in svc.gpus})
    if gpu_memory is not None:
        require_totals(gpu_memory, indices)
        built = build_specs(profile, gpu_memory)
        return {name: _spec(built, name) for name in profile.services}
    first, second = (build_specs(profile, dict.fromkeys(indices, t)) for t in _PROBE_TOTALS)
    specs: dict[str, ContainerSpec] = {}
    depends: list[str] = []
    for name in profile.services:
        one, other = _spec(first, name), _spec(second, name)
        if (one.command, one.env, one.volumes) != (other.command, other.env, other.volumes):
            depends.append(name)
        specs[name] = replace(one, vram_bytes=None, gpu_vram=())
    if depends:
        raise RefusedError(
            f"profile {profile.name!r}: the container of {', '.join(depends)} depends on the "
            "GPU's memory (a budget in bytes, or ComfyUI's --reserve-vram), which export cannot "
            "read: pass --gpu-memory SIZE (every GPU) or --gpu-memory 0=SIZE,1=SIZE"
        )
    return specs


def _spec(specs: ProfileSpecs, name: str) -> ContainerSpec:
    spec = specs.get(name)
    assert spec is not None
    return spec


def health_check(spec: ContainerSpec, service: Service) -> tuple[str, int] | None:
    """(path, status) of the GET that says the server can take requests: the profile's
    `health.path`, else the driver's `health_path`; None when neither names one."""
    path = service.health.path or driver_for(spec.engine).health_path
    if path is None:
        return None
    status = next((check.status for check in spec.readiness.checks if check.path == path), 200)
    return path, status


def shared_gpus(profile: Profile) -> dict[int, list[Service]]:
    """GPU index → the services that share it by budget (two or more)."""
    by_gpu: dict[int, list[Service]] = {}
    for service in profile.services.values():
        for index in service.gpus:
            by_gpu.setdefault(index, []).append(service)
    return {index: found for index, found in sorted(by_gpu.items()) if len(found) > 1}


class _Dumper(yaml.SafeDumper):
    """Writes a mapping used twice (a selector and the pod's labels) out twice, not as an
    anchor and an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        del data
        return True


def _dump(document: Any) -> str:
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096
    )


def _labels(spec: ContainerSpec, profile: Profile) -> dict[str, str]:
    labels = spec.labels("default", profile.name)
    return {key: value for key, value in labels.items() if key not in _NOT_EXPORTED}


def _secret_warnings(profile: Profile) -> list[str]:
    return [
        f"service {svc.name}: env {name} looks secret and is written as given; write "
        f"${{{name}}} in the profile to keep its value out of the export"
        for svc in profile.services.values()
        for name, value in svc.env
        if is_secret_name(name) and value and not is_reference(value)
    ]


# ---- Compose ------------------------------------------------------------------------------------


def _compose_text(value: str) -> str:
    """A literal for Compose, which interpolates `$`: `$$` is a `$`."""
    return value.replace("$", "$$")


def compose_healthcheck_script(port: int, path: str, status: int) -> str:
    """A bash command that GETs `path` on `port` and succeeds on `status`. bash's /dev/tcp needs
    no curl or wget, which some engine images lack (ollama/ollama has neither)."""
    request = shlex.quote(f"GET {path} HTTP/1.0")
    return (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '%s\\r\\n\\r\\n' {request} >&3"
        f' && read -r _ code _ <&3 && [ "$code" = {status} ]'
    )


def _compose_service(spec: ContainerSpec, service: Service, profile: Profile) -> dict[str, Any]:
    written = set(service.env)
    entry: dict[str, Any] = {"image": _compose_text(spec.image)}
    if spec.command:
        entry["command"] = [_compose_text(arg) for arg in spec.command]
    env = {
        name: value if (name, value) in written else _compose_text(value)
        for name, value in spec.env
    }
    if env:
        entry["environment"] = env
    entry["ports"] = [
        {
            "target": spec.container_port,
            "published": str(spec.host_port),
            "host_ip": spec.bind,
            "protocol": "tcp",
        }
    ]
    volumes = [_compose_volume(volume) for volume in spec.volumes]
    if volumes:
        entry["volumes"] = volumes
    if spec.ipc_host:
        entry["ipc"] = "host"
    else:
        entry["shm_size"] = "1g"
    entry["init"] = True
    if spec.gpus:
        device = {
            "driver": "nvidia",
            "device_ids": [str(index) for index in spec.gpus],
            "capabilities": ["gpu"],
        }
        entry["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    check = health_check(spec, service)
    if check is not None:
        script = compose_healthcheck_script(spec.container_port, *check)
        entry["healthcheck"] = {
            "test": ["CMD", "bash", "-c", _compose_text(script)],
            "interval": f"{PROBE_PERIOD_S}s",
            "timeout": f"{PROBE_TIMEOUT_S}s",
            "retries": READY_FAILURES,
            "start_period": f"{math.ceil(spec.readiness.timeout_s)}s",
        }
    entry["restart"] = restart_policy(spec.gpus)
    entry["labels"] = {key: _compose_text(value) for key, value in _labels(spec, profile).items()}
    if spec.on_demand:
        entry["profiles"] = [ON_DEMAND_PROFILE]
    return entry


def _is_named(volume: Volume) -> bool:
    return not volume.host.startswith("/")


def _compose_volume(volume: Volume) -> dict[str, Any]:
    if _is_named(volume):
        mount: dict[str, Any] = {"type": "volume", "source": volume.host}
    else:
        # Docker's `binds` (what aitherctl passes) create a missing host folder; Compose's long
        # syntax does so only when asked.
        source = _compose_text(volume.host)
        mount = {"type": "bind", "source": source, "bind": {"create_host_path": True}}
    mount["target"] = volume.container
    if volume.read_only:
        mount["read_only"] = True
    return mount


def to_compose(profile: Profile, gpu_memory: Mapping[int, int] | None = None) -> Export:
    """A Compose file: `docker compose up -d` starts the resident services."""
    specs = export_specs(profile, gpu_memory)
    services = {
        name: _compose_service(specs[name], service, profile)
        for name, service in profile.services.items()
    }
    named = sorted(
        {volume.host for spec in specs.values() for volume in spec.volumes if _is_named(volume)}
    )
    document: dict[str, Any] = {"name": _compose_project(profile.name), "services": services}
    if named:
        # `name:` keeps the Docker volume's own name (Compose would prefix the project's).
        document["volumes"] = {volume: {"name": volume} for volume in named}
    on_demand = [name for name, svc in profile.services.items() if svc.on_demand]
    header = [
        f"# aitherctl profile {profile.name!r} as a Compose file "
        f"(aitherctl profile export {profile.name} --format compose).",
        "# `docker compose up -d` starts the resident services.",
    ]
    if on_demand:
        header.append(
            f"# On demand (Compose profile {ON_DEMAND_PROFILE!r}): start one by naming it, "
            f"`docker compose up -d {on_demand[0]}`."
        )
    if any(svc.env for svc in profile.services.values()):
        header.append(
            "# ${VAR} in `environment` is read by Compose from the shell or an .env file."
        )
    text = "\n".join(header) + "\n" + _dump(document)
    return Export(text, tuple(_secret_warnings(profile)))


def _compose_project(name: str) -> str:
    return "aither-" + re.sub(r"[^a-z0-9_-]+", "-", name.lower())


# ---- Kubernetes ---------------------------------------------------------------------------------


def _dns_name(text: str) -> str:
    """A DNS-1123 label (Kubernetes object names): lower case, `-` for anything else, ≤ 63."""
    return _DNS_UNSAFE.sub("-", text.lower()).strip("-")[:63].rstrip("-")


def _k8s_text(value: str) -> str:
    """A literal for Kubernetes, which expands `$(VAR)` in args and env: `$$(` keeps `$(`."""
    return value.replace("$(", "$$(")


def _claim_name(volume: Volume) -> str:
    if _is_named(volume):
        return _dns_name(volume.host)
    return _dns_name("aither-" + volume.host.strip("/"))[-63:].lstrip("-")


def secret_name(profile: Profile) -> str:
    """The Secret that holds the values of `${VAR}` references in the profile's `env:`."""
    return _dns_name(f"aither-{profile.name}-env")


def _k8s_env(
    spec: ContainerSpec, service: Service, profile: Profile, warnings: list[str]
) -> list[dict[str, Any]]:
    written = set(service.env)
    entries: list[dict[str, Any]] = []
    for name, value in dict(spec.env).items():
        if (name, value) not in written:
            entries.append({"name": name, "value": _k8s_text(value)})
            continue
        whole = _WHOLE_REFERENCE.match(value.strip())
        if whole:
            if whole.group(0) != f"${{{whole.group(1)}}}":
                warnings.append(
                    f"service {service.name}: env {name}={value}: its default is not exported; "
                    f"the value comes from Secret {secret_name(profile)} key {whole.group(1)}"
                )
            ref = {"name": secret_name(profile), "key": whole.group(1)}
            entries.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
            continue
        if "${" in value.replace("$$", ""):
            warnings.append(
                f"service {service.name}: env {name}={value} mixes text and ${{VAR}}: "
                "Kubernetes does not expand it; it is written as given"
            )
        entries.append({"name": name, "value": _k8s_text(value.replace("$$", "$"))})
    return entries


def startup_failures(timeout_s: float) -> int:
    """How many failed startup probes (one every `PROBE_PERIOD_S`) to allow: enough for
    `timeout_s`, the engine's load time as readiness allows it."""
    return max(1, math.ceil(timeout_s / PROBE_PERIOD_S))


def _k8s_labels(profile: Profile, spec: ContainerSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": _dns_name(container_name("default", spec.service)),
        "app.kubernetes.io/instance": _dns_name(profile.name),
        "app.kubernetes.io/part-of": "aitherctl",
    }


def _deployment(
    spec: ContainerSpec,
    service: Service,
    profile: Profile,
    sharing: Mapping[int, list[Service]],
    warnings: list[str],
) -> dict[str, Any]:
    name = _dns_name(container_name("default", spec.service))
    labels = _k8s_labels(profile, spec)
    annotations = _labels(spec, profile)
    container: dict[str, Any] = {"name": _dns_name(spec.service), "image": spec.image}
    if spec.command:
        # Docker's `command` follows the image's entrypoint: Kubernetes calls that `args`.
        container["args"] = [_k8s_text(arg) for arg in spec.command]
    env = _k8s_env(spec, service, profile, warnings)
    if env:
        container["env"] = env
    container["ports"] = [{"name": "http", "containerPort": spec.container_port, "protocol": "TCP"}]
    if spec.gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: len(spec.gpus)}}
    check = health_check(spec, service)
    if check is not None:
        get = {"path": check[0], "port": "http"}
        container["startupProbe"] = {
            "httpGet": get,
            "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": PROBE_TIMEOUT_S,
            "failureThreshold": startup_failures(spec.readiness.timeout_s),
        }
        container["readinessProbe"] = {
            "httpGet": dict(get),
            "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": PROBE_TIMEOUT_S,
            "failureThreshold": READY_FAILURES,
        }
    else:
        warnings.append(f"service {service.name}: its engine names no health path: no probes")
    shm: dict[str, Any] = {"medium": "Memory"}
    if not spec.ipc_host:
        shm["sizeLimit"] = SHM_SIZE
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": shm}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    for volume in spec.volumes:
        claim = _claim_name(volume)
        if all(item["name"] != claim for item in volumes):
            volumes.append({"name": claim, "persistentVolumeClaim": {"claimName": claim}})
        mount: dict[str, Any] = {"name": claim, "mountPath": volume.container}
        if volume.read_only:
            mount["readOnly"] = True
        mounts.append(mount)
    container["volumeMounts"] = mounts
    pod: dict[str, Any] = {"containers": [container], "volumes": volumes}
    if spec.gpus:
        # GPU nodes are often tainted so that only GPU pods land there.
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    shared = [index for index in spec.gpus if index in sharing]
    if shared:
        annotations["ai.aitherctl.gpu-sharing"] = _sharing_note(shared, sharing)
    if spec.on_demand:
        annotations["ai.aitherctl.scale-up"] = f"kubectl scale deployment/{name} --replicas=1"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": 0 if spec.on_demand else 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _budget(service: Service) -> str:
    return str(service.vram) if service.vram is not None else "no budget"


def _sharing_note(indices: Sequence[int], sharing: Mapping[int, list[Service]]) -> str:
    parts = [
        f"GPU {index} is shared by budget with "
        + ", ".join(f"{svc.name} ({_budget(svc)})" for svc in sharing[index])
        for index in indices
    ]
    return "; ".join(parts) + ": one GPU for all of them needs time-slicing or MIG"


def _service(spec: ContainerSpec, profile: Profile) -> dict[str, Any]:
    labels = _k8s_labels(profile, spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": _dns_name(container_name("default", spec.service)), "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [
                {"name": "http", "port": spec.host_port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _claim(name: str, volume: Volume) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "aitherctl"},
            "annotations": {"ai.aitherctl.source": volume.host},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": PVC_SIZE}},
        },
    }


def _gpu_warning(profile: Profile, sharing: Mapping[int, list[Service]]) -> str:
    resident = sum(len(svc.gpus) for svc in profile.resident.values())
    distinct = len({index for svc in profile.resident.values() for index in svc.gpus})
    where = "; ".join(
        f"GPU {index}: " + ", ".join(f"{svc.name} {_budget(svc)}" for svc in found)
        for index, found in sharing.items()
    )
    return (
        f"profile {profile.name} packs several services onto one GPU by budget ({where}). "
        f"Kubernetes allocates whole GPUs: its resident pods ask for {resident} "
        f"{GPU_RESOURCE} where Docker uses {_count(distinct, 'GPU')}. To keep them together, "
        "the cluster must share GPUs: the NVIDIA device plugin's time-slicing (memory is not "
        "isolated: each engine keeps to its budget only as far as it does under Docker) or MIG "
        "slices sized to the budgets (a percentage then applies to the slice, not the GPU)"
    )


def to_kubernetes(profile: Profile, gpu_memory: Mapping[int, int] | None = None) -> Export:
    """Kubernetes manifests, one YAML stream: claims, then a Deployment and a Service per
    service (see the module docstring)."""
    specs = export_specs(profile, gpu_memory)
    warnings: list[str] = []
    sharing = shared_gpus(profile)
    if sharing:
        warnings.append(_gpu_warning(profile, sharing))
    names = [_dns_name(container_name("default", name)) for name in profile.services]
    if len(set(names)) != len(names):
        raise RefusedError(
            f"profile {profile.name!r}: service names that differ only in `_` or `.` give the "
            "same Kubernetes name"
        )
    documents: list[tuple[list[str], dict[str, Any]]] = []
    claims: dict[str, Volume] = {}
    for spec in specs.values():
        for volume in spec.volumes:
            claims.setdefault(_claim_name(volume), volume)
    for claim, volume in claims.items():
        note = [f"# {PVC_SIZE} is a placeholder: size the claim for what it will hold."]
        if not _is_named(volume):
            note.append(f"# Copy the files of {volume.host} (on the exporting machine) into it.")
        documents.append((note, _claim(claim, volume)))
    for name, service in profile.services.items():
        spec = specs[name]
        notes = []
        shared = [index for index in spec.gpus if index in sharing]
        if shared:
            notes.append("# " + _sharing_note(shared, sharing) + ".")
        if spec.on_demand:
            notes.append("# On demand: 0 replicas until scaled up.")
        if any(dict(spec.env).get(key) == "1" for key in ("VLLM_SERVER_DEV_MODE",)):
            warnings.append(
                f"service {name}: vLLM's development endpoints (sleep mode) are on; under "
                "Docker only this machine reaches them, here every pod that reaches the "
                "Service does (add a NetworkPolicy)"
            )
        documents.append((notes, _deployment(spec, service, profile, sharing, warnings)))
        documents.append(([], _service(spec, profile)))
    if claims:
        warnings.append(
            f"{_count(len(claims), 'PersistentVolumeClaim')} with a placeholder size of "
            f"{PVC_SIZE}: size them, and copy the host folders' files (models) into them"
        )
    referenced = sorted(
        {
            entry["valueFrom"]["secretKeyRef"]["key"]
            for doc in (d for _, d in documents if d["kind"] == "Deployment")
            for entry in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])
            if "valueFrom" in entry
        }
    )
    header = [
        f"# aitherctl profile {profile.name!r} as Kubernetes manifests "
        f"(aitherctl profile export {profile.name} --format k8s); `kubectl apply -f` this file.",
        "# Services are ClusterIP: reachable inside the cluster only (a profile's `bind` does "
        "not apply).",
    ]
    if referenced:
        header.append(
            f"# Secret {secret_name(profile)} must hold {', '.join(referenced)}: "
            f"kubectl create secret generic {secret_name(profile)} "
            + " ".join(f"--from-literal={key}=..." for key in referenced)
        )
        warnings.append(
            f"create Secret {secret_name(profile)} with {', '.join(referenced)} before applying"
        )
    parts = []
    for index, (notes, document) in enumerate(documents):
        lines = (header if index == 0 else []) + notes
        parts.append("".join(line + "\n" for line in lines) + _dump(document))
    return Export("---\n".join(parts), tuple(_secret_warnings(profile) + warnings))
