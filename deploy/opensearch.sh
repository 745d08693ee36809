#!/usr/bin/env bash
# Genuine OpenSearch 2.19 (jars from Maven Central, our own launcher) for dev, CI and tests.
#
#   bash deploy/opensearch.sh fetch    build the launcher + copy all jars to deploy/.work/opensearch/lib
#                                      (skipped when the pom/sources stamp is unchanged)
#   bash deploy/opensearch.sh up       fetch, start in the background, wait for HTTP + yellow/green health
#   bash deploy/opensearch.sh down     SIGTERM, wait, SIGKILL after OS_STOP_TIMEOUT (20 s)
#   bash deploy/opensearch.sh status   exit 0 and print the banner when up, exit 3 when not running
#   bash deploy/opensearch.sh reset    down + wipe data/logs/home (keeps lib/)
#
# Environment: OS_PORT (9200), OS_TRANSPORT_PORT (9300), OS_UP_TIMEOUT (120), OS_STOP_TIMEOUT (20),
# OS_WORK (runtime state, deploy/.work/opensearch) and OS_LIB (jars, $OS_WORK/lib): with its own
# OS_WORK and ports a second, private node runs beside the shared one (tests that stop their engine),
# OS_JAVA_OPTS (appended to config/jvm.options), OS_MVN_ARGS (extra maven args, e.g.
# -Dmaven.repo.local=/tmp/m2 or -o), JAVA_HOME (else java from PATH), MVN (mvn).
# Runtime state: deploy/.work/opensearch/{lib,home,data,logs,opensearch.log,opensearch.pid}.
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJ="$DEPLOY/opensearch"
WORK="${OS_WORK:-$DEPLOY/.work/opensearch}"
LIB="${OS_LIB:-$WORK/lib}"
STAMP="$LIB.stamp"
LOG="$WORK/opensearch.log"
PIDFILE="$WORK/opensearch.pid"
PORT="${OS_PORT:-9200}"
TPORT="${OS_TRANSPORT_PORT:-9300}"
UP_TIMEOUT="${OS_UP_TIMEOUT:-120}"
STOP_TIMEOUT="${OS_STOP_TIMEOUT:-20}"
MAIN_CLASS="io.aiueba.search.UebaOpenSearch"
URL="http://127.0.0.1:$PORT"

