#!/usr/bin/env bash
# One command for the local services used by development, the demo and the tests:
#   deploy/local.sh up|down|status|fetch
# Genuine Apache Kafka (deploy/kafka.sh) and genuine OpenSearch (deploy/opensearch.sh),
# both assembled from Maven Central and bound to 127.0.0.1. Set WITH_ES_EMULATOR=1 to
# also start the Elasticsearch API emulator (deploy/es-emulator.sh).
set -euo pipefail
DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-}"
case "$cmd" in
  fetch)
    bash "$DEPLOY/kafka.sh" fetch
    bash "$DEPLOY/opensearch.sh" fetch
    ;;
  up)
    # Fetch both first (network + Maven), then start both; OpenSearch starts in
    # the background while Kafka formats and comes up.
    bash "$DEPLOY/kafka.sh" fetch
    bash "$DEPLOY/opensearch.sh" fetch
    bash "$DEPLOY/kafka.sh" up
    bash "$DEPLOY/opensearch.sh" up
    if [ "${WITH_ES_EMULATOR:-0}" = "1" ]; then bash "$DEPLOY/es-emulator.sh" up; fi
    ;;
  down)
    rc=0
    bash "$DEPLOY/es-emulator.sh" down >/dev/null 2>&1 || true
    bash "$DEPLOY/opensearch.sh" down || rc=$?
    bash "$DEPLOY/kafka.sh" down || rc=$?
    exit $rc
    ;;
  status)
    rc=0
    bash "$DEPLOY/kafka.sh" status || rc=1
    bash "$DEPLOY/opensearch.sh" status || rc=1
    bash "$DEPLOY/es-emulator.sh" status || true
    exit $rc
    ;;
  *) echo "usage: $0 up|down|status|fetch" >&2; exit 2 ;;
esac
