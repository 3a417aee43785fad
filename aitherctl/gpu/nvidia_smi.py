"""GPU readings from `nvidia-smi`'s CSV queries: the command lines, and a parser to `GpuInventory`.

Used where NVML cannot be called in-process: a GPU on another Docker host, read by running
`nvidia-smi` in a short-lived container there (`aitherctl.gpu.remote`). Pure: no I/O.

Where the formats come from (NVIDIA's own documentation, nvidia-smi(1) as shipped with driver
580.65.06, https://manpages.ubuntu.com/manpages/noble/man1/nvidia-smi.1.html, and the text of
`nvidia-smi --help-query-gpu` / `--help-query-compute-apps`):
- `--query-gpu=` and `--query-compute-apps=` take a comma-separated list of properties;
  `--format=csv` is mandatory, `noheader` skips the first line with column headers, `nounits`
  drops units from numerical values. Each GPU (each compute process) is one line, the values
  in the order asked, separated by ", ".
- `index` (zero-based, can change at each boot), `uuid` ("globally unique immutable"), `name`,
  `driver_version`; `memory.total` ("Total installed GPU memory") and `memory.used` ("Total
  memory allocated by active contexts"), in MiB without units (same numbers as NVML's
  `nvmlDeviceGetMemoryInfo`); `utilization.gpu` (percent of the last sample period during which
  a kernel ran); `temperature.gpu` (°C); `power.draw` and `power.limit` (W).
- `memory.reserved` ("Total memory reserved by the NVIDIA driver and firmware", MiB): newer
  drivers leave it out of `memory.used` (an idle H100 on driver 580.159.04 prints 0 MiB used,
  480 MiB reserved, checked on such a machine). A driver that does not know the field refuses
  the whole query (`Field "memory.reserved" is not a valid field to query.`), so the snippet asks
  again without it; its `memory.used` then includes the reservation, as NVML's v1 memory info.
  The snippet marks which query answered (`RESERVED_MARK`).
- compute apps: `gpu_uuid`, `pid`, `used_memory` (alias of `used_gpu_memory`, MiB; "Not
  available on Windows when running in WDDM mode"), `process_name`. `process_name` comes last
  because a process name is the one value that may itself contain ", ".
- A value the device cannot give is printed as `[N/A]` or `[Not Supported]` (bracketed, also
  with `nounits`); every bracketed value is read as unknown (None). Grace/Jetson-class parts with
  unified memory print `[N/A]` for `memory.total`; such a GPU has no VRAM budget to check, and the
  whole reading is an error that says so.
- Exit codes (man page, RETURN VALUE): 0 success, 6 "a query to find an object was
  unsuccessful", 9 "NVIDIA driver is not loaded", 12 "NVML Shared Library couldn't be found or
  loaded", 15 "GPU has fallen off the bus", 255 other. With no driver nvidia-smi prints "NVIDIA-SMI
  has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest
  NVIDIA driver is installed and running."; with no GPU, "No devices were found".
The man page warns that nvidia-smi's output is not guaranteed to stay backwards compatible,
which is why only documented query fields and the CSV format are read here, never the table.
"""

from __future__ import annotations

from dataclasses import replace

from aitherctl.gpu.model import GpuInventory, GpuProcess, GpuSnapshot

MIB = 1024 * 1024

GPU_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "driver_version",
)
APP_FIELDS: tuple[str, ...] = ("gpu_uuid", "pid", "used_memory", "process_name")
RESERVED_FIELD = "memory.reserved"
CSV_FORMAT = "--format=csv,noheader,nounits"

QUERY_GPUS: tuple[str, ...] = ("nvidia-smi", "--query-gpu=" + ",".join(GPU_FIELDS), CSV_FORMAT)
QUERY_GPUS_RESERVED: tuple[str, ...] = (
    "nvidia-smi",
    "--query-gpu=" + ",".join((*GPU_FIELDS, RESERVED_FIELD)),
    CSV_FORMAT,
)
QUERY_COMPUTE_APPS: tuple[str, ...] = (
    "nvidia-smi",
    "--query-compute-apps=" + ",".join(APP_FIELDS),
    CSV_FORMAT,
)

