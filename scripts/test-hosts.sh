#!/usr/bin/env bash
# Two "remote" Docker hosts on this one machine, reached over SSH, for the multi-host tests:
#   - node-a and node-b: private dockerd engines, each with its own engine ID (a private mount
#     namespace with its own /etc/docker, where dockerd keeps the key its ID comes from) and on
#     its own bridge (aither-bra 172.41.0.1/24,
#     aither-brb 172.42.0.1/24) so their containers' addresses never collide, with
#     `--iptables=false` (published ports still work on 127.0.0.1), sockets
#     /tmp/aither-node-{a,b}/docker.sock;
#   - one sshd on 127.0.0.1:2222 whose per-node keys are forced to run
#     `docker system dial-stdio` against that node's socket, which is exactly what Docker's SSH
#     transport (the CLI's `ssh://` and the SDK's `use_ssh_client=True`) runs on the far side;
#   - `Host node-a` / `Host node-b` in root's ~/.ssh/config (a marked block, replaced on rerun);
#   - the test images copied from the main engine (the one scripts/test-env.sh prepared:
#     $DOCKER_HOST, else Docker's default, else unix:///tmp/aither-dockerd/docker.sock) into each
#     node, when a node lacks them (compared by image ID).
# See ../shared/ENVIRONMENT.md, "Two more 'remote' Docker hosts on one machine". Run as root.
# Idempotent: what already runs is kept. Progress goes to stderr; stdout carries `export` lines:
#   eval "$(bash scripts/test-hosts.sh)"
# Subcommands (used by tests/hosts_helpers.py to take a host down and back up):
#   up (default)             everything above, then print the exports
#   env                      print the exports only
#   start-node a|b           start that node's dockerd (and its bridge) unless it answers
#   stop-node a|b [SIGNAL]   stop that node's dockerd (SIGNAL: KILL (default) or TERM)
#   start-sshd | stop-sshd   start / stop the SSH server (connections already open stay open)
#   status                   one line per component
set -euo pipefail

CACHE=${AITHER_TEST_CACHE:-/var/cache/aitherctl-test}
SSH_DIR=$CACHE/ssh              # keys, authorized_keys, sshd_config, known_hosts (persist)
SSHD_RUN=/tmp/aither-sshd       # pid file and log of the running sshd
SSH_PORT=2222
NODES=(a b)
read -r -a IMAGES <<<"${AITHER_TEST_HOST_IMAGES:-aither-test/base:bookworm aither-test/llamacpp:latest}"
MARK_BEGIN="# >>> aitherctl test hosts (scripts/test-hosts.sh) >>>"
MARK_END="# <<< aitherctl test hosts <<<"

log() { printf '[test-hosts] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

node_dir() { echo "/tmp/aither-node-$1"; }
node_sock() { echo "unix:///tmp/aither-node-$1/docker.sock"; }
node_bridge() { echo "aither-br$1"; }
node_cidr() { case $1 in a) echo 172.41.0.1/24 ;; b) echo 172.42.0.1/24 ;; esac; }
check_node() { case ${1:-} in a|b) ;; *) die "unknown node '${1:-}' (a or b)" ;; esac; }

apt_install() {
  local missing=() pkg
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "apt-get install ${missing[*]}"
  # No service may start from the package's postinst (no system sshd on port 22): a missing
  # policy-rc.d is put in place for the install only.
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  [ -z "$policy" ] || rm -f "$policy"
}

# A live process with this pid file and this command name (a zombie or a reused pid is not).
alive() {
  local pidfile=$1 comm=$2 pid state
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -r "/proc/$pid/stat" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ]
}

wait_gone() {  # pidfile comm seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do alive "$1" "$2" || return 0; sleep 0.1; done
  return 1
}

ensure_tools() {
  command -v ip >/dev/null 2>&1 || apt_install iproute2
  if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io
  fi
  [ -x /usr/sbin/sshd ] || apt_install openssh-server
  command -v ssh >/dev/null 2>&1 || apt_install openssh-client
}

# ---- node engines ----------------------------------------------------------------------------
engine_answers() { docker -H "$(node_sock "$1")" info >/dev/null 2>&1; }

