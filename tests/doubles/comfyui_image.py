"""Contract double of the ComfyUI image `yanwk/comfyui-boot:cu130-slim-v2` (it cannot run here: no
registry, no GPU, several GB).

Follows github.com/YanWenKun/ComfyUI-Docker at commit 987122a37f7213731463f3c790532800dd15ce6f:
- `cu130-slim-v2/Dockerfile`: no ENTRYPOINT, `CMD ["bash","/runner-scripts/entrypoint.sh"]`,
  `ENV CLI_ARGS=""`, `WORKDIR /root`, `EXPOSE 8188`, and no VOLUME (commit ff7a0ce removed it);
- `cu130-slim-v2/runner-scripts/entrypoint.sh`: copies the bundled ComfyUI to `/root/ComfyUI`
  only when `/root/ComfyUI/main.py` is missing, then runs
  `python3.13 ./ComfyUI/main.py --listen --port 8188 --enable-manager --enable-manager-legacy-ui
  ${CLI_ARGS}` with `${CLI_ARGS}` unquoted (bash word splitting and pathname expansion, no quote
  removal);
- `cu130-slim-v2/README.adoc`: the user-data mounts (custom nodes, models, user profile, input,
  output, `.local`, `.cache`, `user-scripts`).
ComfyUI's own argument parser follows comfy/cli_args.py (github.com/comfyanonymous/ComfyUI):
`--listen` takes an optional address (bare: `0.0.0.0,::`), `--port` an int, `--reserve-vram` a
float in GB that comfy/model_management.py multiplies by 1024**3; unknown arguments are an error.
Docker's rule (docs.docker.com, "CMD and ENTRYPOINT"): a command given to `docker run` / the API's
`Cmd` replaces the image's CMD; without an ENTRYPOINT the command itself is executed.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SOURCE_COMMIT = "987122a37f7213731463f3c790532800dd15ce6f"
CMD = ("bash", "/runner-scripts/entrypoint.sh")
ENTRYPOINT: tuple[str, ...] = ()
IMAGE_ENV = {"CLI_ARGS": ""}
DECLARED_VOLUMES: tuple[str, ...] = ()
COMFYUI_DIR = "/root/ComfyUI"
SCRIPT_ARGS = (
    "python3.13",
    "./ComfyUI/main.py",
    "--listen",
    "--port",
    "8188",
    "--enable-manager",
    "--enable-manager-legacy-ui",
)
# README.adoc's `docker run -v` targets: where the user's data lives in this image.
USER_DATA_PATHS = (
    "/root/.cache",
    "/root/.config",
    "/root/.local",
    "/root/ComfyUI/custom_nodes",
    "/root/ComfyUI/models",
    "/root/ComfyUI/input",
    "/root/ComfyUI/output",
    "/root/ComfyUI/user",
    "/root/user-scripts",
)
# What a user would lose on a recreate (the rest is a cache or an example the script recreates).
MUST_PERSIST = (
    "/root/.local",
    "/root/ComfyUI/custom_nodes",
    "/root/ComfyUI/models",
    "/root/ComfyUI/input",
    "/root/ComfyUI/output",
    "/root/ComfyUI/user",
)


class ImageContractError(AssertionError):
    """The container as configured would not start ComfyUI the way the image expects."""


@dataclass(frozen=True, slots=True)
class Started:
    argv: tuple[str, ...]  # what the container executes in the end
    options: argparse.Namespace  # ComfyUI's parsed arguments
    anonymous_volumes: tuple[str, ...]  # created by Docker for VOLUMEs nothing is mounted on


def comfyui_parser() -> argparse.ArgumentParser:
    """The part of comfy/cli_args.py aitherctl relies on; `exit_on_error` off to report errors."""
    parser = argparse.ArgumentParser(prog="main.py", exit_on_error=False, add_help=False)
    parser.add_argument("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--reserve-vram", type=float, default=None)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--enable-manager", action="store_true")
    parser.add_argument("--enable-manager-legacy-ui", action="store_true")
    parser.add_argument("--preview-method", default="none")
    parser.add_argument("--output-directory", default=None)
    return parser


def _unquoted_expansion(value: str) -> list[str]:
    """bash's `${VAR}` without quotes: split on blanks, no quote removal; a glob character would
    be expanded against the file system, which the double refuses to guess."""
    words = value.split()
    for word in words:
        if any(ch in word for ch in "*?["):
            raise ImageContractError(f"{word!r} would be expanded by bash as a file pattern")
    return words


def start(
    command: Sequence[str] | None, env: Sequence[tuple[str, str]], mounts: Sequence[str]
) -> Started:
    """What the image runs for a container created with `command` (the API's Cmd; None keeps the
    image's CMD), environment `env` (later entries win, as in Docker) and volumes at `mounts`."""
    if ENTRYPOINT:
        raise AssertionError("this image has no ENTRYPOINT")  # pragma: no cover - fixed fact
    run = tuple(command) if command else CMD
    if run != CMD:
        raise ImageContractError(
            f"the container would execute {run[0]!r} instead of the entrypoint script: "
            "ComfyUI does not start"
        )
    environment: dict[str, str] = dict(IMAGE_ENV)
    environment.update(dict(env))
    for path in mounts:
        if path.rstrip("/") in ("/root", COMFYUI_DIR):
            raise ImageContractError(
                f"a volume on {path} keeps the first ComfyUI the script copied there: "
                "a new image would not bring its own ComfyUI"
            )
    argv = (*SCRIPT_ARGS, *_unquoted_expansion(environment.get("CLI_ARGS", "")))
    try:
        options = comfyui_parser().parse_args(list(argv[2:]))
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ImageContractError(f"ComfyUI rejects its arguments {argv[2:]}: {exc}") from None
    mounted = {path.rstrip("/") for path in mounts}
    anonymous = tuple(path for path in DECLARED_VOLUMES if path not in mounted)
    return Started(argv, options, anonymous)


def persisted(mounts: Mapping[str, str]) -> set[str]:
    """The user-data paths a named volume (not a host path) keeps across a recreate."""
    return {path for path, source in mounts.items() if source and not source.startswith("/")}