# Lines no query prints (query lines always hold commas): between the two outputs, and before
# GPU lines that end with memory.reserved.
SEPARATOR = "#aitherctl:compute-apps"
RESERVED_MARK = "#aitherctl:memory.reserved"

# For `sh -c`: the GPU query with memory.reserved, or without it where the driver refuses that
# field (stop with the exit code if that fails too), the separator, the compute apps query.
# stderr joins stdout so an error message is read in order with the data.
SHELL_SNIPPET = (
    f"if gpus=$({' '.join(QUERY_GPUS_RESERVED)} 2>&1); then "
    f"echo '{RESERVED_MARK}'; printf '%s\\n' \"$gpus\"; "
    f"else {' '.join(QUERY_GPUS)} 2>&1 || exit $?; fi; "
    f"echo '{SEPARATOR}'; "
    f"{' '.join(QUERY_COMPUTE_APPS)} 2>&1"
)

_EXIT_MISSING_COMMAND = 127  # POSIX sh: command not found
_NO_PROCESSES = "No running processes found"  # tolerated: only the table view prints it
_MAX_REASON = 200


def parse_inventory(output: str, *, exit_code: int = 0) -> GpuInventory:
    """`GpuInventory` from what `SHELL_SNIPPET` printed and its exit code. Never raises: garbage,
    an nvidia-smi error message or a non-zero exit becomes `GpuInventory(error=...)`, one line."""
    text = output.replace("\r\n", "\n")
    gpu_part, found, apps_part = text.partition(SEPARATOR)
    if not found:
        return GpuInventory(error=_describe_failure(text, exit_code))
    if exit_code != 0:
        return GpuInventory(error=_describe_failure(apps_part, exit_code, what="compute apps"))
    gpu_lines = [line.strip() for line in gpu_part.splitlines() if line.strip()]
    with_reserved = bool(gpu_lines) and gpu_lines[0] == RESERVED_MARK
    if with_reserved:
        gpu_lines = gpu_lines[1:]
    if not gpu_lines:
        return GpuInventory(error="nvidia-smi sees no GPU")
    try:
        rows = [_gpu_row(line, with_reserved=with_reserved) for line in gpu_lines]
        processes = _processes(apps_part)
    except _Unreadable as exc:
        return GpuInventory(error=str(exc))
    gpus = tuple(
        replace(gpu, processes=tuple(processes.get(gpu.uuid, ()))) for gpu, _driver in rows
    )
    return GpuInventory(gpus=gpus, driver_version=rows[0][1])


class _Unreadable(Exception):
    """A line that is not what the documented format promises; the message is the user's."""


def _gpu_row(line: str, *, with_reserved: bool = False) -> tuple[GpuSnapshot, str | None]:
    """One `--query-gpu` line: the GPU (no processes yet) and the driver version it reports."""
    values = [value.strip() for value in line.split(",")]
    reserved = ""
    fields = len(GPU_FIELDS) + (1 if with_reserved else 0)
    if len(values) < fields:
        raise _Unreadable(f"nvidia-smi output not understood: {_one_line(line)!r}")
    if len(values) > fields:
        # A GPU name with a comma: index and uuid come before it, seven fields after it.
        extra = len(values) - fields
        values = [*values[:2], ", ".join(values[2 : 3 + extra]), *values[3 + extra :]]
    if with_reserved:
        reserved = values.pop()
    index, uuid, name, total, used, util, temp, power, limit, driver = values
    number = _required_int(index, "index", line)
    label = f"GPU {number} ({name})"
    gpu = GpuSnapshot(
        index=number,
        name=name,
        uuid=uuid,
        memory_total_bytes=_memory(total, "memory.total", label, line),
        memory_used_bytes=_memory(used, "memory.used", label, line),
        utilization_pct=_optional_float(util, "utilization.gpu", line),
        temperature_c=_optional_float(temp, "temperature.gpu", line),
        power_w=_optional_float(power, "power.draw", line),
        power_limit_w=_optional_float(limit, "power.limit", line),
        memory_reserved_bytes=_reserved(reserved, line),
    )
    return gpu, None if _unknown(driver) else driver


