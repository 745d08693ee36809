#!/usr/bin/env bash
# Genuine Apache Kafka (4.x, KRaft, single combined broker+controller node) for dev, CI and tests.
#
#   bash deploy/kafka.sh fetch     # resolve the broker jars from Maven Central (idempotent)
#   bash deploy/kafka.sh up        # fetch + format storage once + start + wait until it answers
#   bash deploy/kafka.sh status    # exit 0 when running and answering, 1 otherwise
#   bash deploy/kafka.sh down      # SIGTERM, SIGKILL after ~20 s; exit 0 when not running
#   bash deploy/kafka.sh reset     # down + delete the data dir (TLS material and password are kept)
#   bash deploy/kafka.sh env       # shell exports describing how to connect (never the password)
#   bash deploy/kafka.sh selftest  # produce/consume over PLAINTEXT and SASL_SSL, wrong password must fail
#   bash deploy/kafka.sh logs [N]  # last N (40) lines of the broker log
#
# Environment:
#   KAFKA_PORT (9092)  KAFKA_CONTROLLER_PORT (9093)  KAFKA_SASL_SSL_PORT (9094)
#   KAFKA_SECURE (1)   0 = no SASL_SSL listener (the SCRAM user is still created)
#   KAFKA_DATA_DIR     (deploy/.work/kafka/data)
#   KAFKA_WORK_DIR     state dir of this instance (deploy/.work/kafka); a second, isolated broker
#                      needs its own KAFKA_WORK_DIR and ports. The jars always stay in deploy/.work/kafka/lib.
#   KAFKA_HEAP_OPTS    (-Xms256m -Xmx768m)
#   KAFKA_START_TIMEOUT seconds to wait for the broker to answer (90)
#   JAVA_HOME          java from there if set, else from PATH (Kafka 4 brokers need Java 17+)
#   KAFKA_M2_REPO      optional -Dmaven.repo.local for fetch
#   KAFKA_PROBE        auto (python confluent-kafka if importable, else Java) | java
#
# State: deploy/.work/kafka/{lib,data,tls,server.properties,kafka.log,kafka.pid}
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
POM="$ROOT/deploy/kafka/pom.xml"
LOG4J_CONF="$ROOT/deploy/kafka/log4j2.yaml"
WORK="$ROOT/deploy/.work/kafka"
LIB="$WORK/lib"                        # jars: shared by every state dir of this checkout
STAMP="$LIB/.fetch-stamp"
STATE="${KAFKA_WORK_DIR:-$WORK}"       # per-instance state (props, pid, log, tls, data)
TLS="$STATE/tls"
PROPS="$STATE/server.properties"
LOGFILE="$STATE/kafka.log"
PIDFILE="$STATE/kafka.pid"