ensure_bridge() {
  local br cidr
  br=$(node_bridge "$1"); cidr=$(node_cidr "$1")
  ip link show "$br" >/dev/null 2>&1 || ip link add "$br" type bridge
  ip -4 addr show dev "$br" | grep -q "inet $cidr" || ip addr add "$cidr" dev "$br"
  ip link set "$br" up
}

# dockerd starts its own containerd and reuses one that its pid file names if `kill -0` says it
# lives. A dockerd killed with SIGKILL takes its containerd along (parent-death signal), but the
# dead containerd can stay a zombie for a while here (PID 1 reaps late): `kill -0` still succeeds,
# and the next dockerd would wait for that zombie's socket until it times out. So a pid file that
# names no live containerd is removed before dockerd starts.
containerd_pidfile() { echo "$(node_dir "$1")/exec/containerd/containerd.pid"; }

forget_dead_containerd() {
  local pidfile
  pidfile=$(containerd_pidfile "$1")
  [ -e "$pidfile" ] || return 0
  alive "$pidfile" containerd || rm -f "$pidfile"
}

start_node() {
  local n=$1 dir sock i
  dir=$(node_dir "$n"); sock=$(node_sock "$n")
  if engine_answers "$n"; then log "node-$n: engine already up ($sock)"; return 0; fi
  ensure_bridge "$n"
  mkdir -p "$dir"
  if alive "$dir/docker.pid" dockerd; then
    log "node-$n: dockerd already starting (pid $(cat "$dir/docker.pid"))"
  else
    rm -f "$dir/docker.pid" "$dir/docker.sock"
    forget_dead_containerd "$n"
    log "node-$n: starting dockerd on $sock"
    # Its own engine ID, as a separate machine has: dockerd derives the ID from
    # /etc/docker/key.json, so it runs in a private mount namespace where /etc/docker is the
    # node's own folder (kept across restarts, like a machine's). `exec` keeps dockerd's pid the
    # one `unshare` started, so the pid file names dockerd itself.
    mkdir -p "$dir/etc-docker" /etc/docker
    nohup setsid unshare -m --propagation private sh -c \
      'mount --bind "$1/etc-docker" /etc/docker && shift && exec dockerd "$@"' sh "$dir" \
      -H "$sock" --data-root "$dir/data" --exec-root "$dir/exec" \
      --pidfile "$dir/docker.pid" -b "$(node_bridge "$n")" --iptables=false \
      >>"$dir/dockerd.log" 2>&1 </dev/null &
  fi
  for ((i = 0; i < 600; i++)); do engine_answers "$n" && break; sleep 0.1; done
  engine_answers "$n" || { tail -20 "$dir/dockerd.log" >&2; die "node-$n: dockerd did not start; see $dir/dockerd.log"; }
}

stop_node() {
  local n=$1 sig=${2:-KILL} dir
  dir=$(node_dir "$n")
  case $sig in KILL|TERM) ;; *) die "stop-node: signal must be KILL or TERM, not $sig" ;; esac
  if ! alive "$dir/docker.pid" dockerd; then
    log "node-$n: dockerd not running"
    return 0
  fi
  log "node-$n: SIG$sig to dockerd (pid $(cat "$dir/docker.pid"))"
  kill -s "$sig" "$(cat "$dir/docker.pid")" 2>/dev/null || true
  # TERM stops the engine's running containers first (up to its 15 s shutdown timeout).
  if ! wait_gone "$dir/docker.pid" dockerd 60; then
    log "node-$n: dockerd still running after SIG$sig; SIGKILL"
    kill -s KILL "$(cat "$dir/docker.pid")" 2>/dev/null || true
    wait_gone "$dir/docker.pid" dockerd 10 || die "node-$n: dockerd did not exit"
  fi
  # Its containerd goes with it; one still alive (not a zombie) after a while is killed too, so
  # that the next start begins from a dead engine as a crashed host's would.
  if ! wait_gone "$(containerd_pidfile "$n")" containerd 5; then
    kill -s KILL "$(cat "$(containerd_pidfile "$n")")" 2>/dev/null || true
    wait_gone "$(containerd_pidfile "$n")" containerd 5 || die "node-$n: containerd did not exit"
  fi
  ! engine_answers "$n" || die "node-$n: engine still answers after dockerd exited"
}