def _processes(apps_part: str) -> dict[str, list[GpuProcess]]:
    """Compute processes by GPU uuid. A process on a uuid that is no listed GPU (a MIG instance,
    or a GPU that appeared between the two queries) is dropped: `memory.used` already counts it."""
    by_uuid: dict[str, list[GpuProcess]] = {}
    for raw in apps_part.splitlines():
        line = raw.strip()
        if not line or line == _NO_PROCESSES:
            continue
        values = [value.strip() for value in line.split(",", len(APP_FIELDS) - 1)]
        if len(values) < len(APP_FIELDS):
            raise _Unreadable(f"nvidia-smi compute apps not understood: {_one_line(line)!r}")
        uuid, pid, used, name = values
        used_mib = _optional_float(used, "used_memory", line)
        by_uuid.setdefault(uuid, []).append(
            GpuProcess(
                pid=_required_int(pid, "pid", line),
                used_bytes=round(used_mib * MIB) if used_mib is not None else None,
                name=None if _unknown(name) or not name else name,
            )
        )
    return by_uuid


def _unknown(value: str) -> bool:
    """`[N/A]`, `[Not Supported]` and nvidia-smi's other bracketed non-values."""
    return value.startswith("[") and value.endswith("]")


def _required_int(value: str, field: str, line: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _Unreadable(
            f"nvidia-smi output not understood: {field} is {value!r} in {_one_line(line)!r}"
        ) from None


def _optional_float(value: str, field: str, line: str) -> float | None:
    if _unknown(value):
        return None
    try:
        return float(value)
    except ValueError:
        raise _Unreadable(
            f"nvidia-smi output not understood: {field} is {value!r} in {_one_line(line)!r}"
        ) from None


def _reserved(value: str, line: str) -> int:
    """memory.reserved in bytes; 0 when not asked or not given (then `used` includes it)."""
    if not value:
        return 0
    mib = _optional_float(value, RESERVED_FIELD, line)
    return round(mib * MIB) if mib is not None else 0


def _memory(value: str, field: str, label: str, line: str) -> int:
    mib = _optional_float(value, field, line)
    if mib is None:
        raise _Unreadable(
            f"nvidia-smi gives no {field} for {label} ({value}): a GPU without its own memory "
            "reading (unified memory, vGPU) cannot be budgeted"
        )
    return round(mib * MIB)


def _describe_failure(text: str, exit_code: int, *, what: str = "") -> str:
    """One line naming why nvidia-smi gave no reading, from its own message where it printed one."""
    message = _one_line(text)
    if "couldn't communicate with the NVIDIA driver" in message:
        return f"no NVIDIA driver on that host (nvidia-smi: {message})"
    if exit_code == _EXIT_MISSING_COMMAND or ("nvidia-smi" in message and "not found" in message):
        return (
            "nvidia-smi is not in the probe container (the NVIDIA Container Toolkit mounts it "
            "only into a container that requests GPUs with the utility capability)"
        )
    if "No devices were found" in message:
        return "nvidia-smi sees no GPU"
    query = f"nvidia-smi {what} query" if what else "nvidia-smi"
    if exit_code != 0:
        said = f": {message}" if message else " and printed nothing"
        return f"{query} failed (exit {exit_code}){said}"
    if not message:
        return "nvidia-smi printed nothing"
    return f"nvidia-smi output not understood: {message!r}"


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 1] + "…"


__all__ = [
    "APP_FIELDS",
    "CSV_FORMAT",
    "GPU_FIELDS",
    "MIB",
    "QUERY_COMPUTE_APPS",
    "QUERY_GPUS",
    "SEPARATOR",
    "SHELL_SNIPPET",
    "parse_inventory",
]
