# Sourced by scripts/quickstart.sh: one progress line per stage on the terminal, everything the
# stage's commands print (cmake, compilers, pip, docker build) in one log file, named on failure.
#   STAGE_LOG=FILE; stage 1 4 "what it does (expected time)"; logged COMMAND...
: "${STAGE_LOG:?set STAGE_LOG to the log file first}"
STAGE_WHAT=""

stage() {  # stage N TOTAL "what (expected time)"
  STAGE_WHAT=${3%% (*}
  printf '[%s/%s] %s\n' "$1" "$2" "$3"
  printf '\n==== [%s/%s] %s (%s)\n' "$1" "$2" "$3" "$(date -u +%H:%M:%S)" >>"$STAGE_LOG"
}

logged() {  # logged COMMAND...: its output goes to the log; on failure, say so and stop
  local rc=0
  "$@" >>"$STAGE_LOG" 2>&1 </dev/null || rc=$?
  [ "$rc" = 0 ] || stage_failed "$rc"
}

stage_failed() {
  printf 'error: %s failed (exit %s); the whole log is %s, its last lines:\n' \
    "$STAGE_WHAT" "$1" "$STAGE_LOG" >&2
  tail -n 12 "$STAGE_LOG" | sed 's/^/  /' >&2
  exit "$1"
}