# ---- SSH ---------------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null; }

write_if_changed() {  # path; content on stdin. Returns 0 when the file changed.
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  chmod 600 "$tmp"; mv "$tmp" "$1"
}

ssh_files() {
  local n docker_bin home
  mkdir -p "$SSH_DIR" "$SSHD_RUN"; chmod 700 "$SSH_DIR"
  docker_bin=$(command -v docker)
  [ -s "$SSH_DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C aither-test-sshd -f "$SSH_DIR/host_ed25519"
  for n in "${NODES[@]}"; do
    [ -s "$SSH_DIR/node-$n" ] || ssh-keygen -q -t ed25519 -N '' -C "aither-node-$n" -f "$SSH_DIR/node-$n"
  done
  {
    for n in "${NODES[@]}"; do
      printf 'command="DOCKER_HOST=%s %s system dial-stdio",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding %s\n' \
        "$(node_sock "$n")" "$docker_bin" "$(cat "$SSH_DIR/node-$n.pub")"
    done
  } | write_if_changed "$SSH_DIR/authorized_keys" || true
  # The clients reach 127.0.0.1:2222 whichever node they name: one known host key, checked strictly.
  printf '[127.0.0.1]:%s %s\n' "$SSH_PORT" "$(cut -d' ' -f1,2 "$SSH_DIR/host_ed25519.pub")" \
    | write_if_changed "$SSH_DIR/known_hosts" || true
  # MaxStartups: the SDK opens one ssh connection per pooled HTTP connection; tests that run a
  # few clients at once must not meet sshd's default random drops (10:30:100).
  if cat <<EOF | write_if_changed "$SSH_DIR/sshd_config"; then SSHD_CONFIG_CHANGED=1; fi
# Written by scripts/test-hosts.sh: the test hosts' SSH server (loopback only).
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_ed25519
PidFile $SSHD_RUN/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
EOF
  # ~/.ssh/config of the user ssh reads it for (OpenSSH takes the passwd entry's home, not $HOME).
  home=$(getent passwd "$(id -u)" | cut -d: -f6)
  mkdir -p "$home/.ssh"; chmod 700 "$home/.ssh"
  touch "$home/.ssh/config"
  {
    echo "$MARK_BEGIN"
    for n in "${NODES[@]}"; do
      cat <<EOF
Host node-$n
  HostName 127.0.0.1
  Port $SSH_PORT
  User root
  IdentityFile $SSH_DIR/node-$n
  IdentitiesOnly yes
  UserKnownHostsFile $SSH_DIR/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
EOF
    done
    # The block goes first, so that its values win over a user's `Host *`; this line closes it
    # so that options the file had at its top stay global.
    echo "Host *"
    echo "$MARK_END"
    awk -v b="$MARK_BEGIN" -v e="$MARK_END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' \
      "$home/.ssh/config"
  } | write_if_changed "$home/.ssh/config" || true
}

SSHD_CONFIG_CHANGED=0

sshd_running() { alive "$SSHD_RUN/sshd.pid" sshd && port_open; }

start_sshd() {
  local i
  [ -f "$SSH_DIR/sshd_config" ] || ssh_files
  mkdir -p /run/sshd "$SSHD_RUN"
  if sshd_running; then
    if [ "$SSHD_CONFIG_CHANGED" = 1 ]; then
      log "sshd: config changed; restarting"
      stop_sshd
    else
      log "sshd: already up (127.0.0.1:$SSH_PORT)"
      return 0
    fi
  fi
  if alive "$SSHD_RUN/sshd.pid" sshd; then stop_sshd; fi
  port_open && die "port $SSH_PORT on 127.0.0.1 is taken by something else"
  /usr/sbin/sshd -t -f "$SSH_DIR/sshd_config" || die "sshd rejects $SSH_DIR/sshd_config"
  log "sshd: starting on 127.0.0.1:$SSH_PORT"
  /usr/sbin/sshd -f "$SSH_DIR/sshd_config" -E "$SSHD_RUN/sshd.log"  # forks into the background
  for ((i = 0; i < 100; i++)); do sshd_running && return 0; sleep 0.1; done
  tail -20 "$SSHD_RUN/sshd.log" >&2 || true
  die "sshd did not start; see $SSHD_RUN/sshd.log"
}

stop_sshd() {
  if ! alive "$SSHD_RUN/sshd.pid" sshd; then log "sshd: not running"; return 0; fi
  log "sshd: stopping (pid $(cat "$SSHD_RUN/sshd.pid"))"
  kill -s TERM "$(cat "$SSHD_RUN/sshd.pid")" 2>/dev/null || true
  wait_gone "$SSHD_RUN/sshd.pid" sshd 10 || die "sshd did not exit"
  rm -f "$SSHD_RUN/sshd.pid"
  local i
  for ((i = 0; i < 50; i++)); do port_open || return 0; sleep 0.1; done
  die "port $SSH_PORT still open after sshd exited"
}

# ---- images ------------------------------------------------------------------------------------
copy_images() {
  local n img src dst missing main
  # The main engine as scripts/test-env.sh chooses it: $DOCKER_HOST, else Docker's default when
  # it answers, else test-env.sh's private one.
  if [ -z "${DOCKER_HOST:-}" ] && ! docker info >/dev/null 2>&1; then
    export DOCKER_HOST=unix:///tmp/aither-dockerd/docker.sock
  fi
  main=${DOCKER_HOST:-the default engine}
  for img in "${IMAGES[@]}"; do
    docker image inspect "$img" >/dev/null 2>&1 \
      || die "the main engine ($main) lacks $img: run scripts/test-env.sh first"
  done
  for n in "${NODES[@]}"; do
    missing=()
    for img in "${IMAGES[@]}"; do
      src=$(docker image inspect --format '{{.Id}}' "$img")
      dst=$(docker -H "$(node_sock "$n")" image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
      [ "$src" = "$dst" ] || missing+=("$img")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      log "node-$n: loading ${missing[*]}"
      docker save "${missing[@]}" | docker -H "$(node_sock "$n")" load >/dev/null
    else
      log "node-$n: images up to date"
    fi
  done
}

print_env() {
  local n N
  for n in "${NODES[@]}"; do
    N=${n^^}
    echo "export AITHER_TEST_HOST_$N=ssh://root@node-$n:$SSH_PORT"
    echo "export AITHER_TEST_NODE_${N}_SOCK=$(node_sock "$n")"
  done
}

status() {
  local n
  for n in "${NODES[@]}"; do
    if engine_answers "$n"; then echo "node-$n engine: up"; else echo "node-$n engine: down"; fi
  done
  if sshd_running; then echo "sshd: up"; else echo "sshd: down"; fi
}

up() {
  local n started
  started=$(date +%s)
  [ "$(id -u)" = 0 ] || die "run as root (bridges, dockerd and sshd need it)"
  ensure_tools
  for n in "${NODES[@]}"; do start_node "$n"; done  # one after another (see ENVIRONMENT.md)
  ssh_files
  start_sshd
  copy_images
  for n in "${NODES[@]}"; do
    DOCKER_HOST=ssh://node-$n docker version --format '{{.Server.Version}}' >/dev/null \
      || die "node-$n does not answer over ssh (DOCKER_HOST=ssh://node-$n docker version)"
  done
  log "ready in $(($(date +%s) - started)) s: node-a, node-b over ssh on 127.0.0.1:$SSH_PORT"
  print_env
}

case ${1:-up} in
  up) up ;;
  env) print_env ;;
  start-node) check_node "${2:-}"; start_node "$2" ;;
  stop-node) check_node "${2:-}"; stop_node "$2" "${3:-KILL}" ;;
  start-sshd) start_sshd ;;
  stop-sshd) stop_sshd ;;
  status) status ;;
  *) die "usage: $0 [up|env|start-node a|b|stop-node a|b [KILL|TERM]|start-sshd|stop-sshd|status]" ;;
esac