HOST=127.0.0.1
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9094}"
SECURE="${KAFKA_SECURE:-1}"
DATA_DIR="${KAFKA_DATA_DIR:-$STATE/data}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
SCRAM_USER=ueba
SCRAM_MECH=SCRAM-SHA-512
CA_PEM="$TLS/ca.pem"
PASSWORD_FILE="$TLS/scram-password"
KEYSTORE="$TLS/broker.p12"
KEYSTORE_PASSWORD_FILE="$TLS/keystore-password"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Serialise state-changing commands of concurrent callers (several sessions and test runs share a
# checkout): fd 8 guards the jar fetch, fd 9 this instance's state. Both are closed for the broker
# itself so that it never holds a lock.
take_lock() { # FD FILE
  mkdir -p "$(dirname "$2")"
  command -v flock >/dev/null || return 0
  eval "exec $1>\"\$2\""
  flock -w 300 "$1" || die "could not lock $2 within 300 s"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- fetch
fetch() {
  local want have=""
  want="$(sha256 "$POM")"
  [[ -f "$STAMP" ]] && have="$(cat "$STAMP")"
  if [[ "$want" == "$have" ]] && compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka from Maven Central)"
  take_lock 8 "$WORK/.fetch.lock"
  # someone else may have finished the same fetch while we waited for the lock
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then exec 8>&-; return 0; fi
  log "fetching Apache Kafka jars from Maven Central into $LIB ..."
  rm -rf "$LIB"
  mkdir -p "$LIB"
  local t0=$SECONDS
  local -a mvn_args=(-q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies "-DoutputDirectory=$LIB")
  [[ -n "${KAFKA_M2_REPO:-}" ]] && mvn_args+=("-Dmaven.repo.local=$KAFKA_M2_REPO")
  mvn "${mvn_args[@]}" >&2
  compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null || die "fetch finished but no kafka_2.13 jar in $LIB"
  echo "$want" >"$STAMP"
  exec 8>&-
  local jars=("$LIB"/*.jar)
  log "fetched ${#jars[@]} jars in $((SECONDS - t0)) s"
}

kafka_version() {
  # Genuine version as logged by org.apache.kafka.common.utils.AppInfoParser at broker start,
  # falling back to the kafka-clients jar name.
  local v=""
  [[ -f "$LOGFILE" ]] && v="$(sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$LOGFILE" | tail -1)"
  if [[ -z "$v" ]]; then
    local j=("$LIB"/kafka-clients-*.jar)
    v="$(basename "${j[0]}" .jar)"; v="${v#kafka-clients-}"
  fi
  echo "$v"
}

check_java() {
  command -v "$JAVA" >/dev/null || die "java not found (set JAVA_HOME or put java 17+ on PATH)"
  local line major
  # sed reads everything (no SIGPIPE for java under pipefail, unlike head)
  line="$("$JAVA" -version 2>&1 | sed -n 1p)"
  major="$(sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' <<<"$line")"
  [[ "$major" == 1 ]] && major=8
  [[ -n "$major" && "$major" -ge 17 ]] || die "Kafka 4 brokers need Java 17+, got: $line"
}

# ---------------------------------------------------------------- python probe helpers
PY=""
find_python() {
  local c
  for c in "$ROOT/.venv/bin/python" python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import confluent_kafka' >/dev/null 2>&1; then
      PY="$c"; return 0
    fi
  done
  return 1
}

# One real Kafka protocol round trip (Metadata) against the PLAINTEXT listener.
# KAFKA_PROBE=java forces the Java probe (default: python confluent-kafka when available).
answering() {
  if [[ "${KAFKA_PROBE:-auto}" != java ]] && { [[ -n "$PY" ]] || find_python; }; then
    "$PY" - "$HOST:$PORT" <<'EOF' >/dev/null 2>&1
import sys
from confluent_kafka.admin import AdminClient
a = AdminClient({"bootstrap.servers": sys.argv[1], "socket.connection.setup.timeout.ms": 2000,
                 "log_level": 0})
md = a.list_topics(timeout=3)
sys.exit(0 if md.brokers else 1)
EOF
  else
    "$JAVA" -Xmx128m -cp "$LIB/*" -Dlog4j2.configurationFile="$LOG4J_CONF" -Dlog4j2.level=ERROR \
      org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$HOST:$PORT" >/dev/null 2>&1
  fi
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# ---------------------------------------------------------------- process helpers
is_our_broker() {
  local args
  kill -0 "$1" 2>/dev/null || return 1
  args="$(tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  grep -qxF kafka.Kafka <<<"$args" && grep -qxF "$PROPS" <<<"$args"
}

kafka_pid() {
  # prints the pid of the live kafka.Kafka process started with our server.properties:
  # from the pid file, else (pid file lost) by looking through /proc.
  local pid="" d
  [[ -f "$PIDFILE" ]] && pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && is_our_broker "$pid"; then echo "$pid"; return 0; fi
  while IFS= read -r d; do
    pid="${d#/proc/}"; pid="${pid%/cmdline}"
    if is_our_broker "$pid"; then
      echo "$pid" >"$PIDFILE"; echo "$pid"; return 0
    fi
  done < <(grep -slaF "$PROPS" /proc/[0-9]*/cmdline 2>/dev/null)
  return 1
}

# ---------------------------------------------------------------- secrets / TLS
random_secret() { openssl rand -hex 24; }

ensure_password() {
  mkdir -p "$TLS"; chmod 700 "$TLS"
  if [[ ! -s "$PASSWORD_FILE" ]]; then
    (umask 077; random_secret >"$PASSWORD_FILE")
  fi
  chmod 600 "$PASSWORD_FILE"
}

ensure_tls() {
  command -v openssl >/dev/null || die "openssl not found (needed to make the TLS certificates)"
  mkdir -p "$TLS"; chmod 700 "$TLS"
  local ca_key="$TLS/ca.key" key="$TLS/broker.key" crt="$TLS/broker.pem"
  if [[ ! -s "$CA_PEM" || ! -s "$ca_key" ]] || ! openssl x509 -in "$CA_PEM" -noout -checkend 2592000 >/dev/null 2>&1; then
    log "creating self-signed CA in $TLS"
    rm -f "$CA_PEM" "$ca_key" "$crt" "$key" "$KEYSTORE"
    (umask 077; openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -subj "/CN=ai-ueba dev Kafka CA" -keyout "$ca_key" -out "$CA_PEM" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      >/dev/null 2>&1) || die "openssl: CA creation failed"
    chmod 644 "$CA_PEM"
  fi
  if [[ ! -s "$KEYSTORE" || ! -s "$KEYSTORE_PASSWORD_FILE" || ! -s "$crt" ]] \
     || ! openssl x509 -in "$crt" -noout -checkend 2592000 >/dev/null 2>&1; then
    log "creating broker certificate for 127.0.0.1/localhost in $TLS"
    local ext="$TLS/broker.ext" csr="$TLS/broker.csr"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$ext"
    (umask 077
     openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" -keyout "$key" -out "$csr" >/dev/null 2>&1 \
     && openssl x509 -req -in "$csr" -CA "$CA_PEM" -CAkey "$ca_key" -CAcreateserial -sha256 -days 825 \
          -extfile "$ext" -out "$crt" >/dev/null 2>&1 \
     && random_secret >"$KEYSTORE_PASSWORD_FILE" \
     && openssl pkcs12 -export -name broker -in "$crt" -inkey "$key" -certfile "$CA_PEM" \
          -out "$KEYSTORE" -passout "file:$KEYSTORE_PASSWORD_FILE" >/dev/null 2>&1) \
      || die "openssl: broker certificate/keystore creation failed"
    rm -f "$csr" "$ext"
  fi
  chmod 600 "$KEYSTORE" "$KEYSTORE_PASSWORD_FILE" "$TLS/ca.key" "$TLS/broker.key"
}

# ---------------------------------------------------------------- config
write_props() {
  local listeners="PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT"
  local advertised="PLAINTEXT://$HOST:$PORT"
  local protomap="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ "$SECURE" == 1 ]]; then
    listeners+=",SASL_SSL://$HOST:$SASL_SSL_PORT"
    advertised+=",SASL_SSL://$HOST:$SASL_SSL_PORT"
    protomap+=",SASL_SSL:SASL_SSL"
  fi
  mkdir -p "$STATE"
  local tmp="$PROPS.tmp"
  (umask 077; cat >"$tmp" <<EOF
# Generated by deploy/kafka.sh on every 'up'; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protomap
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA_DIR

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Misconfigured apps must fail loudly: topics are pre-created by 'ueba topics create'.
auto.create.topics.enable=false
delete.topic.enable=true

# Small footprint for dev/CI.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
EOF
  if [[ "$SECURE" == 1 ]]; then cat >>"$tmp" <<EOF

# SASL_SSL listener: TLS (self-signed CA in $TLS) + SCRAM-SHA-512 (user $SCRAM_USER).
sasl.enabled.mechanisms=$SCRAM_MECH
listener.name.sasl_ssl.sasl.enabled.mechanisms=$SCRAM_MECH
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$KEYSTORE
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$KEYSTORE_PASSWORD_FILE")
listener.name.sasl_ssl.ssl.key.password=$(cat "$KEYSTORE_PASSWORD_FILE")
listener.name.sasl_ssl.ssl.client.auth=none
EOF
  fi)
  mv -f "$tmp" "$PROPS"
}

format_storage() {
  [[ -f "$DATA_DIR/meta.properties" ]] && return 0
  mkdir -p "$DATA_DIR"
  local cid
  while :; do
    cid="$(openssl rand 16 | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$cid" != -* ]] && break
  done
  log "formatting KRaft storage in $DATA_DIR (cluster id $cid, SCRAM user $SCRAM_USER)"
  local out
  # The password is passed on StorageTool's command line as Kafka's --add-scram requires; it is never echoed.
  if ! out="$("$JAVA" -Xmx256m -cp "$LIB/*" -Dlog4j2.configurationFile="$LOG4J_CONF" \
        kafka.tools.StorageTool format --config "$PROPS" --cluster-id "$cid" \
        --add-scram "$SCRAM_MECH=[name=$SCRAM_USER,password=$(cat "$PASSWORD_FILE")]" 2>&1)"; then
    echo "$out" | grep -v -i password >&2 || true
    die "storage format failed"
  fi
  sha256 "$PASSWORD_FILE" >"$DATA_DIR/.ueba-scram-stamp"
}

# If the password file changed after the storage was formatted (e.g. tls/ was deleted), upsert the
# SCRAM credential through the running broker so that the file on disk always is the truth.
sync_scram() {
  local want
  want="$(sha256 "$PASSWORD_FILE")"
  [[ "$(cat "$DATA_DIR/.ueba-scram-stamp" 2>/dev/null)" == "$want" ]] && return 0
  log "updating SCRAM credential of user $SCRAM_USER"
  if [[ -n "$PY" ]] || find_python; then
    "$PY" - "$HOST:$PORT" "$SCRAM_USER" "$PASSWORD_FILE" <<'EOF' || die "SCRAM credential update failed"
import sys
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)
bootstrap, user, pwfile = sys.argv[1:4]
pw = open(pwfile).read().strip().encode()
a = AdminClient({"bootstrap.servers": bootstrap})
up = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), pw)
for f in a.alter_user_scram_credentials([up]).values():
    f.result(timeout=30)
EOF
  else
    "$JAVA" -Xmx128m -cp "$LIB/*" -Dlog4j2.configurationFile="$LOG4J_CONF" kafka.admin.ConfigCommand \
      --bootstrap-server "$HOST:$PORT" --alter --entity-type users --entity-name "$SCRAM_USER" \
      --add-config "$SCRAM_MECH=[iterations=8192,password=$(cat "$PASSWORD_FILE")]" >/dev/null 2>&1 \
      || die "SCRAM credential update failed"
  fi
  echo "$want" >"$DATA_DIR/.ueba-scram-stamp"
}

up_line() {
  local extra=""
  [[ "$SECURE" == 1 ]] && extra=" (SASL_SSL/$SCRAM_MECH on $HOST:$SASL_SSL_PORT, user $SCRAM_USER, CA $CA_PEM)"
  echo "kafka $(kafka_version) up on $HOST:$PORT$extra"
}

# ---------------------------------------------------------------- commands
cmd_up() {
  local pid
  check_java
  fetch
  take_lock 9 "$STATE/.lock"
  if pid="$(kafka_pid)"; then
    if answering; then
      echo "already running (pid $pid)"; up_line; return 0
    fi
    log "pid $pid is alive but not answering yet; waiting"
  else
    rm -f "$PIDFILE"
    port_open "$PORT" && die "port $HOST:$PORT is already in use by another process (set KAFKA_PORT)"
    port_open "$CONTROLLER_PORT" && die "port $HOST:$CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"
    [[ "$SECURE" == 1 ]] && port_open "$SASL_SSL_PORT" && die "port $HOST:$SASL_SSL_PORT is already in use (set KAFKA_SASL_SSL_PORT)"
    ensure_password
    [[ "$SECURE" == 1 ]] && ensure_tls
    write_props
    format_storage
    [[ -f "$LOGFILE" ]] && mv -f "$LOGFILE" "$LOGFILE.1"
    local -a heap cmd
    read -r -a heap <<<"$HEAP_OPTS"
    cmd=("$JAVA" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$STATE"
      -cp "$LIB/*" kafka.Kafka "$PROPS")
    if command -v setsid >/dev/null; then
      nohup setsid "${cmd[@]}" >"$LOGFILE" 2>&1 </dev/null 8>&- 9>&- &
    else
      nohup "${cmd[@]}" >"$LOGFILE" 2>&1 </dev/null 8>&- 9>&- &
    fi
    pid=$!
    echo "$pid" >"$PIDFILE"
  fi
  local t0=$SECONDS
  while ! answering; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker exited during startup; last 40 lines of $LOGFILE:"
      tail -n 40 "$LOGFILE" >&2 || true
      [[ "$(cat "$PIDFILE" 2>/dev/null)" == "$pid" ]] && rm -f "$PIDFILE"
      exit 1
    fi
    if (( SECONDS - t0 >= START_TIMEOUT )); then
      log "broker did not answer on $HOST:$PORT within ${START_TIMEOUT}s; last 40 lines of $LOGFILE:"
      tail -n 40 "$LOGFILE" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "answering after $((SECONDS - t0)) s"
  sync_scram
  up_line
}

cmd_down() {
  take_lock 9 "$STATE/.lock"
  local pid
  if ! pid="$(kafka_pid)"; then
    rm -f "$PIDFILE"; echo "kafka not running"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 80; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after 20 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$PIDFILE"
  echo "kafka stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(kafka_pid)"; then
    if answering; then
      local rss
      rss="$(awk '/VmRSS/{print int($2/1024)}' "/proc/$pid/status" 2>/dev/null || echo '?')"
      echo "kafka running (pid $pid, RSS ${rss} MiB)"; up_line; return 0
    fi
    echo "kafka process $pid alive but not answering on $HOST:$PORT"; return 1
  fi
  echo "kafka not running"; return 1
}

cmd_reset() {
  cmd_down
  rm -rf "$DATA_DIR"
  echo "kafka data removed ($DATA_DIR)"
}

cmd_env() {
  cat <<EOF
export KAFKA_BOOTSTRAP_SERVERS=$HOST:$PORT
export KAFKA_SASL_SSL_BOOTSTRAP_SERVERS=$HOST:$SASL_SSL_PORT
export KAFKA_SASL_MECHANISM=$SCRAM_MECH
export KAFKA_SASL_USERNAME=$SCRAM_USER
export KAFKA_SASL_PASSWORD_FILE=$PASSWORD_FILE
export KAFKA_SSL_CA_LOCATION=$CA_PEM
# streams/settings.py over SASL_SSL: UEBA_KAFKA__BOOTSTRAP_SERVERS=$HOST:$SASL_SSL_PORT UEBA_KAFKA__SECURITY_PROTOCOL=SASL_SSL
#   UEBA_KAFKA__SASL_MECHANISM=$SCRAM_MECH UEBA_KAFKA__SASL_USERNAME=$SCRAM_USER UEBA_KAFKA__SSL_CAFILE=$CA_PEM
#   UEBA_KAFKA__SASL_PASSWORD="\$(cat $PASSWORD_FILE)"
EOF
}

cmd_selftest() {
  find_python || die "selftest needs python with confluent_kafka (.venv or python3)"
  cmd_status >/dev/null || die "kafka is not running/answering: run 'bash deploy/kafka.sh up' first"
  local secure_args=()
  [[ "$SECURE" == 1 ]] && secure_args=("$HOST:$SASL_SSL_PORT" "$CA_PEM" "$SCRAM_USER" "$PASSWORD_FILE")
  "$PY" - "$HOST:$PORT" "${secure_args[@]}" <<'EOF'
import sys, time, uuid
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

plain = sys.argv[1]
topic = "_ueba_selftest"
admin = AdminClient({"bootstrap.servers": plain})
if topic not in admin.list_topics(timeout=10).topics:
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        try:
            f.result(30)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise

def roundtrip(name, conf):
    token = f"{name}-{uuid.uuid4()}".encode()
    p = Producer({**conf, "acks": "all"})
    p.produce(topic, token)
    left = p.flush(20)
    assert left == 0, f"{name}: produce not delivered"
    c = Consumer({**conf, "group.id": f"selftest-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            if m.value() == token:
                print(f"selftest {name}: produce+consume OK")
                return
    finally:
        c.close()
    raise SystemExit(f"selftest {name}: message not consumed within 30 s")

roundtrip("PLAINTEXT", {"bootstrap.servers": plain})

if len(sys.argv) > 2:
    bootstrap, ca, user, pwfile = sys.argv[2:6]
    pw = open(pwfile).read().strip()
    sec = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "ssl.ca.location": ca,
           "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": pw}
    roundtrip("SASL_SSL", sec)
    def first_error(conf):
        errors = []
        p = Producer({**conf, "error_cb": errors.append, "log_level": 0})
        deadline = time.time() + 15
        while not errors and time.time() < deadline:
            p.poll(0.2)
        return errors[0] if errors else None

    # A wrong password must be refused by the broker (SASL authentication failure).
    e = first_error({**sec, "sasl.password": pw + "-wrong"})
    if e is None or e.code() != KafkaError._AUTHENTICATION:
        raise SystemExit(f"selftest SASL_SSL: wrong password was not refused: {e}")
    print("selftest SASL_SSL: wrong password refused OK")
    # TLS without our CA must be refused too (broker certificate verification).
    e = first_error({k: v for k, v in sec.items() if k != "ssl.ca.location"})
    if e is None or not (e.code() == KafkaError._SSL or "certificate verify failed" in e.str()):
        raise SystemExit(f"selftest SASL_SSL: untrusted certificate was not refused: {e}")
    print("selftest SASL_SSL: untrusted CA refused OK")
print("selftest: all checks passed")
EOF
}

case "${1:-}" in
  fetch) check_java; fetch; echo "kafka $(kafka_version) jars in $LIB" ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  env) cmd_env ;;
  selftest) cmd_selftest ;;
  logs) tail -n "${2:-40}" "$LOGFILE" ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
     [[ -n "${1:-}" ]] && exit 2; exit 0 ;;
esac