if [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA="java"; fi
MVN="${MVN:-mvn}"

log() { echo "opensearch.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Hash of everything that determines lib/: the pom and the launcher sources.
src_hash() {
  (cd "$PROJ" && find pom.xml src -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

cmd_fetch() {
  mkdir -p "$WORK"
  local want have=""
  want="$(src_hash)"
  [[ -f "$STAMP" ]] && have="$(cat "$STAMP")"
  if [[ "$want" == "$have" && -d "$LIB" ]] && compgen -G "$LIB/opensearch-2.*.jar" >/dev/null; then
    log "lib up to date ($LIB)"
    return 0
  fi
  command -v "$MVN" >/dev/null || die "maven ($MVN) not found"
  log "building launcher + fetching OpenSearch jars from Maven Central ..."
  local tmp="$LIB.tmp.$$"
  rm -rf "$tmp"
  # shellcheck disable=SC2086
  if ! "$MVN" -q -B -Dstyle.color=never -f "$PROJ/pom.xml" ${OS_MVN_ARGS:-} package dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$WORK/fetch.log" 2>&1; then
    tail -n 40 "$WORK/fetch.log" >&2
    rm -rf "$tmp"
    die "maven build failed (full output: $WORK/fetch.log)"
  fi
  cp "$PROJ/target/ueba-opensearch-launcher.jar" "$tmp/"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  echo "$want" >"$STAMP"
  log "lib ready: $(find "$LIB" -name '*.jar' | wc -l) jars in $LIB"
}

# Prints the pid when our node process is alive (pid file + cmdline check against pid reuse).
running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  local cmdline
  # read first, then match: `tr | grep -q` can SIGPIPE tr and fail under pipefail
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *"$MAIN_CLASS"* ]] || return 1
  echo "$pid"
}

# One line from the real GET / response.
banner() {
  local body
  body="$(curl -fsS --max-time 5 "$URL/")" || return 1
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
v = d["version"]
print("opensearch %s (%s) up on %s" % (v["number"], v.get("distribution", "?"), sys.argv[2]))
' "$body" "$URL"
}

health_ok() {
  curl -fsS --max-time 5 "$URL/_cluster/health?wait_for_status=yellow&timeout=2s" 2>/dev/null \
    | grep -Eq '"status":"(yellow|green)"'
}

cmd_up() {
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid)"
    banner || log "(pid $pid alive but $URL does not answer yet)"
    return 0
  fi
  if curl -fsS --max-time 2 "$URL/" >/dev/null 2>&1; then
    die "something else already answers on $URL (not our pid file); set OS_PORT or stop it"
  fi
  cmd_fetch
  mkdir -p "$WORK/home" "$WORK/data" "$WORK/logs" "$WORK/tmp"
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"

  local -a jvm_opts=()
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%%#*}"
    line="$(echo "$line" | xargs)"
    [[ -n "$line" ]] && jvm_opts+=("$line")
  done <"$PROJ/config/jvm.options"
  jvm_opts+=(
    "-Djava.io.tmpdir=$WORK/tmp"
    "-XX:HeapDumpPath=$WORK/logs"
    "-XX:ErrorFile=$WORK/logs/hs_err_pid%p.log"
    "-Dlog4j2.configurationFile=$PROJ/config/log4j2.properties"
  )
  # shellcheck disable=SC2206
  [[ -n "${OS_JAVA_OPTS:-}" ]] && jvm_opts+=(${OS_JAVA_OPTS})

  local t0=$SECONDS
  # setsid: own session, so the node survives the calling shell / terminal; cwd = WORK (hs_err, etc.).
  (cd "$WORK" && exec setsid "$JAVA" "${jvm_opts[@]}" -cp "$LIB/*" "$MAIN_CLASS" \
      "-Epath.home=$WORK/home" "-Epath.data=$WORK/data" "-Epath.logs=$WORK/logs" \
      "-Ehttp.port=$PORT" "-Etransport.port=$TPORT" \
      </dev/null >>"$LOG" 2>&1) &
  pid=$!
  echo "$pid" >"$PIDFILE"

  while true; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "OpenSearch exited during startup: $(grep -m1 -E '^\[[^]]*\]\[(ERROR|FATAL)' "$LOG" | cut -c1-300 || true)"
      log "last 40 log lines ($LOG):"
      tail -n 40 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if health_ok; then
      banner
      log "ready in $((SECONDS - t0)) s (pid $pid, log $LOG)"
      return 0
    fi
    if (( SECONDS - t0 >= UP_TIMEOUT )); then
      log "not up after ${UP_TIMEOUT} s; last 40 log lines ($LOG):"
      tail -n 40 "$LOG" >&2 || true
      log "(process $pid left running; 'bash deploy/opensearch.sh down' stops it)"
      exit 1
    fi
    sleep 1
  done
}

cmd_down() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$PIDFILE"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still alive after ${STOP_TIMEOUT} s: SIGKILL $pid"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  # Only our pid file: an `up` that ran while this node shut down has written its own.
  if [[ "$(cat "$PIDFILE" 2>/dev/null || true)" == "$pid" ]]; then rm -f "$PIDFILE"; fi
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if banner && health_ok; then
      log "pid $pid"
      return 0
    fi
    log "pid $pid alive but not healthy on $URL"
    return 1
  fi
  log "not running"
  return 3
}

cmd_reset() {
  cmd_down
  rm -rf "${WORK:?}/home" "${WORK:?}/data" "${WORK:?}/logs" "${WORK:?}/tmp" "$LOG" "$LOG.1"
  log "data, logs and home wiped (lib kept)"
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  *) echo "usage: $0 fetch|up|down|status|reset" >&2; exit 2 ;;
esac
